//! `cargo deny` over the whole dependency tree (advisories, licenses, bans, sources) with the
//! policy in .config/deny.toml, against the offline RustSec snapshot that ../shared carries:
//! these machines cannot fetch the database.

use crate::run::{Result, cargo, step, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// cargo-deny names a database's directory after its URL; this is the default URL's. Pinning
/// the version keeps the name (and the config format) stable.
const CARGO_DENY_VERSION: &str = "0.20.2";
const DATABASE_DIR: &str = "advisory-db-3157b0e258782691";

pub fn check() -> Result {
    install_cargo_deny()?;
    let snapshot = workspace_root().join("../shared/rustsec-advisory-db");
    if !snapshot.join("crates").is_dir() {
        return Err(format!(
            "the offline RustSec snapshot is missing at {}: it comes with the project's shared \
             folder beside the repository",
            snapshot.display()
        ));
    }
    install_database(&snapshot)?;

    // --offline keeps cargo-deny from fetching; cargo metadata then needs every crate of the
    // lock file (all targets) already downloaded.
    let mut fetch = cargo();
    fetch.args(["fetch", "--quiet"]);
    step("download every crate the lock file names", fetch)?;
    let mut deny = cargo();
    deny.args([
        "deny",
        "--offline",
        "--config",
        ".config/deny.toml",
        "check",
    ]);
    step("check advisories, licenses, bans and sources", deny)
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
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let target: PathBuf = [
        home.as_os_str(),
        ".cache/flink-ha-sidecars/advisory-dbs".as_ref(),
        DATABASE_DIR.as_ref(),
    ]
    .iter()
    .collect();
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
