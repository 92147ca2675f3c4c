//! `cargo xtask image`: the container image built on this machine. Installs podman when
//! missing, builds zk-wait and port-sync as static release binaries, builds docker/Dockerfile's
//! final stage (`FROM scratch`) from them with podman, tags it `localhost/flink-ha-sidecars:dev`
//! and prints what it holds and its size. No base image is pulled: the Dockerfile's Rust
//! builder stage is what users run; here the same cargo build runs on the machine.
//!
//! tests/image.rs builds the image the same way, into the same target dir; after this task the
//! test's build is a no-op of seconds, while a cold one (minutes) may outlast a test's limit.

use crate::install;
use crate::run::Result;
use fixtures::image::{self, DEV_TAG};
use fixtures::process::Echo;
use std::time::{Duration, Instant};

/// A cold release build (LTO, one codegen unit) takes minutes on two cores; this bounds a
/// stuck one, not a slow one.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

pub fn run() -> Result {
    install::debian_packages(&[install::PODMAN, install::RUNC, install::CA_CERTIFICATES])?;
    let started = Instant::now();
    eprintln!("==> build zk-wait and port-sync as static release binaries");
    let binaries = image::build_static_binaries(Echo::Prefixed("    ".into()), BUILD_LIMIT)
        .map_err(|e| e.to_string())?;
    let podman = image::Podman::new().map_err(|e| e.to_string())?;
    eprintln!("==> build the image {DEV_TAG} (docker/Dockerfile's final stage) with podman");
    let built = image::build_image(
        &podman,
        &binaries,
        DEV_TAG,
        Echo::Prefixed("    ".into()),
        BUILD_LIMIT,
    )
    .map_err(|e| e.to_string())?;
    let files = image::list_files(&podman, DEV_TAG).map_err(|e| e.to_string())?;

    eprintln!(
        "==> built {} in {:.1}s; it holds:",
        built.tag,
        started.elapsed().as_secs_f64()
    );
    for file in files.iter().filter(|file| !file.mode.starts_with('d')) {
        eprintln!(
            "    {} {} {:>10}  /{}",
            file.mode, file.owner, file.size, file.path
        );
    }
    for (name, _, size) in &built.binaries.binaries {
        eprintln!("    {name}: {}", megabytes(*size));
    }
    println!("{} {}", built.tag, megabytes(built.size_bytes));
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB ({bytes} bytes)", bytes as f64 / 1e6)
}
