//! Installs what the tests, demo and benchmarks need when it is missing, so that a fresh
//! machine needs nothing but this repository: Debian packages through apt-get, and
//! cargo-nextest through cargo.

use crate::run::{Result, cargo, step};
use std::path::Path;
use std::process::Command;
use std::sync::Once;

/// A Debian package and a file whose presence shows it is installed.
pub struct Package {
    pub name: &'static str,
    pub provides: &'static str,
}

pub const ZOOKEEPER: Package = Package {
    name: "zookeeperd",
    provides: "/usr/share/zookeeper/bin/zkServer.sh",
};
pub const NETCAT: Package = Package {
    name: "netcat-openbsd",
    provides: "/bin/nc.openbsd",
};
pub const CURL: Package = Package {
    name: "curl",
    provides: "/usr/bin/curl",
};
pub const JQ: Package = Package {
    name: "jq",
    provides: "/usr/bin/jq",
};
pub const GNU_TIME: Package = Package {
    name: "time",
    provides: "/usr/bin/time",
};
/// javac and jar, for the demo's example Flink job.
pub const JDK: Package = Package {
    name: "default-jdk-headless",
    provides: "/usr/bin/javac",
};
/// Builds and runs the container image (`cargo xtask image`, tests/image.rs).
pub const PODMAN: Package = Package {
    name: "podman",
    provides: "/usr/bin/podman",
};
/// podman's runtime here: crun, its default, fails on these machines (cgroup v1 hybrid mode).
pub const RUNC: Package = Package {
    name: "runc",
    provides: "/usr/sbin/runc",
};
/// The DNS server tests/image.rs resolves ZooKeeper's name through: the binary alone, without
/// the `dnsmasq` package's system service that would hold port 53.
pub const DNSMASQ: Package = Package {
    name: "dnsmasq-base",
    provides: "/usr/sbin/dnsmasq",
};
/// kubectl, for `kubectl kustomize rbac/` (the chart's checkers).
pub const KUBERNETES_CLIENT: Package = Package {
    name: "kubernetes-client",
    provides: "/usr/bin/kubectl",
};
/// promtool, for the chart's alert rules and port-sync's /metrics. Installing the package
/// starts no server where no init system runs (containers, CI) or where policy-rc.d forbids it.
pub const PROMETHEUS: Package = Package {
    name: "prometheus",
    provides: "/usr/bin/promtool",
};
/// Makes the Debian root file system the stand-in `flink` and `zookeeper` images are built on
/// (fixtures::stand_in_images, tests/pods.rs).
pub const DEBOOTSTRAP: Package = Package {
    name: "debootstrap",
    provides: "/usr/sbin/debootstrap",
};
/// The CA bundle the image carries for port-sync's https JobManager client.
pub const CA_CERTIFICATES: Package = Package {
    name: "ca-certificates",
    provides: "/etc/ssl/certs/ca-certificates.crt",
};

/// Installs the missing ones of `packages` with one apt-get run.
pub fn debian_packages(packages: &[Package]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|package| !Path::new(package.provides).exists())
        .map(|package| package.name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        let mut command = if is_root() {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    static UPDATED: Once = Once::new();
    let mut update = Ok(());
    UPDATED.call_once(|| update = step("refresh Debian's package lists", apt(&["update", "-q"])));
    update?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    step(&format!("install {}", missing.join(" ")), apt(&install))
}

pub fn nextest() -> Result {
    let present = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if present {
        return Ok(());
    }
    let mut command = cargo();
    command.args(["install", "cargo-nextest", "--locked"]);
    step("install cargo-nextest", command)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Flink's jars and scripts from PyPI (about 330 MB, once: cached outside the source tree), here
/// rather than inside a test, so that the download shows its progress and no test's time limit
/// has to cover it.
pub fn flink() -> Result {
    let version = fixtures::flink::DEFAULT_VERSION;
    eprintln!("==> install Flink {version} into the cache (downloads only when missing)");
    let flink = fixtures::flink::Flink::install(version).map_err(|e| e.to_string())?;
    eprintln!("==> Flink {version} is at {}", flink.home().display());
    Ok(())
}
