//! The chart's rendered pods in real containers (issue 14): the chart rendered with the real
//! Helm library into the API stand-in, each pod of it run by podman from the stand-in images
//! (fixtures::stand_in_images) with exactly its rendered securityContext and volumes
//! (fixtures::pods). `cargo xtask test` builds the images before the tests; here the build only
//! finds them (a cold build outlasts a test's time limit).

use fixtures::flink::{DEFAULT_VERSION, ExactlyOnce, Flink, StreamingJob, rest};
use fixtures::forwarder::{Forwarder, ForwarderConfig};
use fixtures::helm::{InstallRequest, install_library};
use fixtures::image::{DEV_TAG, Podman};
use fixtures::pods::{self, PodIdentity, VolumeInputs};
use fixtures::process::{Echo, Process};
use fixtures::stand_in_images::{self, ZOOKEEPER_UID};
use fixtures::zookeeper::four_letter_word;
use kube_stand_in::{ApiServer, ApiServerConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "flink";
const RELEASE: &str = "demo";
const ZOOKEEPER: &str = "demo-flink-ha-zookeeper";
const HEADLESS: &str = "demo-flink-ha-zookeeper-headless";
const JOBMANAGER: &str = "demo-flink-ha-jobmanager";
/// `zookeeper.replicas` of the default values.
const ZOOKEEPER_MEMBERS: usize = 3;
const TASKMANAGER: &str = "demo-flink-ha-taskmanager";
/// The chart's port-sync service account (`flink-ha.portSyncName`).
const SERVICE_ACCOUNT: &str = "demo-flink-ha-port-sync";
/// The sidecar image's USER (docker/Dockerfile, `sidecars.uid`).
const SIDECAR_UID: u32 = 65532;
/// The streaming job: numbers 1..JOB_COUNT at JOB_RATE a second into JOB_OUTPUT, in the
/// TaskManager pod's /tmp emptyDir.
const JOB_COUNT: u64 = 4000;
const JOB_RATE: u64 = 2000;
const JOB_OUTPUT: &str = "/tmp/count-to-n";
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

    /// The podman name of this test's container `name`: unique on the machine, so tests
    /// running at once (or a killed run's leftovers) never collide.
    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.network)
    }

    fn run(&mut self, name: &str, args: &[String]) {
        let container = self.container(name);
        let mut all = vec![
            "run".to_owned(),
            "--detach".to_owned(),
            format!("--name={container}"),
        ];
        all.extend(args.iter().cloned());
        let borrowed: Vec<&str> = all.iter().map(String::as_str).collect();
        self.containers.push(container);
        self.podman
            .output(&borrowed, Duration::from_secs(120))
            .unwrap_or_else(|error| panic!("podman run {name}: {error}"));
    }

    fn logs(&self, name: &str) -> String {
        let output = self
            .podman
            .command()
            .args(["logs", &self.container(name)])
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
                &[
                    "inspect",
                    "--format",
                    "{{.State.Pid}}",
                    &self.container(name),
                ],
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

    /// The container's exit code once it has exited; `None` while it runs.
    fn exit_code(&self, name: &str) -> Option<i32> {
        let state = self
            .podman
            .output(
                &[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.State.ExitCode}}",
                    &self.container(name),
                ],
                Duration::from_secs(60),
            )
            .expect("podman inspects the container");
        let (status, code) = state.trim().split_once(' ').expect("status and exit code");
        (status == "exited" || status == "stopped").then(|| code.parse().expect("a number"))
    }

    /// Waits up to `limit` for the container to exit; its exit code, `None` if it still runs.
    fn wait_exit(&self, name: &str, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.exit_code(name) {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `podman exec NAME ARGS`: its exit success and what it printed.
    fn exec(&self, name: &str, args: &[&str]) -> (bool, String) {
        let output = self
            .podman
            .command()
            .args(["exec", &self.container(name)])
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
        // One command for all: podman stops them in parallel. Containers that share a network
        // holder's namespace go first (the holder cannot be removed while they use it).
        for holders in [false, true] {
            let names: Vec<&String> = self
                .containers
                .iter()
                .filter(|name| name.ends_with("-network") == holders)
                .collect();
            if !names.is_empty() {
                let _ = self
                    .podman
                    .command()
                    .args(["rm", "--force", "--volumes", "--time=2"])
                    .args(names)
                    .output();
            }
        }
        let _ = self
            .podman
            .command()
            .args(["network", "rm", "--force", &self.network])
            .output();
    }
}

/// The chart rendered with default values but the stand-in images and our sidecar image.
fn render(images: &stand_in_images::StandInImages, api: &ApiServer) {
    let (zookeeper_repository, zookeeper_tag) = images
        .zookeeper
        .rsplit_once(':')
        .expect("the image has a tag");
    let (flink_repository, flink_tag) = images.flink.rsplit_once(':').expect("a tag");
    let (sidecar_repository, sidecar_tag) = DEV_TAG.rsplit_once(':').expect("a tag");
    let values = json!({
        "image": {"repository": flink_repository, "tag": flink_tag},
        "zookeeper": {"image": {"repository": zookeeper_repository, "tag": zookeeper_tag}},
        "sidecars": {"image": {"repository": sidecar_repository, "tag": sidecar_tag}},
    });
    install_library()
        .expect("helm-sdkpy installs")
        .install(
            api,
            &InstallRequest {
                chart: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/flink-ha"),
                release: RELEASE.to_owned(),
                namespace: NAMESPACE.to_owned(),
                values,
            },
        )
        .unwrap_or_else(|error| panic!("helm install failed: {error}"));
}

/// The rendered ConfigMaps, and `kube-root-ca.crt` as the cluster publishes it into every
/// namespace (the API server's CA, which the projected token volume carries).
fn config_maps(api: &ApiServer) -> BTreeMap<String, Value> {
    let mut maps: BTreeMap<String, Value> = api
        .objects(NAMESPACE)
        .into_iter()
        .filter(|object| object["kind"] == "ConfigMap")
        .map(|object| {
            (
                object["metadata"]["name"].as_str().unwrap().to_owned(),
                object,
            )
        })
        .collect();
    maps.insert(
        "kube-root-ca.crt".to_owned(),
        json!({"data": {"ca.crt": api.ca_pem()}}),
    );
    maps
}

/// The ZooKeeper StatefulSet's pods, each at its own address, with what the cluster DNS would
/// answer for the headless Service's per-pod names; returns (name, address) per member.
struct ZookeeperPods {
    members: Vec<(String, String)>,
    pod_spec: Value,
    claim_templates: Vec<Value>,
}

/// (pod name, address) of each of `replicas` members on the network `prefix`.
fn zookeeper_members(prefix: &str, replicas: usize) -> Vec<(String, String)> {
    (0..replicas)
        .map(|ordinal| {
            (
                format!("{ZOOKEEPER}-{ordinal}"),
                format!("{prefix}.{}", 10 + ordinal),
            )
        })
        .collect()
}

/// `--add-host` flags for every member's stable name.
fn zookeeper_host_flags(members: &[(String, String)]) -> Vec<String> {
    members
        .iter()
        .map(|(name, ip)| {
            format!("--add-host={name}.{HEADLESS}.{NAMESPACE}.svc.cluster.local:{ip}")
        })
        .collect()
}

impl ZookeeperPods {
    fn plan(api: &ApiServer, prefix: &str) -> ZookeeperPods {
        let statefulset = api
            .get_object("apps/v1", "StatefulSet", NAMESPACE, ZOOKEEPER)
            .expect("the chart renders the ZooKeeper StatefulSet");
        let replicas = statefulset["spec"]["replicas"].as_u64().unwrap() as usize;
        ZookeeperPods {
            members: zookeeper_members(prefix, replicas),
            pod_spec: statefulset["spec"]["template"]["spec"].clone(),
            claim_templates: statefulset["spec"]["volumeClaimTemplates"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn hosts(&self) -> Vec<String> {
        zookeeper_host_flags(&self.members)
    }

    fn start(&self, pods: &mut Pods, api: &ApiServer, volumes_root: &Path) {
        let claim_templates = &self.claim_templates;
        let config_maps = config_maps(api);
        let hosts = self.hosts();
        for (name, ip) in &self.members {
            let identity = PodIdentity {
                name: name.clone(),
                namespace: NAMESPACE.to_owned(),
                ip: ip.clone(),
            };
            let inputs = VolumeInputs {
                config_maps: &config_maps,
                service_account_token: None,
                pod: &identity,
            };
            let volume_dirs = pods::make_volumes(
                &self.pod_spec,
                claim_templates,
                &inputs,
                &volumes_root.join(name),
            )
            .expect("the pod's volumes are made");
            let container = &self.pod_spec["containers"][0];
            let mut args = vec![
                format!("--network={}", pods.network),
                format!("--ip={ip}"),
                format!("--hostname={name}"),
            ];
            args.extend(hosts.iter().cloned());
            args.extend(kubelet_env(api));
            args.extend(
                pods::container_args(&self.pod_spec, container, &identity, &volume_dirs)
                    .unwrap_or_else(|error| panic!("the rendered pod translates: {error}")),
            );
            pods.run(name, &args);
        }
    }

    /// Waits until every member serves as leader or follower.
    fn wait_quorum(&self, pods: &Pods) {
        let deadline = Instant::now() + Duration::from_secs(120);
        for (name, ip) in &self.members {
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
    }
}

/// What the kubelet puts into every container's environment whatever the pod spec says: where
/// the API server is (its Service's address; here the stand-in on the host's address on the
/// pods' network).
fn kubelet_env(api: &ApiServer) -> Vec<String> {
    let url = api.url();
    let authority = url.trim_start_matches("https://");
    let (host, port) = authority.rsplit_once(':').expect("host:port");
    vec![
        format!("--env=KUBERNETES_SERVICE_HOST={host}"),
        format!("--env=KUBERNETES_SERVICE_PORT={port}"),
    ]
}

/// Asserts that no container's log shows a write refused.
fn assert_no_refused_writes(pods: &Pods, name: &str) {
    let log = pods.logs(name);
    for refused in REFUSED_WRITES {
        assert!(
            !log.contains(refused),
            "{name}'s log shows a refused write ({refused}):\n{log}"
        );
    }
}

fn assert_runs_as(pods: &Pods, name: &str, uid: u32) {
    let ids = pods.process_ids(name);
    let expected = format!("{uid}\t{uid}\t{uid}\t{uid}");
    assert!(
        ids.lines().all(|line| line.ends_with(&expected)),
        "{name} runs as uid/gid {uid}: {ids}"
    );
}

#[test]
fn zookeeper_pods_form_a_quorum_as_uid_1000_with_a_read_only_root() {
    let podman = Podman::new().expect("podman is installed");
    let images = stand_in_images::build(&podman, &Echo::Prefixed("images: ".into()))
        .expect("the stand-in images build");
    let api = ApiServer::start(ApiServerConfig::default()).expect("the API stand-in starts");
    render(&images, &api);
    let (mut pods, prefix) = Pods::new(&podman);
    let zookeeper = ZookeeperPods::plan(&api, &prefix);
    let volumes_root = tempfile::tempdir().unwrap();
    zookeeper.start(&mut pods, &api, volumes_root.path());
    zookeeper.wait_quorum(&pods);

    let readiness: Vec<String> =
        zookeeper.pod_spec["containers"][0]["readinessProbe"]["exec"]["command"]
            .as_array()
            .expect("the chart gives ZooKeeper an exec readiness probe")
            .iter()
            .map(|word| word.as_str().unwrap().to_owned())
            .collect();
    let readiness: Vec<&str> = readiness.iter().map(String::as_str).collect();
    for (name, _) in &zookeeper.members {
        // The rendered readiness probe, run in the container as the kubelet would exec it.
        let (ready, said) = pods.exec(name, &readiness);
        assert!(
            ready,
            "{name}'s readiness probe fails while it serves: {said}"
        );
        assert_runs_as(&pods, name, ZOOKEEPER_UID);
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
        assert_no_refused_writes(&pods, name);
        // The data it wrote is in its data volume, not in the image.
        let data = volumes_root.path().join(name).join("data");
        assert!(
            data.join("myid").exists() && data.join("version-2").exists(),
            "{name} wrote myid and its snapshots to its data volume"
        );
    }
}

/// One pod of a Deployment: a network holder at the pod's address (the pause container's
/// role; the Flink stand-in image sleeping), its init containers run to completion in turn,
/// then its containers, all in the holder's network namespace.
struct FlinkPod<'a> {
    name: String,
    identity: PodIdentity,
    pod_spec: &'a Value,
    volume_dirs: BTreeMap<String, PathBuf>,
}

impl<'a> FlinkPod<'a> {
    /// Starts the pod's network holder: the pod's address exists from here on (and the
    /// network's bridge on the host, once its first container runs).
    fn start_network(
        pods: &mut Pods,
        holder_image: &str,
        name: &str,
        ip: &str,
        hosts: &[String],
    ) -> PodIdentity {
        let mut args = vec![
            format!("--network={}", pods.network),
            format!("--ip={ip}"),
            format!("--hostname={name}"),
        ];
        args.extend(hosts.iter().cloned());
        args.extend([
            "--entrypoint=[\"sleep\",\"infinity\"]".to_owned(),
            holder_image.to_owned(),
        ]);
        pods.run(&format!("{name}-network"), &args);
        PodIdentity {
            name: name.to_owned(),
            namespace: NAMESPACE.to_owned(),
            ip: ip.to_owned(),
        }
    }

    /// The pod on the network `identity` holds, with its volumes made.
    fn with_volumes(
        identity: PodIdentity,
        pod_spec: &'a Value,
        service_account_token: Option<&str>,
        config_maps: &BTreeMap<String, Value>,
        volumes_root: &Path,
    ) -> FlinkPod<'a> {
        let inputs = VolumeInputs {
            config_maps,
            service_account_token,
            pod: &identity,
        };
        let volume_dirs =
            pods::make_volumes(pod_spec, &[], &inputs, &volumes_root.join(&identity.name))
                .expect("the pod's volumes are made");
        FlinkPod {
            name: identity.name.clone(),
            identity,
            pod_spec,
            volume_dirs,
        }
    }

    /// Starts container `container` of the pod (`initContainers` or `containers`) detached;
    /// returns its container name.
    fn start(&self, pods: &mut Pods, api: &ApiServer, list: &str, container: &str) -> String {
        let spec = self.pod_spec[list]
            .as_array()
            .and_then(|containers| containers.iter().find(|c| c["name"] == container))
            .unwrap_or_else(|| panic!("the pod has no {list} entry {container}"));
        let mut args = vec![format!(
            "--network=container:{}",
            pods.container(&format!("{}-network", self.name))
        )];
        args.extend(kubelet_env(api));
        args.extend(
            pods::container_args(self.pod_spec, spec, &self.identity, &self.volume_dirs)
                .unwrap_or_else(|error| {
                    panic!("{}: the rendered pod translates: {error}", self.name)
                }),
        );
        let name = format!("{}-{container}", self.name);
        pods.run(&name, &args);
        name
    }
}

fn deployment_pod_spec(api: &ApiServer, name: &str) -> (Value, usize) {
    let deployment = api
        .get_object("apps/v1", "Deployment", NAMESPACE, name)
        .unwrap_or_else(|| panic!("the chart renders the Deployment {name}"));
    (
        deployment["spec"]["template"]["spec"].clone(),
        deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize,
    )
}

/// The whole release of the default values in containers: the JobManager pod's zk-wait holds
/// while no ZooKeeper serves and lets it start once a majority does; the JobManager runs as
/// uid 9999 on a read-only root; port-sync syncs the Service through its projected token; the
/// TaskManager pods register through the Service (the forwarder as kube-proxy); a streaming
/// job submitted through the Service finishes and its output is exactly-once.
///
/// Real: the rendered pod specs, podman with their securityContext and volumes, ZooKeeper,
/// Flink 2.3, zk-wait and port-sync from the project's image. Stand-ins: the images (built
/// here, crates/fixtures/src/stand_in/README.md), the API server, /etc/hosts for cluster DNS,
/// the forwarder for kube-proxy.
#[test]
fn the_release_runs_in_containers_zk_wait_holds_port_sync_syncs_and_a_job_finishes() {
    let started = Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let podman = Podman::new().expect("podman is installed");
    let images = stand_in_images::build(&podman, &Echo::Prefixed("images: ".into()))
        .expect("the stand-in images build");
    let (mut pods, prefix) = Pods::new(&podman);
    // The host's address on the pods' network: where the API stand-in and the "Service IP"
    // (the forwarder) listen. It exists once the network's first container runs.
    let gateway: IpAddr = format!("{prefix}.1").parse().unwrap();
    // The pods' /etc/hosts is fixed when the JobManager pod's holder starts, before the chart
    // is rendered (the API stand-in listens on an address that exists only from then on).
    let mut hosts = zookeeper_host_flags(&zookeeper_members(&prefix, ZOOKEEPER_MEMBERS));
    for service_name in [
        JOBMANAGER.to_owned(),
        format!("{JOBMANAGER}.{NAMESPACE}.svc.cluster.local"),
    ] {
        hosts.push(format!("--add-host={service_name}:{gateway}"));
    }
    let jobmanager_ip = format!("{prefix}.20");
    let jobmanager_identity = FlinkPod::start_network(
        &mut pods,
        &images.flink,
        "jobmanager-0",
        &jobmanager_ip,
        &hosts,
    );
    let api = Arc::new(
        ApiServer::start(
            ApiServerConfig::default()
                .address(gateway)
                .namespace(NAMESPACE)
                .with_role_copy(JOBMANAGER, SERVICE_ACCOUNT),
        )
        .expect("the API stand-in starts"),
    );
    render(&images, &api);
    let config_maps = config_maps(&api);
    let zookeeper = ZookeeperPods::plan(&api, &prefix);
    assert_eq!(
        zookeeper.hosts(),
        zookeeper_host_flags(&zookeeper_members(&prefix, ZOOKEEPER_MEMBERS)),
        "the chart renders {ZOOKEEPER_MEMBERS} ZooKeeper members"
    );
    let volumes_root = tempfile::tempdir().unwrap();

    let (jobmanager_spec, _) = deployment_pod_spec(&api, JOBMANAGER);
    assert_eq!(
        jobmanager_spec["serviceAccountName"], SERVICE_ACCOUNT,
        "the Role copy of this test names the chart's service account"
    );
    let token = api.issue_token(
        &format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"),
        Duration::from_secs(3600),
    );
    let jobmanager = FlinkPod::with_volumes(
        jobmanager_identity,
        &jobmanager_spec,
        Some(&token),
        &config_maps,
        volumes_root.path(),
    );

    // 1. zk-wait first, before any ZooKeeper member exists: it must hold.
    let zk_wait = jobmanager.start(&mut pods, &api, "initContainers", "zk-wait");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        pods.exit_code(&zk_wait),
        None,
        "zk-wait must hold while no ZooKeeper serves; its log:\n{}",
        pods.logs(&zk_wait)
    );
    progress("zk-wait holds while no ZooKeeper serves; starting the ZooKeeper pods");
    zookeeper.start(&mut pods, &api, volumes_root.path());
    let code = pods.wait_exit(&zk_wait, Duration::from_secs(180));
    progress("zk-wait let the JobManager go");
    assert_eq!(
        code,
        Some(0),
        "zk-wait releases the JobManager once a majority serves; its log:\n{}",
        pods.logs(&zk_wait)
    );
    let serving = zookeeper
        .members
        .iter()
        .filter(|(_, ip)| {
            four_letter_word(
                format!("{ip}:2181").parse().unwrap(),
                "srvr",
                Duration::from_secs(2),
            )
            .is_ok_and(|answer| answer.contains("Mode: "))
        })
        .count();
    assert!(
        serving * 2 > zookeeper.members.len(),
        "zk-wait let go with {serving} of {} members serving",
        zookeeper.members.len()
    );

    // 2. The JobManager and port-sync, with the Service followed by the forwarder.
    let flink = jobmanager.start(&mut pods, &api, "containers", "jobmanager");
    let port_sync = jobmanager.start(&mut pods, &api, "containers", "port-sync");
    let followed = Arc::clone(&api);
    let _forwarder = Forwarder::start(
        ForwarderConfig::new(gateway, jobmanager_ip.parse().unwrap()),
        Box::new(move || followed.get_service(NAMESPACE, JOBMANAGER)),
    )
    .expect("the forwarder starts");
    let rest: SocketAddr = format!("{jobmanager_ip}:8081").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let live = loop {
        let config = rest::get(rest, "/jobmanager/config", Duration::from_secs(5))
            .ok()
            .filter(|response| response.status == 200)
            .and_then(|response| rest::parse_config_entries(&response.body).ok());
        let ports = config.as_ref().and_then(|config| {
            Some((
                config.get("jobmanager.rpc.port")?.parse::<i64>().ok()?,
                config.get("blob.server.port")?.parse::<i64>().ok()?,
            ))
        });
        if let Some((rpc, blob)) = ports {
            let service = api.get_service(NAMESPACE, JOBMANAGER).unwrap_or_default();
            let exposed = |name: &str| {
                service["spec"]["ports"]
                    .as_array()
                    .and_then(|ports| ports.iter().find(|port| port["name"] == name))
                    .map(|port| (port["port"].as_i64(), port["targetPort"].as_i64()))
            };
            if exposed("rpc") == Some((Some(rpc), Some(rpc)))
                && exposed("blob") == Some((Some(blob), Some(blob)))
            {
                break (rpc, blob);
            }
        }
        assert!(
            Instant::now() < deadline,
            "port-sync never exposed the live ports on the Service ({:?}); port-sync's log:\n{}\n\
             the JobManager's log:\n{}",
            api.get_service(NAMESPACE, JOBMANAGER),
            pods.logs(&port_sync),
            pods.logs(&flink)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_ne!(live.0, 6123, "the RPC port is Flink's random one");
    progress(&format!(
        "port-sync exposed the live ports (rpc {}, blob {})",
        live.0, live.1
    ));

    // 3. The TaskManagers, each with its own zk-wait, register through the Service.
    let (taskmanager_spec, replicas) = deployment_pod_spec(&api, TASKMANAGER);
    let mut taskmanagers = Vec::new();
    for index in 0..replicas {
        let identity = FlinkPod::start_network(
            &mut pods,
            &images.flink,
            &format!("taskmanager-{index}"),
            &format!("{prefix}.{}", 30 + index),
            &hosts,
        );
        let pod = FlinkPod::with_volumes(
            identity,
            &taskmanager_spec,
            None,
            &config_maps,
            volumes_root.path(),
        );
        let zk_wait = pod.start(&mut pods, &api, "initContainers", "zk-wait");
        assert_eq!(
            pods.wait_exit(&zk_wait, Duration::from_secs(60)),
            Some(0),
            "the TaskManager's zk-wait: {}",
            pods.logs(&zk_wait)
        );
        let container = pod.start(&mut pods, &api, "containers", "taskmanager");
        taskmanagers.push((pod.name.clone(), container));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let registered = rest::get(rest, "/taskmanagers", Duration::from_secs(5))
            .ok()
            .and_then(|response| serde_json::from_str::<Value>(&response.body).ok())
            .and_then(|body| body["taskmanagers"].as_array().map(Vec::len))
            .unwrap_or(0);
        if registered == replicas {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{registered} of {replicas} TaskManagers registered; the first one's log:\n{}",
            taskmanagers
                .first()
                .map(|(_, container)| pods.logs(container))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    progress(&format!(
        "{replicas} TaskManagers registered through the Service"
    ));

    // 4. A streaming job, submitted to the pod's REST port (the Service's `rest` entry names its
    // targetPort, which kube-proxy resolves from the EndpointSlice and the forwarder does not);
    // its jar reaches the TaskManagers through the blob port port-sync exposed.
    let flink_install = Flink::install(DEFAULT_VERSION).expect("Flink is installed");
    let work = tempfile::tempdir().unwrap();
    let job = StreamingJob::compile(
        &flink_install,
        work.path(),
        JOB_COUNT,
        JOB_RATE,
        &work.path().join("unused-output"),
    )
    .expect("the job compiles");
    let mut client = Command::new(flink_install.home().join("bin").join("flink"));
    for variable in ["FLINK_CONF_DIR", "FLINK_HOME", "FLINK_LOG_DIR", "JVM_ARGS"] {
        client.env_remove(variable);
    }
    client
        .args(["run", "--detached", "-m", &rest.to_string()])
        .args(["--class", &job.application().class])
        .arg(&job.jar)
        .args([
            JOB_COUNT.to_string(),
            JOB_RATE.to_string(),
            format!("file://{JOB_OUTPUT}"),
        ])
        .env("FLINK_CONF_DIR", flink_install.home().join("conf"))
        .env("FLINK_LOG_DIR", work.path())
        .current_dir(work.path());
    let mut submit = Process::spawn("flink run", client, Echo::Quiet).expect("flink run starts");
    let status = submit
        .wait_timeout(Duration::from_secs(180))
        .expect("flink run ends");
    assert!(
        status.is_some_and(|status| status.success()),
        "flink run failed ({status:?}):\n{}",
        submit.output()
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let overview = rest::get(rest, "/jobs/overview", Duration::from_secs(5))
            .map(|response| response.body)
            .unwrap_or_default();
        if overview.contains("\"FINISHED\"") {
            break;
        }
        assert!(
            !overview.contains("\"FAILED\"") && Instant::now() < deadline,
            "the job did not finish: {overview}\nthe JobManager's log:\n{}",
            pods.logs(&flink)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    progress("the job finished");
    // The sink ran in one TaskManager's pod; its output is in that pod's /tmp emptyDir.
    let outputs: Vec<ExactlyOnce> = taskmanagers
        .iter()
        .filter_map(|(pod, _)| {
            let output = volumes_root
                .path()
                .join(pod)
                .join("tmp")
                .join(JOB_OUTPUT.trim_start_matches("/tmp/"));
            output.exists().then(|| {
                StreamingJob {
                    output,
                    ..job.clone()
                }
                .judge_output()
                .expect("the output is readable")
            })
        })
        .collect();
    assert_eq!(
        outputs.len(),
        1,
        "one TaskManager wrote the output: {outputs:?}"
    );
    assert!(
        outputs[0].holds(),
        "the output holds 1..{JOB_COUNT} exactly once: {:?}",
        outputs[0]
    );

    // 5. Who ran, on what root, writing where.
    assert_runs_as(&pods, &flink, stand_in_images::FLINK_UID);
    assert_runs_as(&pods, &port_sync, SIDECAR_UID);
    for (_, container) in &taskmanagers {
        assert_runs_as(&pods, container, stand_in_images::FLINK_UID);
    }
    let (wrote, said) = pods.exec(&flink, &["touch", "/opt/flink/written"]);
    assert!(
        !wrote && said.contains("Read-only file system"),
        "the JobManager's root is read-only: {said}"
    );
    let mut containers = vec![zk_wait, flink, port_sync];
    containers.extend(taskmanagers.into_iter().map(|(_, container)| container));
    for container in &containers {
        assert_no_refused_writes(&pods, container);
    }
}
