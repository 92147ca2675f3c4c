//! `cargo deny` over the whole dependency tree (advisories, licenses, bans, sources) with the
//! policy in .config/deny.toml. The RustSec advisory database comes from, in this order: the
//! directory `RUSTSEC_ADVISORY_DB` names; an offline snapshot at `../rustsec-advisory-db` or
//! `../shared/rustsec-advisory-db` beside the repository (machines without network access keep one
//! there); else cargo-deny fetches it as it normally does.

use crate::run::{Result, cargo, step, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// cargo-deny names a database's directory after its URL; this is the default URL's. Pinning
/// the version keeps the name (and the config format) stable.
const CARGO_DENY_VERSION: &str = "0.20.2";
const DATABASE_DIR: &str = "advisory-db-3157b0e258782691";

/// Names a local copy of the RustSec advisory database (a checkout or an unpacked snapshot).
const DATABASE_VARIABLE: &str = "RUSTSEC_ADVISORY_DB";

pub fn check() -> Result {
    install_cargo_deny()?;
    let snapshot = local_database()?;
    match &snapshot {
        Some(dir) => install_database(dir)?,
        None => {
            eprintln!(
                "==> no local RustSec advisory database ({DATABASE_VARIABLE} unset, none beside \
                 the repository): cargo-deny fetches it"
            );
            // A copied snapshot there has no remote to fetch from: let cargo-deny clone anew.
            let target = database_dir()?;
            if target.exists() {
                std::fs::remove_dir_all(&target)
                    .map_err(|e| format!("{}: {e}", target.display()))?;
            }
        }
    }

    // --offline keeps cargo-deny from fetching; cargo metadata then needs every crate of the
    // lock file (all targets) already downloaded.
    let mut fetch = cargo();
    fetch.args(["fetch", "--quiet"]);
    step("download every crate the lock file names", fetch)?;
    let mut deny = cargo();
    deny.arg("deny");
    if snapshot.is_some() {
        deny.arg("--offline");
    }
    deny.args(["--config", ".config/deny.toml", "check"]);
    step("check advisories, licenses, bans and sources", deny).map_err(|error| {
        if snapshot.is_some() {
            return error;
        }
        format!(
            "{error}\nIf cargo-deny could not download the RustSec advisory database (no network \
             access to github.com/rustsec/advisory-db), give a local copy instead: \
             {DATABASE_VARIABLE}=/path/to/advisory-db cargo xtask test (a git checkout of \
             rustsec/advisory-db, or an unpacked snapshot of it)."
        )
    })
}

/// The local database to use, if any: `RUSTSEC_ADVISORY_DB`, else a snapshot beside the
/// repository. A named directory that is no database is an error, not a silent fetch.
fn local_database() -> Result<Option<PathBuf>> {
    let is_database = |dir: &Path| dir.join("crates").is_dir();
    if let Some(dir) = std::env::var_os(DATABASE_VARIABLE) {
        let dir = PathBuf::from(dir);
        if !is_database(&dir) {
            return Err(format!(
                "{DATABASE_VARIABLE}={}: not a RustSec advisory database (it has no crates/ \
                 directory); name a checkout or unpacked snapshot of rustsec/advisory-db, or \
                 unset it to let cargo-deny fetch the database",
                dir.display()
            ));
        }
        return Ok(Some(dir));
    }
    Ok(["../rustsec-advisory-db", "../shared/rustsec-advisory-db"]
        .iter()
        .map(|relative| workspace_root().join(relative))
        .find(|dir| is_database(dir)))
}

/// Where .config/deny.toml's `db-path` puts the default database.
fn database_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    Ok([
        home.as_os_str(),
        ".cache/flink-ha-sidecars/advisory-dbs".as_ref(),
        DATABASE_DIR.as_ref(),
    ]
    .iter()
    .collect())
}

fn install_cargo_deny() -> Result {
    let installed = cargo()
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(CARGO_DENY_VERSION));
    if installed {
        return Ok(());
    }
    let mut install = cargo();
    install.args([
        "install",
        "--locked",
        &format!("cargo-deny@{CARGO_DENY_VERSION}"),
    ]);
    step("install cargo-deny", install)
}

/// Copies the snapshot to where .config/deny.toml points, as the git repository cargo-deny
/// expects (it reads the last commit's date).
fn install_database(snapshot: &Path) -> Result {
    let target = database_dir()?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let mut copy = Command::new("cp");
    copy.arg("-r").arg(snapshot.join(".")).arg(&target);
    step("copy the RustSec snapshot", copy)?;
    let git = |args: &[&str]| {
        let mut command = Command::new("git");
        command
            .arg("-C")
            .arg(&target)
            .args(["-c", "user.name=xtask", "-c", "user.email=xtask@localhost"])
            .args(args);
        command
    };
    step(
        "make the snapshot a git repository",
        git(&["init", "--quiet"]),
    )?;
    step("add the snapshot", git(&["add", "--all"]))?;
    step(
        "commit the snapshot",
        git(&[
            "commit",
            "--quiet",
            "--no-gpg-sign",
            "-m",
            "RustSec snapshot",
        ]),
    )
}
