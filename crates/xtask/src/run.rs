//! Running the commands a task is made of, each shown before it runs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

pub type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (xtask lives at crates/xtask).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(|crates| crates.parent())
        .expect("xtask sits two levels below the workspace root")
        .to_path_buf()
}

/// Runs `command` in the workspace root with inherited output; a failure names the command.
pub fn step(what: &str, mut command: Command) -> Result {
    command.current_dir(workspace_root());
    eprintln!("==> {what}: {}", describe(&command));
    let started = Instant::now();
    let status = command
        .status()
        .map_err(|error| format!("cannot run {}: {error}", describe(&command)))?;
    if status.success() {
        eprintln!(
            "==> {what}: done in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!("{what} failed ({status}): {}", describe(&command)))
    }
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR` when set (cargo passes it on to xtask),
/// else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || workspace_root().join("target"),
        |dir| {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        },
    )
}

/// A workspace binary's debug build, (re)built first so that a stale one is never what is
/// tested (the debug build is incremental; a release build would take minutes on 2 cores).
pub fn build_debug_binary(package: &str) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "-p", package]);
    step(&format!("build {package}"), build)?;
    Ok(target_dir().join("debug").join(package))
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
