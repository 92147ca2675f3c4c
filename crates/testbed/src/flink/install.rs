//! The distribution cache: wheels downloaded once with pip, unpacked once per version into a
//! temporary folder that is renamed into place, under a lock file, so a folder named
//! `flink-VERSION` is always complete and concurrent test processes unpack it only once.

use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The interpreter whose pip downloads the wheels and whose zipfile unpacks them. The
/// `apache-flink` wheel is built per Python version, and pip picks the one for this interpreter.
const PYTHON: &str = "python3";

/// pip's option for wheels only: no source archive is built or run by accident.
const ONLY_WHEELS: &str = "--only-binary=:all:";

/// `wheels/.download-PID`: where pip writes before the wheel is renamed into the cache.
const DOWNLOAD_SCRATCH_PREFIX: &str = ".download-";

/// Unpacks the `pyflink/` part of each wheel given after the destination, keeping the Unix
/// modes the wheels record (zipfile alone drops them, and the scripts must stay executable).
/// An `apache-flink-libraries` source archive (`.tar.gz`, all PyPI has before 2.2) holds the
/// same files under `<top>/deps/`, which its setup.py would copy to `pyflink/`; so does a
/// `pyspark` source archive (`deps/jars/`). With `UNPACK_ONLY` set, only the paths matching one
/// of its comma-separated patterns are unpacked.
const UNPACK_SCRIPT: &str = r#"
import fnmatch, os, shutil, sys, tarfile, zipfile
destination = sys.argv[1]
# Optional: only paths matching one of these shell patterns (comma-separated) are unpacked.
only = [p for p in os.environ.get("UNPACK_ONLY", "").split(",") if p]

def entries(archive_path):
    """(path inside the distribution, Unix mode or 0, opener) of each regular file."""
    if archive_path.endswith(".tar.gz"):
        with tarfile.open(archive_path) as archive:
            for member in archive:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) < 3 or parts[1] != "deps":
                    continue
                yield "/".join(parts[2:]), member.mode & 0o777, lambda m=member: archive.extractfile(m)
        return
    with zipfile.ZipFile(archive_path) as archive:
        for entry in archive.infolist():
            name = entry.filename
            if not name.startswith("pyflink/") or name.endswith("/"):
                continue
            mode = (entry.external_attr >> 16) & 0o777
            yield name[len("pyflink/"):], mode, lambda e=entry: archive.open(e)

for archive_path in sys.argv[2:]:
    for relative, mode, opener in entries(archive_path):
        if only and not any(fnmatch.fnmatchcase(relative, pattern) for pattern in only):
            continue
        if relative.startswith("/") or ".." in relative.split("/"):
            sys.exit("refusing a path outside the distribution in " + archive_path + ": " + relative)
        target = os.path.join(destination, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with opener() as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        if mode:
            os.chmod(target, mode)
"#;

/// What an install call had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstallActions {
    /// pip downloaded the wheels.
    pub downloaded: bool,
    /// The wheels were unpacked into the distribution folder.
    pub unpacked: bool,
}

/// `$FLINK_HA_CACHE`, else `$XDG_CACHE_HOME/flink-ha-sidecars`, else
/// `~/.cache/flink-ha-sidecars`: outside the source tree, so `cargo clean` and fresh checkouts
/// keep the ~330 MB download.
/// Holds `<cache>/<name>.lock` exclusively until the returned file is dropped, so that two
/// processes (parallel tests, a test and the demo) never install the same thing at once.
/// Says so when it has to wait, naming `what`.
pub fn install_lock(cache: &Path, name: &str, what: &str) -> io::Result<File> {
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "testbed: waiting for another process to install {what} (lock {})",
                lock_path.display()
            );
            lock.lock()?;
        }
        Err(TryLockError::Error(error)) => return Err(error),
    }
    Ok(lock)
}

pub fn cache_dir() -> io::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("FLINK_HA_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("flink-ha-sidecars"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("flink-ha-sidecars")),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no cache dir for Flink: set FLINK_HA_CACHE (or XDG_CACHE_HOME or HOME)",
        )),
    }
}

pub(super) fn install(cache: &Path, version: &str) -> io::Result<(PathBuf, InstallActions)> {
    check_version(version)?;
    install_dir(
        cache,
        &format!("flink-{version}"),
        &format!("Flink {version}"),
        is_installed,
        |wheels_dir, partial| {
            let mut downloaded = false;
            let cached = find_wheels(wheels_dir, version)?;
            if cached.jars.is_none() {
                eprintln!("testbed: downloading Flink {version}'s jars from PyPI (~330 MB, once)");
                download_jars(wheels_dir, version)?;
                downloaded = true;
            }
            if cached.scripts.is_none() {
                download_scripts_wheel(wheels_dir, version)?;
                downloaded = true;
            }
            let Wheels {
                jars: Some(jars),
                scripts: Some(scripts),
            } = find_wheels(wheels_dir, version)?
            else {
                return Err(io::Error::other(format!(
                    "pip reported success but {} lacks a wheel of apache-flink-libraries or \
                     apache-flink {version}",
                    wheels_dir.display()
                )));
            };
            unpack(&[jars, scripts], partial, &[])?;
            make_scripts_executable(&partial.join("bin"))?;
            if is_installed(partial) {
                Ok(downloaded)
            } else {
                Err(io::Error::other(format!(
                    "the wheels of Flink {version} unpacked to no bin/jobmanager.sh and \
                     lib/flink-dist-*.jar in {}",
                    partial.display()
                )))
            }
        },
    )
}

/// The jars of `apache-flink-libraries` `version` alone (its `lib/` files matching `include`,
/// e.g. `lib/flink-shaded-zookeeper-*.jar`), without the scripts wheel, in
/// `<cache>/<name>`: for servers that ship inside Flink's jars, such as old ZooKeepers. Returns
/// the folder, `lib/` inside it.
pub fn install_flink_jars(
    cache: &Path,
    version: &str,
    name: &str,
    include: &[&str],
) -> io::Result<PathBuf> {
    check_version(version)?;
    let complete = |dir: &Path| dir.join("lib").is_dir();
    let (home, _) = install_dir(
        cache,
        name,
        &format!("the jars of Flink {version}"),
        complete,
        |wheels_dir, partial| {
            let mut downloaded = false;
            if find_wheels(wheels_dir, version)?.jars.is_none() {
                eprintln!("testbed: downloading Flink {version}'s jars from PyPI (once)");
                download_jars(wheels_dir, version)?;
                downloaded = true;
            }
            let Some(jars) = find_wheels(wheels_dir, version)?.jars else {
                return Err(io::Error::other(format!(
                    "pip reported success but {} lacks apache-flink-libraries {version}",
                    wheels_dir.display()
                )));
            };
            unpack(&[jars], partial, include)?;
            if complete(partial) {
                Ok(downloaded)
            } else {
                Err(io::Error::other(format!(
                    "apache-flink-libraries {version} has no file matching {include:?}"
                )))
            }
        },
    )?;
    Ok(home)
}

/// The files matching `include` (e.g. `jars/zookeeper-*.jar`) of PyPI's source archive of
/// `project` `version` (`<top>/deps/...`, as pyspark's is laid out), in `<cache>/<name>`,
/// downloaded and unpacked once, under the same lock and rename as Flink.
pub fn install_source_archive_files(
    cache: &Path,
    project: &str,
    version: &str,
    name: &str,
    include: &[&str],
) -> io::Result<PathBuf> {
    check_version(version)?;
    let archive = |wheels_dir: &Path| {
        [project.to_owned(), project.replace('-', "_")]
            .iter()
            .map(|spelling| wheels_dir.join(format!("{spelling}-{version}.tar.gz")))
            .find(|path| path.is_file())
    };
    let (home, _) = install_dir(
        cache,
        name,
        &format!("{project} {version}"),
        |dir| dir.is_dir(),
        |wheels_dir, partial| {
            let mut downloaded = false;
            if archive(wheels_dir).is_none() {
                eprintln!(
                    "testbed: downloading {project} {version}'s source archive from PyPI (once)"
                );
                pip_download(
                    wheels_dir,
                    &format!("{project}=={version}"),
                    &["--no-binary=:all:"],
                )?;
                downloaded = true;
            }
            let Some(path) = archive(wheels_dir) else {
                return Err(io::Error::other(format!(
                    "pip reported success but {} lacks {project}-{version}.tar.gz",
                    wheels_dir.display()
                )));
            };
            unpack(&[path], partial, include)?;
            let found = fs::read_dir(partial)?.next().is_some();
            if found {
                Ok(downloaded)
            } else {
                Err(io::Error::other(format!(
                    "{project} {version} has no file matching {include:?}"
                )))
            }
        },
    )?;
    Ok(home)
}

/// Makes `<cache>/<name>` appear complete or not at all: when `is_complete` says it is missing,
/// takes the install lock, and `fill(wheels_dir, partial)` fills a scratch folder (returning
/// whether it downloaded anything) that is then renamed into place. Safe to call from several
/// processes at once.
fn install_dir(
    cache: &Path,
    name: &str,
    what: &str,
    is_complete: impl Fn(&Path) -> bool,
    fill: impl FnOnce(&Path, &Path) -> io::Result<bool>,
) -> io::Result<(PathBuf, InstallActions)> {
    let home = cache.join(name);
    // The rename below makes the folder appear complete or not at all, so its presence is
    // enough and the common case takes no lock.
    if is_complete(&home) {
        return Ok((home, InstallActions::default()));
    }
    fs::create_dir_all(cache)?;
    let lock = install_lock(cache, name, what)?;
    // Another process may have finished while this one waited for the lock.
    if is_complete(&home) {
        return Ok((home, InstallActions::default()));
    }
    let wheels_dir = cache.join("wheels");
    remove_leftovers(&wheels_dir, DOWNLOAD_SCRATCH_PREFIX)?;
    remove_leftovers(cache, &format!(".{name}.partial-"))?;
    let partial = cache.join(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default()
    ));
    fs::create_dir_all(&partial)?;
    let filled = fill(&wheels_dir, &partial);
    let downloaded = match filled.and_then(|downloaded| {
        fs::rename(&partial, &home)?;
        Ok(downloaded)
    }) {
        Ok(downloaded) => downloaded,
        Err(error) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    drop(lock);
    Ok((
        home,
        InstallActions {
            downloaded,
            unpacked: true,
        },
    ))
}

fn check_version(version: &str) -> io::Result<()> {
    let parts: Vec<&str> = version.split('.').collect();
    let well_formed = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if well_formed {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a Flink release version: {version:?} (expected e.g. 2.3.0 or 1.18.1)"),
        ))
    }
}

fn is_installed(home: &Path) -> bool {
    home.join("bin").join("jobmanager.sh").is_file() && dist_jar(&home.join("lib")).is_some()
}

fn dist_jar(lib: &Path) -> Option<PathBuf> {
    fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("flink-dist") && name.ends_with(".jar"))
        })
}

/// The two wheels of a version in the cache.
#[derive(Debug)]
struct Wheels {
    /// `apache-flink-libraries`: `lib/`, `opt/`, `plugins/`, `bin/bash-java-utils.jar`; a
    /// wheel, or before 2.2 the source archive.
    jars: Option<PathBuf>,
    /// `apache-flink`: `bin/` scripts and `conf/`.
    scripts: Option<PathBuf>,
}

fn find_wheels(wheels_dir: &Path, version: &str) -> io::Result<Wheels> {
    let mut names: Vec<String> = match fs::read_dir(wheels_dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.ends_with(".whl") || name.ends_with(".tar.gz"))
            .collect(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    names.sort();
    // Wheel file names spell the project with underscores; the trailing dash keeps
    // `apache_flink-` from matching `apache_flink_libraries-`.
    let find = |project: &str| {
        let prefix = format!("{project}-{version}-");
        names
            .iter()
            .find(|name| name.starts_with(&prefix))
            .map(|name| wheels_dir.join(name))
    };
    // A source archive is named `NAME-VERSION.tar.gz`, with the project's dashes (older
    // uploads) or underscores (PEP 625).
    let source_archive = || {
        ["apache-flink-libraries", "apache_flink_libraries"]
            .iter()
            .map(|project| format!("{project}-{version}.tar.gz"))
            .find(|name| names.contains(name))
            .map(|name| wheels_dir.join(name))
    };
    Ok(Wheels {
        jars: find("apache_flink_libraries").or_else(source_archive),
        scripts: find("apache_flink"),
    })
}

/// `apache-flink-libraries` has wheels from 2.2 on; earlier releases (1.18 – 2.1) are on PyPI
/// as source archives only, with the same jars. pip downloads the archive after preparing its
/// metadata (a setup.py run in a throwaway build environment); nothing is built or installed.
fn download_jars(wheels_dir: &Path, version: &str) -> io::Result<()> {
    let requirement = format!("apache-flink-libraries=={version}");
    let Err(wheel_error) = pip_download(wheels_dir, &requirement, &[ONLY_WHEELS]) else {
        return Ok(());
    };
    eprintln!("testbed: no wheel of {requirement}; trying its source archive (Flink before 2.2)");
    pip_download(wheels_dir, &requirement, &["--no-binary=:all:"]).map_err(|source_error| {
        io::Error::other(format!(
            "{wheel_error}\nand as a source archive: {source_error}"
        ))
    })
}

/// `apache-flink` is built per Python version and platform, and older releases have no wheel
/// for newer Pythons (1.18.1 stops at 3.10). Its `bin/` and `conf/` are the same in every
/// build, so when this Python has none, any manylinux build will do.
fn download_scripts_wheel(wheels_dir: &Path, version: &str) -> io::Result<()> {
    let requirement = format!("apache-flink=={version}");
    let for_this_python = pip_download(wheels_dir, &requirement, &[ONLY_WHEELS]);
    let Err(first_error) = for_this_python else {
        return Ok(());
    };
    for python in ["3.11", "3.10", "3.9", "3.8"] {
        eprintln!(
            "testbed: trying apache-flink {version}'s manylinux wheel for Python {python} \
             (only its platform-independent bin/ and conf/ are used)"
        );
        let platform = [
            ONLY_WHEELS,
            "--platform",
            "manylinux2014_x86_64",
            "--python-version",
            python,
        ];
        if pip_download(wheels_dir, &requirement, &platform).is_ok() {
            return Ok(());
        }
    }
    Err(first_error)
}

/// `python3 -m pip download --no-deps [EXTRA] --dest DIR REQUIREMENT`,
/// with pip's own progress shown (on the terminal, or in the test's captured output). pip
/// downloads into a scratch dir and the wheel is renamed into the cache after, so a download
/// cut short never leaves a truncated wheel that looks cached.
fn pip_download(wheels_dir: &Path, requirement: &str, extra: &[&str]) -> io::Result<()> {
    let scratch = wheels_dir.join(format!("{DOWNLOAD_SCRATCH_PREFIX}{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let result = pip_download_into(&scratch, requirement, extra).and_then(|()| {
        for entry in fs::read_dir(&scratch)? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                fs::rename(&path, wheels_dir.join(name))?;
            }
        }
        Ok(())
    });
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn pip_download_into(dest: &Path, requirement: &str, extra: &[&str]) -> io::Result<()> {
    let mut command = Command::new(PYTHON);
    command
        .args(["-m", "pip", "download", "--no-deps"])
        .args(extra)
        .arg("--dest")
        .arg(dest)
        .arg(requirement);
    let shown = format!("{command:?}");
    eprintln!("testbed: {shown}");
    let started = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "cannot run {PYTHON} to download {requirement} ({error}); install Python 3 \
                     with pip (apt-get install python3-pip), then run:\n  {shown}"
                ),
            )
        })?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "downloading {requirement} failed ({status}); the command was:\n  {shown}\n\
             Check that pip works ({PYTHON} -m pip --version; apt-get install python3-pip) and \
             that PyPI is reachable; or put the wheel into {} yourself",
            dest.parent().unwrap_or(dest).display()
        )));
    }
    eprintln!(
        "testbed: downloaded {requirement} in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// Unpacks the archives in order (for Flink the jars wheel first, then the scripts wheel, so
/// that the scripts' copies of the files both carry, `README.txt` and `version.py`, win); only
/// the paths matching one of `include`'s shell patterns when it is not empty.
fn unpack(wheels: &[PathBuf], destination: &Path, include: &[&str]) -> io::Result<()> {
    fs::create_dir_all(destination)?;
    eprintln!(
        "testbed: unpacking {} into {}",
        wheels
            .iter()
            .map(|w| w.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        destination.display()
    );
    let output = Command::new(PYTHON)
        .arg("-c")
        .arg(UNPACK_SCRIPT)
        .arg(destination)
        .args(wheels)
        .env("UNPACK_ONLY", include.join(","))
        .stdin(Stdio::null())
        .output()
        .map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot run {PYTHON} to unpack the Flink wheels: {error}"),
            )
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "unpacking the Flink wheels with {PYTHON}'s zipfile failed ({}):\n{}\n\
             A damaged wheel is downloaded again once deleted: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            wheels
                .iter()
                .map(|w| w.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Some wheels record no Unix modes; the launch scripts must be executable all the same.
fn make_scripts_executable(bin: &Path) -> io::Result<()> {
    for entry in fs::read_dir(bin)? {
        let path = entry?.path();
        let is_script = path.is_file()
            && !path
                .extension()
                .is_some_and(|extension| extension == "jar" || extension == "bat");
        if is_script {
            let mut permissions = fs::metadata(&path)?.permissions();
            permissions.set_mode(permissions.mode() | 0o755);
            fs::set_permissions(&path, permissions)?;
        }
    }
    Ok(())
}

/// Scratch dirs of an install that was killed half-way; only called under the lock, so no
/// live install owns them.
fn remove_leftovers(dir: &Path, prefix: &str) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(prefix))
        {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_before_they_reach_pip_or_a_path() {
        assert!(check_version("2.3.0").is_ok());
        assert!(check_version("1.18.1").is_ok());
        assert!(check_version("2.3").is_ok());
        for bad in ["", "2", "2.3.0.1", "2..0", "../x", "2.3.0-rc1", "latest"] {
            assert!(check_version(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn wheels_of_the_two_projects_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "apache_flink-2.3.0-cp311-cp311-manylinux2014_x86_64.whl",
            "apache_flink_libraries-2.3.0-py2.py3-none-any.whl",
            "apache_flink_libraries-1.20.3-py2.py3-none-any.whl",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = find_wheels(dir.path(), "2.3.0").unwrap();
        let jars = found.jars.unwrap();
        let scripts = found.scripts.unwrap();
        assert!(jars.ends_with("apache_flink_libraries-2.3.0-py2.py3-none-any.whl"));
        assert!(scripts.ends_with("apache_flink-2.3.0-cp311-cp311-manylinux2014_x86_64.whl"));
        // Only the jars of 1.20.3 are there: the scripts wheel must be downloaded.
        let found = find_wheels(dir.path(), "1.20.3").unwrap();
        assert!(found.jars.is_some() && found.scripts.is_none());
        let found = find_wheels(&dir.path().join("missing"), "2.3.0").unwrap();
        assert!(found.jars.is_none() && found.scripts.is_none());
        // Before 2.2 the jars come as a source archive, under either spelling of the name.
        for name in [
            "apache-flink-libraries-1.18.1.tar.gz",
            "apache_flink_libraries-2.1.3.tar.gz",
            "apache_flink-1.18.1-cp310-cp310-manylinux1_x86_64.whl",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = find_wheels(dir.path(), "1.18.1").unwrap();
        assert!(
            found
                .jars
                .unwrap()
                .ends_with("apache-flink-libraries-1.18.1.tar.gz")
        );
        assert!(found.scripts.is_some());
        let found = find_wheels(dir.path(), "2.1.3").unwrap();
        assert!(
            found
                .jars
                .unwrap()
                .ends_with("apache_flink_libraries-2.1.3.tar.gz")
        );
        assert!(found.scripts.is_none());
        let found = find_wheels(dir.path(), "1.18").unwrap();
        assert!(found.jars.is_none() && found.scripts.is_none());
    }
}
