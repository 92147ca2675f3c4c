//! The container image, built on this machine: zk-wait and port-sync as static binaries, then
//! the final stage of docker/Dockerfile (`FROM scratch`) built with Debian's podman from them.
//! No base image can be pulled here, so the Dockerfile's Rust builder stage is replaced by the
//! same cargo build run on the machine; the final stage is taken from the Dockerfile itself,
//! so the image built here is the one users build. `cargo xtask image` and the tests use this.
//!
//! Static binaries come from glibc with `+crt-static`: since glibc 2.34 its `files` and `dns`
//! lookups are built in, so a static binary resolves names through /etc/hosts and
//! /etc/resolv.conf without NSS modules (tests/image.rs proves it against a real DNS server).

use crate::process::{Echo, Process};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// The tag `cargo xtask image` and the tests give the image.
pub const DEV_TAG: &str = "localhost/flink-ha-sidecars:dev";

/// The binaries the image holds, installed in /usr/local/bin.
pub const BINARIES: [&str; 2] = ["zk-wait", "port-sync"];

/// Where the image keeps the binaries.
pub const BIN_DIR: &str = "/usr/local/bin";

/// The system trust store port-sync's https JobManager client reads (Debian's and the builder
/// image's path, one of those rustls-native-certs probes).
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const PODMAN: &str = "/usr/bin/podman";
const RUNC: &str = "/usr/sbin/runc";

/// The Dockerfile's line that copies the builder stage's output; replaced here by a copy of
/// the same tree built on this machine.
const COPY_FROM_BUILDER: &str = "COPY --from=build /out/ /";
const COPY_FROM_CONTEXT: &str = "COPY rootfs/ /";

/// The workspace root (the test bed lives at crates/testbed).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the test bed sits two levels below the workspace root")
        .to_path_buf()
}

/// The static release binaries and where they are.
#[derive(Debug, Clone)]
pub struct StaticBinaries {
    /// (name, path, size in bytes), in the order of [`BINARIES`].
    pub binaries: Vec<(String, PathBuf, u64)>,
}

/// Builds zk-wait and port-sync as static release binaries for this machine's target (as the
/// Dockerfile's builder stage does), and checks that they are static. A cold build takes
/// minutes (release profile: LTO, one codegen unit); after that it is a no-op of a second.
pub fn build_static_binaries(echo: Echo, limit: Duration) -> io::Result<StaticBinaries> {
    let target = host_target()?;
    let mut build = cargo();
    build
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", &target])
        .args(BINARIES.iter().flat_map(|name| ["-p", name]))
        // RUSTFLAGS with --target reaches only the target's crates, not build scripts and
        // proc macros, which must stay dynamic to run on the host.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run_bounded("cargo build (static)", build, echo, limit)?;

    let release_dir = target_directory()?.join(&target).join("release");
    let mut binaries = Vec::new();
    for name in BINARIES {
        let path = release_dir.join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if has_interpreter(&bytes)? {
            return Err(io::Error::other(format!(
                "{} is dynamically linked (it names an ELF interpreter): \
                 the +crt-static build did not take effect",
                path.display()
            )));
        }
        binaries.push((name.to_owned(), path, bytes.len() as u64));
    }
    Ok(StaticBinaries { binaries })
}

/// Debian's podman with a containers.conf that works on these machines: runc (crun fails here
/// on cgroup v1 hybrid mode and rlimits) and ulimits no higher than this machine's hard limits
/// (podman's defaults are above them, and a container then fails to start).
pub struct Podman {
    config: PathBuf,
    _dir: TempDir,
}

impl Podman {
    pub fn new() -> io::Result<Podman> {
        for (path, package) in [(PODMAN, "podman"), (RUNC, "runc")] {
            if !Path::new(path).exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{path} is missing: install Debian's {package} (apt-get install podman \
                         runc), or run `cargo xtask image` or `cargo xtask test`, which do"
                    ),
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("testbed-podman-")
            .tempdir()?;
        let config = dir.path().join("containers.conf");
        std::fs::write(&config, containers_conf(&hard_limits()?))?;
        Ok(Podman { config, _dir: dir })
    }

    /// `podman` with this configuration.
    pub fn command(&self) -> Command {
        let mut command = Command::new(PODMAN);
        command.env("CONTAINERS_CONF", &self.config);
        command
    }

    /// Runs `podman ARGS` to its end within `limit`; its stdout, or an error with its output.
    pub fn output(&self, args: &[&str], limit: Duration) -> io::Result<String> {
        let mut command = self.command();
        command.args(args);
        let process = run_bounded(&format!("podman {}", args[0]), command, Echo::Quiet, limit)?;
        Ok(process.stdout())
    }
}

/// An image built from the static binaries.
#[derive(Debug, Clone)]
pub struct Image {
    pub tag: String,
    /// As podman reports it: the uncompressed size of the image's layers.
    pub size_bytes: u64,
    pub binaries: StaticBinaries,
}

/// Builds the Dockerfile's final stage from `binaries` with podman and tags it `tag`.
pub fn build_image(
    podman: &Podman,
    binaries: &StaticBinaries,
    tag: &str,
    echo: Echo,
    limit: Duration,
) -> io::Result<Image> {
    let context = tempfile::Builder::new()
        .prefix("testbed-image-")
        .tempdir()?;
    let rootfs = context.path().join("rootfs");
    let bin_dir = rootfs.join(BIN_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&bin_dir)?;
    for (name, path, _) in &binaries.binaries {
        copy_with_mode(path, &bin_dir.join(name), 0o755)?;
    }
    let etc = rootfs.join("etc");
    copy_with_mode(
        &workspace_root().join("docker/nsswitch.conf"),
        &etc.join("nsswitch.conf"),
        0o644,
    )?;
    if !Path::new(CA_BUNDLE).exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{CA_BUNDLE} is missing: install Debian's ca-certificates \
                 (apt-get install ca-certificates)"
            ),
        ));
    }
    copy_with_mode(
        Path::new(CA_BUNDLE),
        &rootfs.join(CA_BUNDLE.trim_start_matches('/')),
        0o644,
    )?;

    let dockerfile_path = workspace_root().join("docker/Dockerfile");
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dockerfile_path.display())))?;
    let containerfile = context.path().join("Containerfile");
    std::fs::write(&containerfile, final_stage(&dockerfile)?)?;

    let mut build = podman.command();
    build
        .arg("build")
        .arg("--file")
        .arg(&containerfile)
        .args(["--tag", tag])
        // No registry is reachable here, and FROM scratch needs none.
        .arg("--pull=never")
        .arg(context.path());
    run_bounded("podman build", build, echo, limit)?;

    let size = podman.output(
        &["image", "inspect", "--format", "{{.Size}}", tag],
        Duration::from_secs(60),
    )?;
    let size_bytes = size.trim().parse().map_err(|_| {
        io::Error::other(format!(
            "podman image inspect gave no size for {tag}: {size:?}"
        ))
    })?;
    Ok(Image {
        tag: tag.to_owned(),
        size_bytes,
        binaries: binaries.clone(),
    })
}

/// Both steps: the static binaries, then the image.
pub fn build(tag: &str, echo: Echo, limit: Duration) -> io::Result<(Podman, Image)> {
    let binaries = build_static_binaries(echo.clone(), limit)?;
    let podman = Podman::new()?;
    let image = build_image(&podman, &binaries, tag, echo, limit)?;
    Ok((podman, image))
}

/// A file in an image: its mode and owner as `tar tv` shows them, size, and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub mode: String,
    pub owner: String,
    pub size: u64,
    pub path: String,
}

/// Every file, directory and link in the image's filesystem, from `podman export` of a
/// container created (not started) from it.
pub fn list_files(podman: &Podman, tag: &str) -> io::Result<Vec<ImageFile>> {
    let limit = Duration::from_secs(60);
    let dir = tempfile::Builder::new()
        .prefix("testbed-export-")
        .tempdir()?;
    let tar = dir.path().join("rootfs.tar");
    let container = podman.output(&["create", tag], limit)?;
    let container = container.trim();
    let exported = podman.output(
        &["export", "--output", &tar.to_string_lossy(), container],
        limit,
    );
    let removed = podman.output(&["rm", "--force", container], limit);
    exported?;
    removed?;
    let mut list = Command::new("tar");
    list.arg("--list")
        .arg("--verbose")
        .arg("--numeric-owner")
        .arg("--file")
        .arg(&tar);
    let listing = run_bounded("tar --list", list, Echo::Quiet, limit)?.stdout();
    // -rwxr-xr-x 0/0 1843200 2026-01-01 00:00 usr/local/bin/zk-wait
    Ok(listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [mode, owner, size, _date, _time, path, ..] = fields[..] else {
                return None;
            };
            Some(ImageFile {
                mode: mode.to_owned(),
                owner: owner.to_owned(),
                size: size.parse().ok()?,
                path: path.trim_end_matches('/').to_owned(),
            })
        })
        .collect())
}

/// The Dockerfile's last stage (from its last `FROM`), copying the tree built on this machine
/// instead of the builder stage's.
pub fn final_stage(dockerfile: &str) -> io::Result<String> {
    let lines: Vec<&str> = dockerfile.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .ok_or_else(|| io::Error::other("docker/Dockerfile has no FROM line"))?;
    let stage = &lines[start..];
    if !stage.iter().any(|line| line.trim() == COPY_FROM_BUILDER) {
        return Err(io::Error::other(format!(
            "docker/Dockerfile's final stage has no line `{COPY_FROM_BUILDER}`, which the \
             machine-local build replaces with the binaries built here"
        )));
    }
    let mut text = String::new();
    for line in stage {
        let line = if line.trim() == COPY_FROM_BUILDER {
            COPY_FROM_CONTEXT
        } else {
            line
        };
        let _ = writeln!(text, "{line}");
    }
    Ok(text)
}

/// The containers.conf for these limits: (name, hard limit) pairs, `None` for unlimited.
fn containers_conf(limits: &[(&str, Option<u64>)]) -> String {
    let ulimits: Vec<String> = limits
        .iter()
        .filter_map(|(name, limit)| limit.map(|limit| format!("\"{name}={limit}:{limit}\"")))
        .collect();
    format!(
        "# Written by the test bed (testbed::image::Podman).\n\
         [containers]\n\
         default_ulimits = [{}]\n\
         [engine]\n\
         runtime = \"runc\"\n\
         # No systemd journal on these machines.\n\
         events_logger = \"file\"\n\
         cgroup_manager = \"cgroupfs\"\n",
        ulimits.join(", ")
    )
}

/// The limits a container can have here: this process's hard limits on open files and
/// processes, from /proc/self/limits (what `ulimit -Hn` and `ulimit -Hu` say), processes no
/// more than kernel.pid_max.
fn hard_limits() -> io::Result<Vec<(&'static str, Option<u64>)>> {
    let text = std::fs::read_to_string("/proc/self/limits")?;
    let hard = |label: &str| -> io::Result<Option<u64>> {
        let line = text
            .lines()
            .find(|line| line.starts_with(label))
            .ok_or_else(|| io::Error::other(format!("/proc/self/limits has no {label:?}")))?;
        // "Max open files            20000                20000                files"
        let value = line[label.len()..]
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| io::Error::other(format!("cannot read {line:?}")))?;
        if value == "unlimited" {
            Ok(None)
        } else {
            value
                .parse()
                .map(Some)
                .map_err(|_| io::Error::other(format!("cannot read {line:?}")))
        }
    };
    // podman lowers its own process limit to kernel.pid_max (32768 here, against a hard limit
    // of 96365) before it starts runc, and runc then cannot raise a container's above it.
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let processes = match (hard("Max processes")?, pid_max) {
        (Some(limit), Some(pid_max)) => Some(limit.min(pid_max)),
        (limit, pid_max) => limit.or(pid_max),
    };
    Ok(vec![
        ("nofile", hard("Max open files")?),
        ("nproc", processes),
    ])
}

/// Whether an ELF file names a program interpreter (ld.so): a static(-pie) binary does not.
fn has_interpreter(elf: &[u8]) -> io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let not_elf64 = || io::Error::other("not a 64-bit little-endian ELF file");
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err(not_elf64());
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]);
    let program_headers = u64::from_le_bytes(elf[0x20..0x28].try_into().map_err(|_| not_elf64())?);
    let entry_size = usize::from(u16_at(0x36));
    let entries = usize::from(u16_at(0x38));
    let start = usize::try_from(program_headers).map_err(|_| not_elf64())?;
    for index in 0..entries {
        let at = start + index * entry_size;
        let kind = elf.get(at..at + 4).ok_or_else(not_elf64)?;
        if u32::from_le_bytes(kind.try_into().map_err(|_| not_elf64())?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The target this machine builds for by default, e.g. `x86_64-unknown-linux-gnu`.
fn host_target() -> io::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut command = Command::new(rustc);
    command.arg("-vV");
    let process = run_bounded("rustc -vV", command, Echo::Quiet, Duration::from_secs(60))?;
    process
        .stdout()
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other("rustc -vV names no host target"))
}

/// Where cargo puts build output (`CARGO_TARGET_DIR`, config, or `target/`).
fn target_directory() -> io::Result<PathBuf> {
    let mut metadata = cargo();
    metadata
        .current_dir(workspace_root())
        .args(["metadata", "--no-deps", "--format-version", "1"]);
    let process = run_bounded(
        "cargo metadata",
        metadata,
        Echo::Quiet,
        Duration::from_secs(60),
    )?;
    let metadata: serde_json::Value = serde_json::from_str(&process.stdout())
        .map_err(|e| io::Error::other(format!("cargo metadata: {e}")))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("cargo metadata names no target_directory"))
}

/// cargo, the one running this build when there is one, with none of the variables a cargo
/// that started us (`cargo run` for xtask, `cargo nextest` for a test) set for its own crate.
/// Build scripts watch some of them (ring's: `CARGO_MANIFEST_DIR`, `CARGO_PKG_*`), so with
/// them xtask's and the tests' builds would each find the other's output stale and rebuild it
/// all; its jobserver's file descriptors are not ours either.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let set_for_a_crate = |name: &str| {
        name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
                "CARGO_MAKEFLAGS",
                "MAKEFLAGS",
                "MFLAGS",
            ]
            .contains(&name)
    };
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_for_a_crate) {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `command` to its end within `limit`; an overrun or a failure is an error carrying
/// what it printed.
pub(crate) fn run_bounded(
    what: &str,
    command: Command,
    echo: Echo,
    limit: Duration,
) -> io::Result<Process> {
    let mut process = Process::spawn(what, command, echo)?;
    match process.wait_timeout(limit)? {
        Some(status) if status.success() => Ok(process),
        Some(status) => Err(io::Error::other(format!(
            "{what} failed ({status}):\n{}",
            process.output()
        ))),
        None => {
            process.kill();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{what} did not finish within {limit:?}; its output:\n{}",
                    process.output()
                ),
            ))
        }
    }
}

fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot copy {} to {}: {e}", from.display(), to.display()),
        )
    })?;
    crate::dns::set_mode(to, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_stage_copies_the_local_tree_instead_of_the_builder_output() {
        let dockerfile = "FROM rust:1 AS build\nRUN cargo build\n\nFROM scratch\n\
                          COPY --from=build /out/ /\nUSER 65532:65532\n";
        assert_eq!(
            final_stage(dockerfile).unwrap(),
            "FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\n"
        );
    }

    #[test]
    fn a_final_stage_without_the_builder_copy_is_refused() {
        let error = final_stage("FROM scratch\nCOPY x /\n").unwrap_err();
        assert!(error.to_string().contains(COPY_FROM_BUILDER), "{error}");
    }

    #[test]
    fn the_project_dockerfile_has_a_final_stage_this_build_understands() {
        let dockerfile = std::fs::read_to_string(workspace_root().join("docker/Dockerfile"))
            .expect("docker/Dockerfile exists");
        let stage = final_stage(&dockerfile).unwrap();
        assert!(stage.starts_with("FROM scratch"), "{stage}");
        assert!(stage.contains("USER 65532:65532"), "{stage}");
    }

    #[test]
    fn containers_conf_caps_only_limited_resources() {
        let conf = containers_conf(&[("nofile", Some(20000)), ("nproc", None)]);
        assert!(
            conf.contains("default_ulimits = [\"nofile=20000:20000\"]"),
            "{conf}"
        );
        assert!(conf.contains("runtime = \"runc\""), "{conf}");
    }

    #[test]
    fn this_test_binary_is_dynamic_and_names_an_interpreter() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
        assert!(
            has_interpreter(b"not an elf file at all, but long enough to be read as one....")
                .is_err()
        );
    }
}
