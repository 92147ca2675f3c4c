//! The container image (docker/Dockerfile's final stage, built on this machine from static
//! binaries with podman, as `cargo xtask image` builds it), run as the Helm chart runs it:
//! read-only root filesystem with no writable tmpfs either, user 65532:65532, every capability
//! dropped, no privilege escalation. Real: the image, podman and runc, ZooKeeper, a DNS server
//! (dnsmasq) the test starts, kube's in-cluster configuration from a mounted service-account
//! directory. Stand-ins: the Kubernetes API server and the JobManager's REST answers.
//!
//! `--network host` lets the containers reach the servers on loopback. Name resolution is then
//! still the image's own: its resolv.conf is the one each test mounts, and dnsmasq's query log
//! shows the lookups arrive.

use e2e::Finished;
use e2e::kube_bed::{Bed, NAMESPACE, SERVICE, USER};
use fixtures::dns::DnsServer;
use fixtures::fake_jobmanager::{Answer, FakeJobManager};
use fixtures::image::{self, BIN_DIR, CA_BUNDLE, DEV_TAG, Image, Podman};
use fixtures::process::{Echo, Process};
use fixtures::zookeeper::{Ensemble, EnsembleConfig};
use kube_stand_in::ApiServerConfig;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// A warm build (the usual case: `cargo xtask image` or an earlier test built it) takes
/// seconds; a cold one, the static release build with LTO, a few minutes on two cores.
const BUILD_LIMIT: Duration = Duration::from_secs(220);

/// Bound on one container run; podman also has the container killed after this long.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The zk-wait binary's size target (README: stripped release binary <= 3 MB).
const ZK_WAIT_MAX_BYTES: u64 = 3_000_000;

/// Two static binaries and a CA bundle; a base image or a shell would show as far more.
const IMAGE_MAX_BYTES: u64 = 20_000_000;

/// A cluster's search list for a pod in namespace `flink`, as the kubelet writes it.
const CLUSTER_SEARCH: [&str; 3] = [
    "flink.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];

/// The headless-Service name the chart's zk-wait gets (`zk-0.zk-hs:2181`), and its full form.
const ZK_SHORT_NAME: &str = "zk-0.zk-hs";
const ZK_FULL_NAME: &str = "zk-0.zk-hs.flink.svc.cluster.local";

const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn build() -> (Podman, Image) {
    image::build(DEV_TAG, Echo::Quiet, BUILD_LIMIT).unwrap_or_else(|error| {
        panic!(
            "cannot build the image ({error})\nIf the static release build ran out of time, \
             run `cargo xtask image` once first: later builds are no-ops."
        )
    })
}

/// `podman run` with the chart's security settings and `extra` podman flags, then `command`
/// in the image. A name of its own lets the container be removed however the test ends.
fn run_in_image(podman: &Podman, extra: &[String], command: &[&str]) -> Finished {
    let name = format!(
        "flink-ha-sidecars-test-{}-{}",
        std::process::id(),
        next_container_number()
    );
    let _cleanup = RemoveOnDrop {
        podman,
        name: &name,
    };
    let mut run = podman.command();
    run.args(["run", "--rm", "--pull=never", "--name", &name])
        .args(["--read-only", "--read-only-tmpfs=false"])
        .args(["--user", "65532:65532", "--cap-drop=all"])
        .args(["--security-opt", "no-new-privileges"])
        .args(["--timeout", &RUN_LIMIT.as_secs().to_string()])
        .args(extra)
        .arg(DEV_TAG)
        .args(command);
    let mut process = Process::spawn("podman run", run, Echo::Quiet).expect("podman starts");
    let status = process.expect_exit(RUN_LIMIT + Duration::from_secs(30));
    Finished {
        code: status.code(),
        stdout: process.stdout(),
        stderr: process.stderr(),
    }
}

fn next_container_number() -> u64 {
    // Unique within a process; the pid in the name separates processes.
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

struct RemoveOnDrop<'a> {
    podman: &'a Podman,
    name: &'a str,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        // Gone already after a normal --rm run; this is for a run the test gave up on.
        let _ = self.podman.output(
            &["rm", "--force", "--ignore", "--time", "0", self.name],
            Duration::from_secs(30),
        );
    }
}

/// The summary table's row for `server` (the SERVER column comes first).
fn row<'a>(finished: &'a Finished, server: &str) -> &'a str {
    finished
        .stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(server))
        .unwrap_or_else(|| panic!("no row for {server}:\n{}", finished.said()))
}

fn world_readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_image_holds_two_static_binaries_a_ca_bundle_and_nsswitch_conf_and_runs_as_65532() {
    let (podman, image) = build();
    let files = image::list_files(&podman, DEV_TAG).unwrap();
    let mut regular: Vec<String> = files
        .iter()
        .filter(|file| file.mode.starts_with('-') && file.size > 0)
        .map(|file| format!("/{}", file.path))
        .collect();
    regular.sort();
    let mut expected = vec![
        format!("{BIN_DIR}/port-sync"),
        format!("{BIN_DIR}/zk-wait"),
        CA_BUNDLE.to_owned(),
        "/etc/nsswitch.conf".to_owned(),
    ];
    expected.sort();
    assert_eq!(regular, expected, "{files:#?}");
    for file in &files {
        assert_eq!(
            file.owner, "0/0",
            "owned by root, not writable by 65532: {file:?}"
        );
        let others_may_write = file.mode.as_bytes().get(8) == Some(&b'w');
        assert!(
            file.mode.starts_with('l') || !others_may_write,
            "world-writable: {file:?}"
        );
    }
    for name in image::BINARIES {
        let file = files
            .iter()
            .find(|file| file.path == format!("{}/{name}", &BIN_DIR[1..]))
            .unwrap();
        assert_eq!(file.mode, "-rwxr-xr-x", "{file:?}");
    }

    let config = podman
        .output(
            &[
                "image",
                "inspect",
                "--format",
                "{{.Config.User}} {{.Config.Env}}",
                DEV_TAG,
            ],
            RUN_LIMIT,
        )
        .unwrap();
    assert!(config.starts_with("65532:65532 "), "{config}");
    assert!(config.contains("PATH=/usr/local/bin"), "{config}");

    let sizes: Vec<String> = image
        .binaries
        .binaries
        .iter()
        .map(|(name, _, bytes)| format!("{name} {bytes} bytes"))
        .collect();
    // Shown with `--no-capture`; the numbers the README quotes.
    println!(
        "image {} {} bytes; {}",
        image.tag,
        image.size_bytes,
        sizes.join("; ")
    );
    let (_, _, zk_wait_bytes) = &image.binaries.binaries[0];
    assert!(
        *zk_wait_bytes <= ZK_WAIT_MAX_BYTES,
        "zk-wait is {zk_wait_bytes} bytes"
    );
    assert!(
        image.size_bytes <= IMAGE_MAX_BYTES,
        "the image is {} bytes",
        image.size_bytes
    );
}

#[test]
fn both_binaries_start_in_the_image_read_only_as_65532_without_capabilities_or_network() {
    let (podman, _image) = build();
    for (name, usage) in [
        ("zk-wait", "--zookeeper <CONNECT>"),
        ("port-sync", "--service <NAME>"),
    ] {
        let finished = run_in_image(&podman, &["--network=none".into()], &[name, "--help"]);
        assert_eq!(finished.code, Some(0), "{name}: {}", finished.said());
        assert!(
            finished.stdout.contains(usage),
            "{name}: {}",
            finished.said()
        );
    }
    // No shell: a command the image does not hold cannot start.
    let shell = run_in_image(&podman, &["--network=none".into()], &["sh", "-c", "true"]);
    assert_ne!(shell.code, Some(0), "{}", shell.said());
}

/// The chart's connect string names ZooKeeper by its headless-Service name, resolved through
/// the pod's resolv.conf with the cluster's search list and `ndots:5`. Here dnsmasq holds the
/// full name; its query log shows the static glibc resolver in the image really asked it, and
/// with dnsmasq gone the same run finds the name unresolvable. /etc/hosts is read first
/// (the image's nsswitch.conf): a name podman writes there never reaches dnsmasq.
#[test]
fn zk_wait_in_the_image_finds_zookeeper_by_its_cluster_dns_name() {
    let (podman, _image) = build();
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let zk_port = zookeeper.client_address(0).port();
    let dns = DnsServer::start("cluster.local", &[(ZK_FULL_NAME, Ipv4Addr::LOCALHOST)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    dns.write_resolv_conf(&resolv_conf, &CLUSTER_SEARCH)
        .unwrap();

    let by_dns = format!("{ZK_SHORT_NAME}:{zk_port}");
    let by_hosts_file = format!("zk-by-hosts-file:{zk_port}");
    let flags = vec![
        "--network=host".to_owned(),
        format!("--volume={}:/etc/resolv.conf:ro", resolv_conf.display()),
        "--add-host=zk-by-hosts-file:127.0.0.1".to_owned(),
    ];
    let zk_wait = [
        "zk-wait",
        "--zookeeper",
        &format!("{by_dns},{by_hosts_file}"),
        "--require",
        "all",
        "--once",
        // The suite runs this beside JVM tests on two shared cores: a resolver or ZooKeeper
        // starved for 2 s (the default) once failed this test, which is about where names are
        // looked up, not how fast.
        "--probe-timeout",
        "10s",
    ];

    let finished = run_in_image(&podman, &flags, &zk_wait);
    assert_eq!(
        finished.code,
        Some(0),
        "{}\n{}",
        finished.said(),
        dns.output()
    );
    for server in [&by_dns, &by_hosts_file] {
        let line = row(&finished, server);
        assert!(
            line.contains(&format!("127.0.0.1:{zk_port}")) && line.contains("ready (standalone)"),
            "{line}"
        );
    }
    let queries = dns.queries();
    assert!(
        queries.contains(&("A".to_owned(), ZK_FULL_NAME.to_owned())),
        "the image never asked dnsmasq for {ZK_FULL_NAME}: {queries:?}\n{}",
        dns.output()
    );
    assert!(
        !queries
            .iter()
            .any(|(_, name)| name.starts_with("zk-by-hosts-file")),
        "a name in /etc/hosts went to DNS: {queries:?}"
    );

    drop(dns);
    let without_dns = run_in_image(&podman, &flags, &zk_wait);
    assert_eq!(without_dns.code, Some(1), "{}", without_dns.said());
    assert!(
        row(&without_dns, &by_dns).contains("unresolvable"),
        "{}",
        without_dns.said()
    );
    assert!(
        row(&without_dns, &by_hosts_file).contains("ready (standalone)"),
        "{}",
        without_dns.said()
    );
}

/// In a pod port-sync finds the API server through `KUBERNETES_SERVICE_HOST/PORT` and the
/// mounted service-account directory (token, ca.crt, namespace), as kube's in-cluster
/// configuration reads them; no kubeconfig. The directory is mounted read-only, as the kubelet
/// mounts it.
#[test]
fn port_sync_in_the_image_syncs_the_service_with_the_mounted_service_account() {
    let (podman, _image) = build();
    let bed = Bed::new(ApiServerConfig::default());
    let jobmanager = FakeJobManager::start(Answer::ports(41000, 42000));
    let service_account = tempfile::tempdir().unwrap();
    let token = service_account.path().join("token");
    bed.api
        .rotate_token(&token, USER, Duration::from_secs(3600))
        .unwrap();
    std::fs::write(service_account.path().join("ca.crt"), bed.api.ca_pem()).unwrap();
    std::fs::write(service_account.path().join("namespace"), NAMESPACE).unwrap();
    for file in ["token", "ca.crt", "namespace"] {
        world_readable(&service_account.path().join(file), 0o644);
    }
    world_readable(service_account.path(), 0o755);

    let flags = vec![
        "--network=host".to_owned(),
        format!(
            "--volume={}:{SERVICE_ACCOUNT_DIR}:ro",
            service_account.path().display()
        ),
        "--env=KUBERNETES_SERVICE_HOST=127.0.0.1".to_owned(),
        format!("--env=KUBERNETES_SERVICE_PORT={}", bed.api.port()),
    ];
    let port_sync = [
        "port-sync",
        "--service",
        SERVICE,
        "--jobmanager-url",
        &jobmanager.url(),
        "--port",
        "rpc=jobmanager.rpc.port",
        "--port",
        "blob=blob.server.port",
        "--once",
    ];
    let finished = run_in_image(&podman, &flags, &port_sync);
    assert_eq!(finished.code, Some(0), "{}", finished.said());
    assert!(bed.holds(41000, 42000), "{}", finished.said());
    let patches = bed.patch_requests();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].identity.as_deref(), Some(USER), "{patches:?}");
}
