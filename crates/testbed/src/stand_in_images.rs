//! Local stand-ins for the official `flink` and `zookeeper` images, which these machines cannot
//! pull: a Debian root file system made with `debootstrap` (Java 17 from Debian) imported into
//! podman, then Flink's distribution from PyPI (as [`Flink::install`] unpacks it) and ZooKeeper's
//! jars from PyPI's pyspark archive laid out as the official images lay them out. Every
//! difference from the official images is listed in `stand_in/README.md` next to this file.
//!
//! Each image is tagged with a hash of what goes into it; an image that exists under its tag is
//! not built again, and the root file system is cached as a tar under [`cache_dir`].

use crate::flink::{Flink, cache_dir, install_lock};
use crate::image::{Podman, run_bounded};
use crate::process::Echo;
use crate::zookeeper::Server;
use crate::zookeeper_versions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Debian's release the root file system is made from (the machines' own).
pub const DEBIAN_SUITE: &str = "bookworm";
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
/// What the official images' base (eclipse-temurin:17-jre) gives Flink and ZooKeeper: a Java 17
/// runtime; netbase for /etc/services and /etc/protocols, which Java's networking reads.
pub const DEBIAN_PACKAGES: [&str; 2] = ["openjdk-17-jre-headless", "netbase"];
/// Where Debian's Java 17 lives (the official images: /opt/java/openjdk).
pub const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

/// The Flink release and ZooKeeper release the stand-ins hold.
pub const FLINK_VERSION: &str = crate::flink::DEFAULT_VERSION;
pub const ZOOKEEPER_VERSION: &str = "3.9.5";

/// The official image's `flink` user and group, and where Flink lives.
pub const FLINK_UID: u32 = 9999;
pub const FLINK_HOME: &str = "/opt/flink";
/// The official image's `zookeeper` user and group.
pub const ZOOKEEPER_UID: u32 = 1000;

/// The parts of Flink's distribution that the official image's /opt/flink holds (PyPI's
/// distribution also holds pyflink's Python modules, which the official image does not).
const FLINK_DIST_PARTS: [&str; 7] = [
    "bin", "conf", "lib", "opt", "plugins", "examples", "licenses",
];

const ZK_SERVER_SH: &str = include_str!("stand_in/zkServer.sh");

/// The built images' tags.
#[derive(Debug, Clone)]
pub struct StandInImages {
    pub flink: String,
    pub zookeeper: String,
    /// What this call built (empty when every image was cached).
    pub built: Vec<String>,
}

/// Builds whatever of the base, Flink and ZooKeeper images is missing; a cold build (debootstrap,
/// import, both images) took about 2.7 minutes here (docs/evidence/containers.md).
pub fn build(podman: &Podman, echo: &Echo) -> io::Result<StandInImages> {
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache)?;
    let _lock = install_lock(&cache, "stand-in-images", "the stand-in images")?;
    let mut built = Vec::new();

    let base = base_tag();
    if !image_exists(podman, &base)? {
        let tar = root_file_system(&cache, echo)?;
        let mut import = podman.command();
        import.arg("import").arg(&tar).arg(&base);
        run_bounded(
            "podman import",
            import,
            echo.clone(),
            Duration::from_secs(600),
        )?;
        built.push(base.clone());
    }

    let flink = Flink::install(FLINK_VERSION)?;
    let flink_containerfile = flink_containerfile(&base);
    let flink_tag = format!(
        "localhost/flink-ha-stand-in/flink:{FLINK_VERSION}-java17-{:016x}",
        content_hash(&[flink_containerfile.as_bytes(), &listing(flink.home())?])
    );
    if !image_exists(podman, &flink_tag)? {
        let context = build_context(&cache, "flink")?;
        let dist = context.path().join("flink");
        std::fs::create_dir_all(&dist)?;
        for part in FLINK_DIST_PARTS {
            link_tree(&flink.home().join(part), &dist.join(part))?;
        }
        std::fs::create_dir_all(dist.join("log"))?;
        build_image(
            podman,
            context.path(),
            &flink_containerfile,
            &flink_tag,
            echo,
        )?;
        built.push(flink_tag.clone());
    }

    let jars = zookeeper_jars()?;
    let zookeeper_containerfile = zookeeper_containerfile(&base);
    let zookeeper_tag = format!(
        "localhost/flink-ha-stand-in/zookeeper:{ZOOKEEPER_VERSION}-{:016x}",
        content_hash(&[
            zookeeper_containerfile.as_bytes(),
            ZK_SERVER_SH.as_bytes(),
            &listing(&jars)?
        ])
    );
    if !image_exists(podman, &zookeeper_tag)? {
        let context = build_context(&cache, "zookeeper")?;
        let home = context.path().join("zookeeper");
        link_tree(&jars, &home.join("lib"))?;
        let bin = home.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::write(bin.join("zkServer.sh"), ZK_SERVER_SH)?;
        set_mode(&bin.join("zkServer.sh"), 0o755)?;
        build_image(
            podman,
            context.path(),
            &zookeeper_containerfile,
            &zookeeper_tag,
            echo,
        )?;
        built.push(zookeeper_tag.clone());
    }
    Ok(StandInImages {
        flink: flink_tag,
        zookeeper: zookeeper_tag,
        built,
    })
}

/// The base image's tag: what debootstrap is asked for decides it.
pub fn base_tag() -> String {
    format!(
        "localhost/flink-ha-stand-in/debian:{DEBIAN_SUITE}-{:016x}",
        content_hash(&[root_file_system_key().as_bytes()])
    )
}

fn root_file_system_key() -> String {
    format!(
        "debootstrap --variant=minbase --include={} {DEBIAN_SUITE} {DEBIAN_MIRROR}",
        DEBIAN_PACKAGES.join(",")
    )
}

/// The Debian root file system as a tar in the cache, made once.
fn root_file_system(cache: &Path, echo: &Echo) -> io::Result<PathBuf> {
    let key = content_hash(&[root_file_system_key().as_bytes()]);
    let tar = cache.join(format!("debian-{DEBIAN_SUITE}-rootfs-{key:016x}.tar"));
    if tar.exists() {
        return Ok(tar);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/usr/sbin/debootstrap is missing: install Debian's debootstrap \
             (apt-get install debootstrap), or run `cargo xtask test`, which does",
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("debootstrap-")
        .tempdir_in(cache)?;
    let target = work.path().join("rootfs");
    let mut debootstrap = Command::new("/usr/sbin/debootstrap");
    debootstrap
        .arg("--variant=minbase")
        .arg(format!("--include={}", DEBIAN_PACKAGES.join(",")))
        .arg(DEBIAN_SUITE)
        .arg(&target)
        .arg(DEBIAN_MIRROR);
    run_bounded(
        "debootstrap",
        debootstrap,
        echo.clone(),
        Duration::from_secs(900),
    )?;
    // Package lists and downloaded .debs are not part of a base image.
    for cached in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = target.join(cached);
        if dir.exists() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_file() {
                    std::fs::remove_file(path)?;
                }
            }
        }
    }
    let partial = work.path().join("rootfs.tar");
    let mut pack = Command::new("tar");
    pack.arg("--create")
        .arg("--file")
        .arg(&partial)
        .arg("--numeric-owner")
        .arg("--directory")
        .arg(&target)
        .arg(".");
    run_bounded("tar", pack, echo.clone(), Duration::from_secs(600))?;
    std::fs::rename(&partial, &tar)?;
    Ok(tar)
}

/// The official flink image's user, paths and environment (apache/flink-docker's Dockerfile
/// template); its entrypoint is left out because the chart replaces it (see stand_in/README.md).
pub fn flink_containerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV JAVA_HOME={JAVA_HOME}\n\
         ENV FLINK_HOME={FLINK_HOME}\n\
         ENV PATH={FLINK_HOME}/bin:{JAVA_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         RUN groupadd --system --gid={FLINK_UID} flink && \
             useradd --system --home-dir {FLINK_HOME} --uid={FLINK_UID} --gid=flink flink\n\
         COPY --chown={FLINK_UID}:{FLINK_UID} flink/ {FLINK_HOME}/\n\
         WORKDIR {FLINK_HOME}\n\
         EXPOSE 6123 8081\n\
         CMD [\"help\"]\n"
    )
}

/// The official zookeeper image's user, folders and environment (its Dockerfile); its
/// entrypoint is left out because the chart replaces it (see stand_in/README.md).
pub fn zookeeper_containerfile(base: &str) -> String {
    let distro = format!("/apache-zookeeper-{ZOOKEEPER_VERSION}-bin");
    format!(
        "FROM {base}\n\
         ENV JAVA_HOME={JAVA_HOME}\n\
         ENV ZOO_CONF_DIR=/conf ZOO_DATA_DIR=/data ZOO_DATA_LOG_DIR=/datalog ZOO_LOG_DIR=/logs \
             ZOO_TICK_TIME=2000 ZOO_INIT_LIMIT=5 ZOO_SYNC_LIMIT=2 ZOO_AUTOPURGE_PURGEINTERVAL=0 \
             ZOO_AUTOPURGE_SNAPRETAINCOUNT=3 ZOO_MAX_CLIENT_CNXNS=60 ZOO_STANDALONE_ENABLED=true \
             ZOO_ADMINSERVER_ENABLED=true\n\
         RUN groupadd -r zookeeper --gid={ZOOKEEPER_UID} && \
             useradd -r -g zookeeper --home-dir=/data --uid={ZOOKEEPER_UID} zookeeper && \
             mkdir -p /data /datalog /conf /logs && \
             chown zookeeper:zookeeper /data /datalog /conf /logs\n\
         COPY zookeeper/ {distro}/\n\
         WORKDIR {distro}\n\
         VOLUME [\"/data\", \"/datalog\", \"/logs\"]\n\
         EXPOSE 2181 2888 3888 8080\n\
         ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{JAVA_HOME}/bin:{distro}/bin \
             ZOOCFGDIR=/conf\n\
         CMD [\"zkServer.sh\", \"start-foreground\"]\n"
    )
}

/// The folder of ZooKeeper's jars (and their dependencies) the test bed installs.
fn zookeeper_jars() -> io::Result<PathBuf> {
    let source = zookeeper_versions::source(ZOOKEEPER_VERSION)
        .ok_or_else(|| io::Error::other(format!("no source for ZooKeeper {ZOOKEEPER_VERSION}")))?;
    match source.install()? {
        Server::Jars(jars) => {
            let pattern = jars.class_path.first().cloned().unwrap_or_default();
            Ok(PathBuf::from(pattern.trim_end_matches("/*")))
        }
        Server::Debian => Err(io::Error::other(format!(
            "ZooKeeper {ZOOKEEPER_VERSION} comes from Debian here, not from jars"
        ))),
    }
}

/// A build context folder in the cache (same file system as the distributions, so they can be
/// hard-linked instead of copied).
fn build_context(cache: &Path, name: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("stand-in-{name}-"))
        .tempdir_in(cache)
}

fn build_image(
    podman: &Podman,
    context: &Path,
    containerfile: &str,
    tag: &str,
    echo: &Echo,
) -> io::Result<()> {
    let file = context.join("Containerfile");
    std::fs::write(&file, containerfile)?;
    let mut build = podman.command();
    build
        .arg("build")
        .arg("--file")
        .arg(&file)
        .args(["--tag", tag])
        .arg("--pull=never")
        .arg("--network=none")
        .arg(context);
    run_bounded(
        "podman build",
        build,
        echo.clone(),
        Duration::from_secs(900),
    )?;
    Ok(())
}

pub fn image_exists(podman: &Podman, tag: &str) -> io::Result<bool> {
    Ok(podman
        .command()
        .args(["image", "exists", tag])
        .status()?
        .success())
}

/// Hard-links the tree at `from` to `to` (`cp -al`), copying where links cannot be made.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let status = Command::new("cp").arg("-al").arg(from).arg(to).status()?;
    if status.success() {
        return Ok(());
    }
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "could not copy {} to {}",
            from.display(),
            to.display()
        )))
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Every file under `dir` as "relative path, size" lines, sorted: what the image copies.
fn listing(dir: &Path) -> io::Result<Vec<u8>> {
    let mut lines = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let path = entry.path();
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                lines.push(format!("{} {}\n", relative.display(), metadata.len()));
            }
        }
    }
    lines.sort();
    Ok(lines.concat().into_bytes())
}

/// FNV-1a (64 bit) over the parts, each followed by a zero byte: stable across Rust releases,
/// unlike `DefaultHasher`, so a cached image keeps its tag.
pub fn content_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_separates_parts_and_is_stable() {
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
        // FNV-1a of the single byte 0 (the separator of one empty part).
        assert_eq!(content_hash(&[b""]), 0xaf63_bd4c_8601_b7df);
    }

    #[test]
    fn the_stand_ins_run_as_the_official_users() {
        let flink = flink_containerfile("base");
        assert!(flink.contains("--uid=9999 --gid=flink flink"), "{flink}");
        let zookeeper = zookeeper_containerfile("base");
        assert!(zookeeper.contains("--uid=1000 zookeeper"), "{zookeeper}");
        assert!(zookeeper.contains("ZOOCFGDIR=/conf"), "{zookeeper}");
    }
}
