//! The chart's rendered pods in real containers (issue 14): the chart rendered with the real
//! Helm library into the API stand-in, each pod of it run by podman from the stand-in images
//! (fixtures::stand_in_images) with exactly its rendered securityContext and volumes
//! (fixtures::pods). `cargo xtask test` builds the images before the tests; here the build only
//! finds them (a cold build outlasts a test's time limit).

use fixtures::helm::{InstallRequest, install_library};
use fixtures::image::Podman;
use fixtures::pods::{self, PodIdentity};
use fixtures::process::Echo;
use fixtures::stand_in_images::{self, ZOOKEEPER_UID};
use fixtures::zookeeper::four_letter_word;
use kube_stand_in::{ApiServer, ApiServerConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "flink";
const RELEASE: &str = "demo";
const ZOOKEEPER: &str = "demo-flink-ha-zookeeper";
const HEADLESS: &str = "demo-flink-ha-zookeeper-headless";
/// What a container's log must never say: a write the read-only root or a user refused.
const REFUSED_WRITES: [&str; 2] = ["Read-only file system", "Permission denied"];

/// Containers and the network of one test, removed when it ends (also on panic).
struct Pods<'a> {
    podman: &'a Podman,
    network: String,
    containers: Vec<String>,
}

impl<'a> Pods<'a> {
    /// A podman network of this test's own, and the addresses its pods get (from .10 on).
    fn new(podman: &'a Podman) -> (Pods<'a>, String) {
        let network = format!("flink-ha-pods-{}", std::process::id());
        podman
            .output(&["network", "create", &network], Duration::from_secs(60))
            .expect("podman creates a network");
        let pods = Pods {
            podman,
            network: network.clone(),
            containers: Vec::new(),
        };
        let subnet = podman
            .output(
                &[
                    "network",
                    "inspect",
                    &network,
                    "--format",
                    "{{range .Subnets}}{{.Subnet}}{{end}}",
                ],
                Duration::from_secs(60),
            )
            .expect("podman inspects the network");
        // 10.89.N.0/24 -> 10.89.N.
        let prefix = subnet
            .trim()
            .rsplit_once('.')
            .map(|(prefix, _)| prefix.to_owned())
            .unwrap_or_else(|| panic!("no IPv4 subnet in {subnet:?}"));
        (pods, prefix)
    }

    fn run(&mut self, name: &str, args: &[String]) {
        let mut all = vec![
            "run".to_owned(),
            "--detach".to_owned(),
            format!("--name={name}"),
        ];
        all.extend(args.iter().cloned());
        let borrowed: Vec<&str> = all.iter().map(String::as_str).collect();
        self.containers.push(name.to_owned());
        self.podman
            .output(&borrowed, Duration::from_secs(120))
            .unwrap_or_else(|error| panic!("podman run {name}: {error}"));
    }

    fn logs(&self, name: &str) -> String {
        let output = self
            .podman
            .command()
            .args(["logs", name])
            .output()
            .expect("podman logs runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The container's main process as the host's /proc sees it: `Uid:` and `Gid:` lines.
    fn process_ids(&self, name: &str) -> String {
        let pid = self
            .podman
            .output(
                &["inspect", "--format", "{{.State.Pid}}", name],
                Duration::from_secs(60),
            )
            .expect("podman inspects the container");
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
            .expect("the container's process is running");
        status
            .lines()
            .filter(|line| line.starts_with("Uid:") || line.starts_with("Gid:"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `podman exec NAME ARGS`: its exit success and what it printed.
    fn exec(&self, name: &str, args: &[&str]) -> (bool, String) {
        let output = self
            .podman
            .command()
            .args(["exec", name])
            .args(args)
            .output()
            .expect("podman exec runs");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        for name in &self.containers {
            let _ = self
                .podman
                .command()
                .args(["rm", "--force", "--volumes", "--time=5", name])
                .output();
        }
        let _ = self
            .podman
            .command()
            .args(["network", "rm", "--force", &self.network])
            .output();
    }
}

/// The chart rendered with default values but the stand-in images.
fn render(images: &stand_in_images::StandInImages) -> ApiServer {
    let api = ApiServer::start(ApiServerConfig::default()).expect("the API stand-in starts");
    let (zookeeper_repository, zookeeper_tag) = images
        .zookeeper
        .rsplit_once(':')
        .expect("the image has a tag");
    let (flink_repository, flink_tag) = images.flink.rsplit_once(':').expect("a tag");
    let values = json!({
        "image": {"repository": flink_repository, "tag": flink_tag},
        "zookeeper": {"image": {"repository": zookeeper_repository, "tag": zookeeper_tag}},
    });
    install_library()
        .expect("helm-sdkpy installs")
        .install(
            &api,
            &InstallRequest {
                chart: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/flink-ha"),
                release: RELEASE.to_owned(),
                namespace: NAMESPACE.to_owned(),
                values,
            },
        )
        .unwrap_or_else(|error| panic!("helm install failed: {error}"));
    api
}

fn config_maps(api: &ApiServer) -> BTreeMap<String, Value> {
    api.objects(NAMESPACE)
        .into_iter()
        .filter(|object| object["kind"] == "ConfigMap")
        .map(|object| {
            (
                object["metadata"]["name"].as_str().unwrap().to_owned(),
                object,
            )
        })
        .collect()
}

#[test]
fn zookeeper_pods_form_a_quorum_as_uid_1000_with_a_read_only_root() {
    let podman = Podman::new().expect("podman is installed");
    let images = stand_in_images::build(&podman, &Echo::Prefixed("images: ".into()))
        .expect("the stand-in images build");
    let api = render(&images);
    let statefulset = api
        .get_object("apps/v1", "StatefulSet", NAMESPACE, ZOOKEEPER)
        .expect("the chart renders the ZooKeeper StatefulSet");
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap() as usize;
    let pod_spec = &statefulset["spec"]["template"]["spec"];
    let config_maps = config_maps(&api);
    let claim_templates = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    let (mut pods, prefix) = Pods::new(&podman);
    let members: Vec<(String, String)> = (0..replicas)
        .map(|ordinal| {
            (
                format!("{ZOOKEEPER}-{ordinal}"),
                format!("{prefix}.{}", 10 + ordinal),
            )
        })
        .collect();
    // What the cluster DNS would answer for the headless Service's per-pod names.
    let hosts: Vec<String> = members
        .iter()
        .map(|(name, ip)| {
            format!("--add-host={name}.{HEADLESS}.{NAMESPACE}.svc.cluster.local:{ip}")
        })
        .collect();
    let volumes_root = tempfile::tempdir().unwrap();
    for (name, ip) in &members {
        let volume_dirs = pods::make_volumes(
            pod_spec,
            &claim_templates,
            &config_maps,
            &volumes_root.path().join(name),
        )
        .expect("the pod's volumes are made");
        let identity = PodIdentity {
            name: name.clone(),
            namespace: NAMESPACE.to_owned(),
            ip: ip.clone(),
        };
        let container = &pod_spec["containers"][0];
        let mut args = vec![
            format!("--network={}", pods.network),
            format!("--ip={ip}"),
            format!("--hostname={name}"),
        ];
        args.extend(hosts.iter().cloned());
        args.extend(
            pods::container_args(pod_spec, container, &identity, &volume_dirs)
                .unwrap_or_else(|error| panic!("the rendered pod translates: {error}")),
        );
        pods.run(name, &args);
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, ip) in &members {
        let address: SocketAddr = format!("{ip}:2181").parse().unwrap();
        loop {
            let answer =
                four_letter_word(address, "srvr", Duration::from_secs(2)).unwrap_or_default();
            if answer.contains("Mode: leader") || answer.contains("Mode: follower") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never served in the quorum; last srvr answer {answer:?}; its log:\n{}",
                pods.logs(name)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    let readiness: Vec<String> = pod_spec["containers"][0]["readinessProbe"]["exec"]["command"]
        .as_array()
        .expect("the chart gives ZooKeeper an exec readiness probe")
        .iter()
        .map(|word| word.as_str().unwrap().to_owned())
        .collect();
    let readiness: Vec<&str> = readiness.iter().map(String::as_str).collect();
    for (name, _) in &members {
        // The rendered readiness probe, run in the container as the kubelet would exec it.
        let (ready, said) = pods.exec(name, &readiness);
        assert!(
            ready,
            "{name}'s readiness probe fails while it serves: {said}"
        );
        let ids = pods.process_ids(name);
        let expected =
            format!("{ZOOKEEPER_UID}\t{ZOOKEEPER_UID}\t{ZOOKEEPER_UID}\t{ZOOKEEPER_UID}");
        assert!(
            ids.lines().all(|line| line.ends_with(&expected)),
            "{name} runs as uid/gid {ZOOKEEPER_UID}: {ids}"
        );
        let (wrote, said) = pods.exec(name, &["touch", "/written-to-the-root"]);
        assert!(
            !wrote && said.contains("Read-only file system"),
            "{name}'s root is read-only: {said}"
        );
        let (wrote, said) = pods.exec(name, &["touch", "/conf/written"]);
        assert!(
            !wrote,
            "{name}'s /conf (the ConfigMap) is read-only: {said}"
        );
        let log = pods.logs(name);
        for refused in REFUSED_WRITES {
            assert!(
                !log.contains(refused),
                "{name}'s log shows a refused write ({refused}):\n{log}"
            );
        }
        // The data it wrote is in its data volume, not in the image.
        let data = volumes_root.path().join(name).join("data");
        assert!(
            data.join("myid").exists() && data.join("version-2").exists(),
            "{name} wrote myid and its snapshots to its data volume"
        );
    }
}
