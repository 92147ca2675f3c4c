//! A real DNS server for tests: Debian's dnsmasq (package `dnsmasq-base`: the binary, without a
//! system service that would take port 53 for good), answering a few fixed records and logging
//! every query, so that a test can show a name was resolved through DNS and not /etc/hosts.
//!
//! Each server listens on a loopback address of its own (127.53.x.y; all of 127/8 is local on
//! Linux) at port 53: resolv.conf names a server by address only, so the port cannot be another.
//! Binding port 53 needs root (CI and `cargo xtask test` run as root).

use crate::process::{Echo, Process};
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// dnsmasq reads its options, binds and logs "started" within milliseconds; a second is slack.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Attempts at a free loopback address before giving up (another test may hold one).
const ADDRESS_ATTEMPTS: usize = 5;

pub struct DnsServer {
    address: Ipv4Addr,
    process: Process,
}

impl DnsServer {
    /// Starts dnsmasq as the authority for `zone` (e.g. `cluster.local`), answering each
    /// `(name, address)` in it with an A record, as cluster DNS does: an empty answer for AAAA
    /// of such a name, NXDOMAIN for a name it does not hold (so a resolver walks its search
    /// list on). It forwards nothing and reads no /etc/hosts or /etc/dnsmasq.conf. Returns
    /// once it listens.
    pub fn start(zone: &str, records: &[(&str, Ipv4Addr)]) -> io::Result<DnsServer> {
        check_installed()?;
        let mut last_failure = String::new();
        for _ in 0..ADDRESS_ATTEMPTS {
            let address = Ipv4Addr::new(127, 53, fastrand::u8(1..255), fastrand::u8(1..255));
            let mut command = std::process::Command::new(DNSMASQ);
            command
                .arg("--keep-in-foreground")
                .arg("--log-facility=-")
                .arg("--log-queries")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--conf-file=/dev/null")
                .arg("--pid-file=")
                .arg("--bind-interfaces")
                .arg(format!("--listen-address={address}"))
                .arg("--port=53")
                // Drop root after binding; `nobody` exists on every Debian machine, dnsmasq's
                // own user only where the full `dnsmasq` package is installed.
                .arg("--user=nobody")
                .arg("--group=nogroup")
                .arg(format!("--local=/{zone}/"));
            for (name, ip) in records {
                command.arg(format!("--host-record={name},{ip}"));
            }
            let mut process = Process::spawn("dnsmasq", command, Echo::Quiet)?;
            let started = process.wait_for_line(START_LIMIT, |line| {
                line.contains("started, version") || line.contains("failed")
            });
            match started {
                Some(line) if line.text.contains("started, version") => {
                    return Ok(DnsServer { address, process });
                }
                _ => {
                    process.kill();
                    last_failure = process.output();
                    if !last_failure.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(io::Error::other(format!(
            "dnsmasq did not start (binding port 53 needs root); its output:\n{last_failure}"
        )))
    }

    /// The loopback address it answers on, port 53.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Every query so far as (record type, name), from dnsmasq's query log: e.g.
    /// `("A", "zk-0.zk-hs.flink.svc.cluster.local")`.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.process
            .lines()
            .into_iter()
            .filter_map(|line| {
                // dnsmasq[123]: query[A] zk-0.zk-hs.flink.svc.cluster.local from 127.0.0.1
                let (_, query) = line.text.split_once("query[")?;
                let (kind, rest) = query.split_once("] ")?;
                let name = rest.split_whitespace().next()?;
                Some((kind.to_owned(), name.to_owned()))
            })
            .collect()
    }

    /// Writes a resolv.conf that sends every lookup here, with a cluster's search list and
    /// `ndots:5` (what the kubelet writes into a pod), world-readable so that a container's
    /// non-root user can read it.
    pub fn write_resolv_conf(&self, path: &Path, search: &[&str]) -> io::Result<()> {
        let mut text = format!("nameserver {}\n", self.address);
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        text.push_str("options ndots:5\n");
        std::fs::write(path, text)?;
        set_mode(path, 0o644)
    }

    /// What dnsmasq printed, for failure messages.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

fn check_installed() -> io::Result<()> {
    if Path::new(DNSMASQ).exists() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{DNSMASQ} is missing: install Debian's dnsmasq-base \
                 (apt-get install dnsmasq-base), or run `cargo xtask test`, which does"
            ),
        ))
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
