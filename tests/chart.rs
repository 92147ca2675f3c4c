//! The Helm chart (helm/flink-ha) through the real Helm library (helm-sdkpy: Helm v4's Go code):
//! lint, and installs into the test bed's API stand-in with several value sets. The assertions
//! read back the objects Helm created and check the wiring: zk-wait's and port-sync's rendered
//! arguments parse with their own clap definitions and point at the rendered ZooKeeper and
//! JobManager Service; the Role names that Service and grants what rbac/role.yaml grants; every
//! container is hardened.

use e2e::network_policy::{Pod, admitted};
use fixtures::helm::{HelmLibrary, InstallRequest, Release, Severity, install_library};
use kube_stand_in::{ApiServer, ApiServerConfig};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const NAMESPACE: &str = "flink";
const RELEASE: &str = "demo";
/// "<release>-<chart>", the prefix of every object name.
const FULLNAME: &str = "demo-flink-ha";
const JOBMANAGER_SERVICE: &str = "demo-flink-ha-jobmanager";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/flink-ha")
}

fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn helm() -> &'static HelmLibrary {
    static LIBRARY: OnceLock<HelmLibrary> = OnceLock::new();
    LIBRARY.get_or_init(|| install_library().expect("helm-sdkpy installs into the cache"))
}

/// A release installed into a fresh stand-in, and what Helm said about it.
struct Installed {
    api: ApiServer,
    release: Release,
}

fn try_install(values: Value) -> std::io::Result<Installed> {
    let api = ApiServer::start(ApiServerConfig::default()).expect("the API stand-in starts");
    let release = helm().install(
        &api,
        &InstallRequest {
            chart: chart_dir(),
            release: RELEASE.to_owned(),
            namespace: NAMESPACE.to_owned(),
            values,
        },
    )?;
    Ok(Installed { api, release })
}

fn install(values: Value) -> Installed {
    try_install(values).unwrap_or_else(|error| panic!("helm install failed: {error}"))
}

impl Installed {
    fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        self.api.get_object(api_version, kind, NAMESPACE, name)
    }

    fn object(&self, api_version: &str, kind: &str, name: &str) -> Value {
        self.get(api_version, kind, name).unwrap_or_else(|| {
            panic!(
                "Helm created no {kind} {name}; it created: {:?}",
                self.created()
            )
        })
    }

    /// "Kind/name" of every object in the namespace.
    fn created(&self) -> BTreeSet<String> {
        self.api
            .objects(NAMESPACE)
            .iter()
            .map(|object| {
                format!(
                    "{}/{}",
                    object["kind"].as_str().unwrap_or("?"),
                    object["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.api
            .objects(NAMESPACE)
            .into_iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    fn deployment(&self, component: &str) -> Value {
        self.object("apps/v1", "Deployment", &format!("{FULLNAME}-{component}"))
    }

    fn pod_spec(&self, component: &str) -> Value {
        self.deployment(component)["spec"]["template"]["spec"].clone()
    }

    fn service(&self, name: &str) -> Value {
        self.object("v1", "Service", name)
    }

    /// The Flink configuration file the ConfigMap holds, parsed; and the file's name.
    fn flink_config(&self) -> (String, serde_json::Map<String, serde_json::Value>) {
        let config_map = self.object("v1", "ConfigMap", &format!("{FULLNAME}-config"));
        let data = config_map["data"]
            .as_object()
            .expect("the ConfigMap has data");
        let (file, text) = data
            .iter()
            .find(|(file, _)| *file == "config.yaml" || *file == "flink-conf.yaml")
            .expect("a Flink configuration file");
        let parsed = serde_saphyr::from_str(text.as_str().unwrap())
            .unwrap_or_else(|error| panic!("{file} is not YAML ({error}):\n{text}"));
        (file.clone(), parsed)
    }

    fn flink_setting(&self, key: &str) -> Option<String> {
        let (_, config) = self.flink_config();
        config.get(key).map(|value| match value {
            serde_json::Value::String(text) => text.clone(),
            other => serde_saphyr::to_string(other).unwrap().trim().to_owned(),
        })
    }

    /// The rendered hook objects (`helm test` pods): install renders but does not create them.
    fn hooks(&self) -> Vec<Value> {
        self.release
            .hooks
            .iter()
            .map(|hook| {
                let manifest = hook["manifest"].as_str().expect("a hook has a manifest");
                serde_saphyr::from_str(manifest).expect("a hook's manifest is YAML")
            })
            .collect()
    }

    fn test_pod(&self) -> Value {
        self.hooks()
            .into_iter()
            .find(|hook| hook["kind"] == "Pod")
            .expect("a helm test pod among the hooks")
    }
}

fn container<'a>(pod_spec: &'a Value, list: &str, name: &str) -> &'a Value {
    pod_spec[list]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry {name} in {pod_spec:#}"))
}

fn has_container(pod_spec: &Value, list: &str, name: &str) -> bool {
    pod_spec[list]
        .as_array()
        .is_some_and(|containers| containers.iter().any(|c| c["name"] == name))
}

/// The container's command line: command, then args.
fn argv(container: &Value) -> Vec<String> {
    let strings = |field: &str| -> Vec<String> {
        container[field]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|item| item.as_str().expect("a string").to_owned())
            .collect()
    };
    let mut line = strings("command");
    line.extend(strings("args"));
    line
}

fn parse_zk_wait(container: &Value) -> zk_wait::cli::Cli {
    let line = argv(container);
    assert_eq!(line[0], "zk-wait", "{container:#}");
    <zk_wait::cli::Cli as clap::Parser>::try_parse_from(&line)
        .unwrap_or_else(|error| panic!("zk-wait refuses {line:?}: {error}"))
}

fn parse_port_sync(container: &Value) -> port_sync::cli::Cli {
    let line = argv(container);
    assert_eq!(line[0], "port-sync", "{container:#}");
    port_sync::cli::Cli::try_parse_checked_from(&line)
        .unwrap_or_else(|error| panic!("port-sync refuses {line:?}: {error}"))
}

fn servers(cli: &zk_wait::cli::Cli) -> Vec<String> {
    cli.zookeeper
        .servers
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The in-chart ensemble's members, as the StatefulSet and headless Service name them.
fn in_chart_members() -> Vec<String> {
    (0..3)
        .map(|ordinal| {
            format!(
                "{FULLNAME}-zookeeper-{ordinal}.{FULLNAME}-zookeeper-headless.{NAMESPACE}.svc.cluster.local:2181"
            )
        })
        .collect()
}

fn port_mappings(cli: &port_sync::cli::Cli) -> Vec<(String, String)> {
    cli.ports
        .iter()
        .map(|mapping| (mapping.port_name.clone(), mapping.flink_key.clone()))
        .collect()
}

fn service_port_names(service: &Value) -> Vec<String> {
    service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_chart_lints_without_errors_or_warnings() {
    let report = helm().lint(&chart_dir()).expect("lint runs");
    let bad = report.at_least(Severity::Warning);
    assert!(bad.is_empty(), "lint findings: {bad:#?}");
    assert!(report.errors.is_empty(), "lint errors: {:#?}", report.raw);
}

#[test]
fn by_default_zk_wait_waits_for_the_rendered_ensemble_and_port_sync_syncs_the_rendered_service() {
    let installed = install(json!({}));
    let jobmanager = installed.pod_spec("jobmanager");

    // zk-wait: the in-chart ensemble's members, by the names the StatefulSet gives them.
    let zk_wait = parse_zk_wait(container(&jobmanager, "initContainers", "zk-wait"));
    assert_eq!(servers(&zk_wait), in_chart_members());
    assert_eq!(zk_wait.require, zk_wait::quorum::Requirement::Majority);
    assert!(
        !zk_wait.once,
        "the init container waits, it does not probe once"
    );
    let statefulset = installed.object("apps/v1", "StatefulSet", &format!("{FULLNAME}-zookeeper"));
    assert_eq!(statefulset["spec"]["replicas"], 3);
    assert_eq!(
        statefulset["spec"]["serviceName"],
        format!("{FULLNAME}-zookeeper-headless")
    );
    let headless = installed.service(&format!("{FULLNAME}-zookeeper-headless"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    // Flink uses the very same connect string.
    assert_eq!(
        installed.flink_setting("high-availability.zookeeper.quorum"),
        Some(servers(&zk_wait).join(","))
    );

    // port-sync: the created Service, its rpc and blob ports, the JobManager beside it.
    let port_sync = parse_port_sync(container(&jobmanager, "containers", "port-sync"));
    assert_eq!(port_sync.service, JOBMANAGER_SERVICE);
    let service = installed.service(&port_sync.service);
    assert_eq!(
        port_mappings(&port_sync),
        [
            ("rpc".to_owned(), "jobmanager.rpc.port".to_owned()),
            ("blob".to_owned(), "blob.server.port".to_owned()),
        ]
    );
    assert_eq!(service_port_names(&service), ["rpc", "blob", "rest"]);
    assert_eq!(port_sync.namespace, None, "the pod's own namespace");
    assert_eq!(port_sync.jobmanager_url.host(), "127.0.0.1");
    assert_eq!(
        port_sync.jobmanager_url.port().map(|port| port.to_string()),
        installed.flink_setting("rest.port")
    );
    assert_eq!(port_sync.listen, "0.0.0.0:8099".parse().unwrap());
    assert!(!port_sync.once && !port_sync.dry_run);

    // Flink advertises the Service, and binds the pinned ranges the Service starts from.
    assert_eq!(
        installed.flink_setting("jobmanager.rpc.address").as_deref(),
        Some(JOBMANAGER_SERVICE)
    );
    assert_eq!(
        installed.flink_setting("high-availability.type").as_deref(),
        Some("zookeeper")
    );
    assert_eq!(
        installed
            .flink_setting("high-availability.jobmanager.port")
            .as_deref(),
        Some("50100-50200")
    );
    assert_eq!(
        installed.flink_setting("blob.server.port").as_deref(),
        Some("50201-50300")
    );
    assert_eq!(
        installed
            .flink_setting("high-availability.cluster-id")
            .as_deref(),
        Some(FULLNAME)
    );
    let ports = &service["spec"]["ports"];
    assert_eq!(
        (&ports[0]["port"], &ports[0]["targetPort"]),
        (&json!(50100), &json!(50100))
    );
    assert_eq!(
        (&ports[1]["port"], &ports[1]["targetPort"]),
        (&json!(50201), &json!(50201))
    );
    assert_eq!(ports[2]["port"], 8081);

    // port-sync's probes: both on /healthz, so that a pending sync never takes the pod (and
    // with it the Service) away from the TaskManagers.
    let sidecar = container(&jobmanager, "containers", "port-sync");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(sidecar[probe]["httpGet"]["port"], "port-sync", "{probe}");
    }
    assert_eq!(sidecar["ports"][0]["containerPort"], 8099);

    // The TaskManagers wait for the same ensemble.
    let taskmanager = installed.pod_spec("taskmanager");
    let tm_zk_wait = parse_zk_wait(container(&taskmanager, "initContainers", "zk-wait"));
    assert_eq!(servers(&tm_zk_wait), in_chart_members());
    assert!(!has_container(&taskmanager, "containers", "port-sync"));
}

#[test]
fn the_role_names_the_created_service_and_only_port_sync_holds_a_token() {
    let installed = install(json!({}));
    let jobmanager = installed.pod_spec("jobmanager");
    let role = installed.object(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &format!("{FULLNAME}-port-sync"),
    );
    let names = &role["rules"][0]["resourceNames"];
    assert_eq!(names, &json!([JOBMANAGER_SERVICE]));
    installed.service(JOBMANAGER_SERVICE);

    let account = jobmanager["serviceAccountName"]
        .as_str()
        .expect("the JobManager has a ServiceAccount");
    installed.object("v1", "ServiceAccount", account);
    let binding = installed.object(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        &format!("{FULLNAME}-port-sync"),
    );
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
    );

    // No pod mounts a token for all its containers; port-sync alone gets one, projected.
    for component in ["jobmanager", "taskmanager"] {
        assert_eq!(
            installed.pod_spec(component)["automountServiceAccountToken"],
            false,
            "{component}"
        );
    }
    let statefulset = installed.object("apps/v1", "StatefulSet", &format!("{FULLNAME}-zookeeper"));
    assert_eq!(
        statefulset["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let token_mount = |c: &Value| {
        c["volumeMounts"].as_array().is_some_and(|mounts| {
            mounts
                .iter()
                .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        })
    };
    assert!(token_mount(container(
        &jobmanager,
        "containers",
        "port-sync"
    )));
    assert!(!token_mount(container(
        &jobmanager,
        "containers",
        "jobmanager"
    )));
    let token_volume = jobmanager["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "port-sync-token")
        .expect("the projected token volume");
    let sources = token_volume["projected"]["sources"].to_string();
    for source in [
        "serviceAccountToken",
        "kube-root-ca.crt",
        "metadata.namespace",
    ] {
        assert!(sources.contains(source), "{source} in {sources}");
    }
}

/// Every container and init container of every workload and of the test pod.
fn every_container(installed: &Installed) -> Vec<(String, Value)> {
    let mut pod_specs: Vec<(String, Value)> = Vec::new();
    for kind in ["Deployment", "StatefulSet"] {
        for workload in installed.of_kind(kind) {
            let name = workload["metadata"]["name"].as_str().unwrap().to_owned();
            pod_specs.push((name, workload["spec"]["template"]["spec"].clone()));
        }
    }
    pod_specs.push((
        "helm test pod".to_owned(),
        installed.test_pod()["spec"].clone(),
    ));
    let mut containers = Vec::new();
    for (owner, spec) in pod_specs {
        for list in ["initContainers", "containers"] {
            for container in spec[list].as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = format!("{owner}/{}", container["name"].as_str().unwrap());
                containers.push((name, container.clone()));
            }
        }
    }
    containers
}

fn assert_hardened(name: &str, container: &Value) {
    let context = &container["securityContext"];
    assert_eq!(context["runAsNonRoot"], true, "{name}: {context}");
    assert!(
        context["runAsUser"].as_i64().is_some_and(|uid| uid > 0),
        "{name}: {context}"
    );
    assert_eq!(context["readOnlyRootFilesystem"], true, "{name}: {context}");
    assert_eq!(
        context["allowPrivilegeEscalation"], false,
        "{name}: {context}"
    );
    assert_eq!(
        context["capabilities"]["drop"],
        json!(["ALL"]),
        "{name}: {context}"
    );
    assert!(
        context["capabilities"]["add"].is_null(),
        "{name}: {context}"
    );
    assert_eq!(
        context["seccompProfile"]["type"], "RuntimeDefault",
        "{name}: {context}"
    );
    assert!(context["privileged"] != true, "{name}: {context}");
}

#[test]
fn every_container_is_hardened_and_flink_writes_only_to_its_empty_dirs() {
    let installed = install(json!({}));
    let containers = every_container(&installed);
    assert_eq!(
        containers.len(),
        8,
        "jobmanager (zk-wait, jobmanager, port-sync), taskmanager (zk-wait, taskmanager), \
         zookeeper, test pod (zookeeper-serves, service-in-sync): {:?}",
        containers.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    for (name, container) in &containers {
        assert_hardened(name, container);
    }

    for component in ["jobmanager", "taskmanager"] {
        let spec = installed.pod_spec(component);
        let flink = container(&spec, "containers", component);
        let mounts = flink["volumeMounts"].as_array().unwrap();
        let mounted_at = |path: &str| {
            mounts
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{component}: nothing mounted at {path}"))
        };
        assert_eq!(mounted_at("/opt/flink/conf")["readOnly"], true);
        for writable in ["/opt/flink/log", "/tmp"] {
            let volume_name = &mounted_at(writable)["name"];
            let volume = spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| &v["name"] == volume_name)
                .unwrap();
            assert!(
                volume["emptyDir"].is_object(),
                "{component} {writable}: {volume}"
            );
        }
    }
}

#[test]
fn the_in_chart_zookeeper_whitelists_srvr_and_ruok_and_keeps_a_majority() {
    let installed = install(json!({}));
    let config = installed.object("v1", "ConfigMap", &format!("{FULLNAME}-zookeeper"));
    let zoo_cfg = config["data"]["zoo.cfg"].as_str().unwrap();
    assert!(
        zoo_cfg.contains("4lw.commands.whitelist=srvr, ruok"),
        "{zoo_cfg}"
    );
    for (index, member) in in_chart_members().iter().enumerate() {
        let host = member.trim_end_matches(":2181");
        let line = format!("server.{}={host}:2888:3888;2181", index + 1);
        assert!(zoo_cfg.contains(&line), "{line} in {zoo_cfg}");
    }
    let budget = installed.object(
        "policy/v1",
        "PodDisruptionBudget",
        &format!("{FULLNAME}-zookeeper"),
    );
    assert_eq!(budget["spec"]["minAvailable"], 2);
    let statefulset = installed.object("apps/v1", "StatefulSet", &format!("{FULLNAME}-zookeeper"));
    assert_eq!(statefulset["spec"]["podManagementPolicy"], "Parallel");
    let image = &statefulset["spec"]["template"]["spec"]["containers"][0]["image"];
    assert!(image.as_str().unwrap().starts_with("zookeeper:"), "{image}");
    installed.service(&format!("{FULLNAME}-zookeeper"));
}

#[test]
fn an_external_zookeeper_replaces_the_ensemble() {
    let quorum = "zk-a.example.org:2181,zk-b.example.org:2181,zk-c.example.org:2182";
    let installed = install(json!({"zookeeper": {"external": {"quorum": quorum}}}));
    for component in ["jobmanager", "taskmanager"] {
        let spec = installed.pod_spec(component);
        let zk_wait = parse_zk_wait(container(&spec, "initContainers", "zk-wait"));
        assert_eq!(
            servers(&zk_wait),
            quorum.split(',').collect::<Vec<_>>(),
            "{component}"
        );
    }
    assert_eq!(
        installed
            .flink_setting("high-availability.zookeeper.quorum")
            .as_deref(),
        Some(quorum)
    );
    let created = installed.created();
    assert!(
        !created.iter().any(|object| object.contains("zookeeper")),
        "no ZooKeeper objects with an external quorum: {created:?}"
    );
}

#[test]
fn pod_ip_mode_leaves_out_port_sync_and_its_rbac() {
    let installed = install(json!({"jobmanager": {"rpcAddress": "podIP"}}));
    let jobmanager = installed.pod_spec("jobmanager");
    assert!(!has_container(&jobmanager, "containers", "port-sync"));
    assert!(jobmanager["serviceAccountName"].is_null(), "{jobmanager:#}");
    assert!(!jobmanager.to_string().contains("port-sync-token"));
    for kind in ["Role", "RoleBinding", "ServiceAccount"] {
        assert!(
            installed.of_kind(kind).is_empty(),
            "no {kind} in podIP mode"
        );
    }
    let flink = container(&jobmanager, "containers", "jobmanager");
    assert!(
        argv(flink).contains(&"-Djobmanager.rpc.address=$(POD_IP)".to_owned()),
        "{flink:#}"
    );
    assert_eq!(
        flink["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(installed.flink_setting("jobmanager.rpc.address"), None);
    // zk-wait still holds both kinds of pod; the Service serves REST only (no rpc and blob
    // ports that nothing keeps in sync).
    parse_zk_wait(container(&jobmanager, "initContainers", "zk-wait"));
    assert_eq!(
        service_port_names(&installed.service(JOBMANAGER_SERVICE)),
        ["rest"]
    );
    // The test pod checks ZooKeeper only.
    let test_pod = installed.test_pod();
    assert_eq!(test_pod["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(!test_pod.to_string().contains("port-sync"));
}

#[test]
fn flink_1_gets_a_flat_flink_conf_yaml() {
    let installed = install(json!({
        "image": {"tag": "1.20.1-java17"},
        "flinkConfigFile": "flink-conf.yaml",
        "flinkConfiguration": {
            "taskmanager.numberOfTaskSlots": 4,
            "env.java.opts.all": ["-XX:+UseG1GC", "-Dfoo=bar"],
        }
    }));
    let config_map = installed.object("v1", "ConfigMap", &format!("{FULLNAME}-config"));
    let data = config_map["data"].as_object().unwrap();
    assert!(data.contains_key("flink-conf.yaml") && !data.contains_key("config.yaml"));
    let text = data["flink-conf.yaml"].as_str().unwrap();
    // Flink 1.x reads `key: value` lines and unquotes nothing.
    for line in [
        "high-availability.type: zookeeper",
        "high-availability.jobmanager.port: 50100-50200",
        "blob.server.port: 50201-50300",
        &format!("jobmanager.rpc.address: {JOBMANAGER_SERVICE}"),
        "taskmanager.numberOfTaskSlots: 4",
        "env.java.opts.all: -XX:+UseG1GC;-Dfoo=bar",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(!text.contains('"'), "no quotes in flink-conf.yaml:\n{text}");
}

#[test]
fn flink_2_gets_a_yaml_config_yaml() {
    let installed = install(json!({
        "flinkConfiguration": {"env.java.opts.all": ["-XX:+UseG1GC"]}
    }));
    let (file, config) = installed.flink_config();
    assert_eq!(file, "config.yaml");
    assert_eq!(
        config.get("env.java.opts.all"),
        Some(&serde_json::json!(["-XX:+UseG1GC"]))
    );
    assert_eq!(
        installed
            .flink_setting("taskmanager.numberOfTaskSlots")
            .as_deref(),
        Some("2")
    );
}

#[test]
fn the_network_policy_admits_the_pinned_port_ranges() {
    let installed = install(json!({"networkPolicy": {"enabled": true}}));
    let policy = installed.object(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        &format!("{FULLNAME}-jobmanager"),
    );
    let rule = &policy["spec"]["ingress"][0];
    assert_eq!(
        rule["ports"],
        json!([
            {"protocol": "TCP", "port": 50100, "endPort": 50200},
            {"protocol": "TCP", "port": 50201, "endPort": 50300},
            {"protocol": "TCP", "port": 8081},
        ])
    );
    assert_eq!(
        rule["from"][0]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "flink-ha", "app.kubernetes.io/instance": RELEASE})
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "jobmanager"
    );
}

/// Labels of the pods of a component, as the rendered workload's pod template carries them.
fn pod_template_labels(installed: &Installed, kind: &str, component: &str) -> Value {
    installed.object("apps/v1", kind, &format!("{FULLNAME}-{component}"))["spec"]["template"]
        ["metadata"]["labels"]
        .clone()
}

/// The pods the network policies are judged for: this release's, and outsiders in the same
/// namespace (any pod; another release of the chart) and in another namespace.
struct PolicyBed {
    policies: Vec<Value>,
    jobmanager: Pod,
    taskmanager: Pod,
    zookeeper: Pod,
    helm_test: Pod,
    unrelated: Pod,
    other_release_taskmanager: Pod,
    monitoring: Pod,
}

impl PolicyBed {
    fn new(values: Value) -> PolicyBed {
        let installed = install(values);
        let mut other_release = pod_template_labels(&installed, "Deployment", "taskmanager");
        other_release["app.kubernetes.io/instance"] = json!("other");
        PolicyBed {
            policies: installed.of_kind("NetworkPolicy"),
            jobmanager: Pod::new(
                NAMESPACE,
                &pod_template_labels(&installed, "Deployment", "jobmanager"),
            ),
            taskmanager: Pod::new(
                NAMESPACE,
                &pod_template_labels(&installed, "Deployment", "taskmanager"),
            ),
            zookeeper: Pod::new(
                NAMESPACE,
                &pod_template_labels(&installed, "StatefulSet", "zookeeper"),
            ),
            helm_test: Pod::new(NAMESPACE, &installed.test_pod()["metadata"]["labels"]),
            unrelated: Pod::new(NAMESPACE, &json!({"app": "anything"})),
            other_release_taskmanager: Pod::new(NAMESPACE, &other_release),
            monitoring: Pod::new(
                "monitoring",
                &json!({"app.kubernetes.io/name": "prometheus"}),
            ),
        }
    }

    fn admits(&self, source: &Pod, target: &Pod, port: u16) -> bool {
        admitted(&self.policies, source, target, port)
    }
}

#[test]
fn with_policies_zookeeper_serves_only_this_releases_flink_pods_and_its_quorum_only_members() {
    let bed = PolicyBed::new(json!({"networkPolicy": {"enabled": true}}));
    for client in [&bed.jobmanager, &bed.taskmanager, &bed.helm_test] {
        assert!(
            bed.admits(client, &bed.zookeeper, 2181),
            "{client:?} -> 2181"
        );
        assert!(
            !bed.admits(client, &bed.zookeeper, 2888),
            "{client:?} -> 2888"
        );
        assert!(
            !bed.admits(client, &bed.zookeeper, 3888),
            "{client:?} -> 3888"
        );
    }
    for outsider in [
        &bed.unrelated,
        &bed.other_release_taskmanager,
        &bed.monitoring,
    ] {
        for port in [2181, 2888, 3888, 8080] {
            assert!(
                !bed.admits(outsider, &bed.zookeeper, port),
                "{outsider:?} -> zookeeper:{port}"
            );
        }
    }
    assert!(bed.admits(&bed.zookeeper, &bed.zookeeper, 2888));
    assert!(bed.admits(&bed.zookeeper, &bed.zookeeper, 3888));
    assert!(!bed.admits(&bed.zookeeper, &bed.zookeeper, 8080));
}

#[test]
fn with_policies_taskmanagers_admit_only_this_releases_jobmanager_and_taskmanagers() {
    let bed = PolicyBed::new(json!({"networkPolicy": {"enabled": true}}));
    // taskmanager.rpc.port and taskmanager.data.port are picked at start: any port.
    for port in [6121, 6122, 41234] {
        assert!(bed.admits(&bed.jobmanager, &bed.taskmanager, port));
        assert!(bed.admits(&bed.taskmanager, &bed.taskmanager, port));
        for outsider in [
            &bed.unrelated,
            &bed.other_release_taskmanager,
            &bed.zookeeper,
            &bed.monitoring,
        ] {
            assert!(
                !bed.admits(outsider, &bed.taskmanager, port),
                "{outsider:?} -> taskmanager:{port}"
            );
        }
    }
    // The JobManager: its ranges and REST port from this release, nothing from outside.
    assert!(bed.admits(&bed.taskmanager, &bed.jobmanager, 50150));
    assert!(bed.admits(&bed.taskmanager, &bed.jobmanager, 50250));
    assert!(!bed.admits(&bed.taskmanager, &bed.jobmanager, 50301));
    assert!(!bed.admits(&bed.unrelated, &bed.jobmanager, 50150));
    assert!(!bed.admits(&bed.other_release_taskmanager, &bed.jobmanager, 8081));
}

#[test]
fn port_sync_metrics_are_admitted_from_metrics_from_only() {
    let closed = PolicyBed::new(json!({"networkPolicy": {"enabled": true}}));
    assert!(!closed.admits(&closed.monitoring, &closed.jobmanager, 8099));
    assert!(!closed.admits(&closed.taskmanager, &closed.jobmanager, 8099));

    let open = PolicyBed::new(json!({"networkPolicy": {
        "enabled": true,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"
        }}}]
    }}));
    assert!(open.admits(&open.monitoring, &open.jobmanager, 8099));
    // Only the metrics port: not Flink's ports, not ZooKeeper.
    assert!(!open.admits(&open.monitoring, &open.jobmanager, 8081));
    assert!(!open.admits(&open.monitoring, &open.jobmanager, 50150));
    assert!(!open.admits(&open.monitoring, &open.zookeeper, 2181));
    assert!(!open.admits(&open.unrelated, &open.jobmanager, 8099));
}

#[test]
fn without_policies_every_pod_reaches_zookeeper() {
    // What the security review says stays open when networkPolicy.enabled is false.
    let bed = PolicyBed::new(json!({}));
    assert!(bed.policies.is_empty());
    assert!(bed.admits(&bed.unrelated, &bed.zookeeper, 2181));
}

const DIGEST: &str = "sha256:8f2c7c6b3a1e4d5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab";

/// Every `app.kubernetes.io/version` label of the created objects, pod templates included.
fn version_labels(installed: &Installed) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut objects = installed.api.objects(NAMESPACE);
    objects.extend(installed.hooks());
    for object in objects {
        for labels in [
            &object["metadata"]["labels"],
            &object["spec"]["template"]["metadata"]["labels"],
        ] {
            if let Some(version) = labels["app.kubernetes.io/version"].as_str() {
                found.insert(version.to_owned());
            }
        }
    }
    found
}

#[test]
fn digests_pin_every_image_and_the_version_label_stays_a_valid_label_value() {
    let installed = install(json!({
        "image": {"digest": DIGEST},
        "sidecars": {"image": {"digest": DIGEST}},
        "zookeeper": {"image": {"digest": DIGEST}},
    }));
    let images: BTreeSet<String> = every_container(&installed)
        .iter()
        .map(|(_, container)| container["image"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        images,
        BTreeSet::from([
            format!("flink@{DIGEST}"),
            format!("flink-ha-sidecars@{DIGEST}"),
            format!("zookeeper@{DIGEST}"),
        ])
    );
    assert_eq!(
        version_labels(&installed),
        BTreeSet::from(["2.3.0-java17".to_owned()])
    );
}

#[test]
fn a_digest_written_into_the_tag_still_renders_a_valid_version_label() {
    // The old way to pin: the tag holds "@sha256:...", 84 characters with '@' and ':'.
    let installed = install(json!({"image": {"tag": format!("2.3.0-java17@{DIGEST}")}}));
    let expected = format!("2.3.0-java17_{}", DIGEST.replace(':', "_"))[..63].to_owned();
    assert_eq!(version_labels(&installed), BTreeSet::from([expected]));
    assert_eq!(
        container(
            &installed.pod_spec("jobmanager"),
            "containers",
            "jobmanager"
        )["image"],
        format!("flink:2.3.0-java17@{DIGEST}")
    );
}

#[test]
fn the_schema_refuses_a_digest_that_is_not_one() {
    let error = try_install(json!({"image": {"digest": "latest"}}))
        .err()
        .expect("a digest without algorithm: is refused");
    assert!(error.to_string().contains("digest"), "{error}");
}

const MONITORING_ON: &str = r#"{"monitoring": {
    "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": true}
}}"#;

#[test]
fn the_service_monitor_scrapes_port_sync_through_a_service_of_its_own() {
    let installed = install(serde_json::from_str(MONITORING_ON).unwrap());
    let monitor = installed.object(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        &format!("{FULLNAME}-port-sync"),
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = installed.service(&format!("{FULLNAME}-port-sync-metrics"));
    let selector = &monitor["spec"]["selector"];
    let service_labels = Pod::new(NAMESPACE, &service["metadata"]["labels"]).labels;
    assert!(e2e::network_policy::selector_matches(
        selector,
        &service_labels
    ));
    // Only the metrics Service: the ServiceMonitor must not select the JobManager Service,
    // whose ports port-sync rewrites.
    let jobmanager_labels = Pod::new(
        NAMESPACE,
        &installed.service(JOBMANAGER_SERVICE)["metadata"]["labels"],
    )
    .labels;
    assert!(!e2e::network_policy::selector_matches(
        selector,
        &jobmanager_labels
    ));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service_port_names(&service), ["metrics"]);
    // The Service reaches port-sync's container port in the JobManager pod.
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let jobmanager = installed.pod_spec("jobmanager");
    let port_sync = container(&jobmanager, "containers", "port-sync");
    assert!(
        port_sync["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|port| port["name"] == target && port["containerPort"] == 8099),
        "{port_sync:#}"
    );
    let pod_labels = Pod::new(
        NAMESPACE,
        &pod_template_labels(&installed, "Deployment", "jobmanager"),
    )
    .labels;
    assert!(e2e::network_policy::selector_matches(
        &json!({"matchLabels": service["spec"]["selector"]}),
        &pod_labels
    ));
}

#[test]
fn monitoring_is_off_by_default_and_absent_in_pod_ip_mode() {
    assert!(install(json!({})).of_kind("ServiceMonitor").is_empty());
    let mut values: Value = serde_json::from_str(MONITORING_ON).unwrap();
    values["jobmanager"] = json!({"rpcAddress": "podIP"});
    let installed = install(values);
    assert!(installed.of_kind("ServiceMonitor").is_empty());
    assert!(installed.of_kind("PrometheusRule").is_empty());
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let installed = install(serde_json::from_str(MONITORING_ON).unwrap());
    let rule = installed.object(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        &format!("{FULLNAME}-port-sync"),
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = serde_saphyr::to_string(&rule["spec"]).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    let tests = "port-sync-alerts.test.yaml";
    std::fs::copy(
        repository_file(&format!("tests/promtool/{tests}")),
        dir.path().join(tests),
    )
    .unwrap();
    let checked = e2e::promtool(&["check", "rules", "rules.yaml"], dir.path(), "");
    assert!(checked.contains("SUCCESS: 5 rules found"), "{checked}");
    e2e::promtool(&["test", "rules", tests], dir.path(), "");
}

#[test]
fn application_mode_starts_the_baked_in_job_with_standalone_job() {
    let installed = install(json!({
        "mode": "application",
        "application": {"jobClassName": "org.example.WordCount", "args": ["--input", "/data/in"]}
    }));
    let jobmanager = installed.pod_spec("jobmanager");
    let line = argv(container(&jobmanager, "containers", "jobmanager"));
    assert_eq!(
        line,
        [
            "/opt/flink/bin/standalone-job.sh",
            "start-foreground",
            "--job-classname",
            "org.example.WordCount",
            "--input",
            "/data/in"
        ]
    );
    // The sidecars are wired as in session mode.
    let port_sync = parse_port_sync(container(&jobmanager, "containers", "port-sync"));
    assert_eq!(port_sync.service, JOBMANAGER_SERVICE);
    parse_zk_wait(container(&jobmanager, "initContainers", "zk-wait"));
}

#[test]
fn the_helm_test_pod_runs_zk_wait_once_and_port_sync_once_as_a_dry_run() {
    let installed = install(json!({}));
    let pod = installed.test_pod();
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let spec = &pod["spec"];
    let zk_wait = parse_zk_wait(container(spec, "initContainers", "zookeeper-serves"));
    assert!(zk_wait.once);
    assert_eq!(servers(&zk_wait), in_chart_members());
    let port_sync = parse_port_sync(container(spec, "containers", "service-in-sync"));
    assert!(port_sync.once && port_sync.dry_run);
    assert_eq!(port_sync.service, JOBMANAGER_SERVICE);
    assert_eq!(port_sync.jobmanager_url.host(), JOBMANAGER_SERVICE);
    assert_eq!(
        spec["serviceAccountName"],
        installed.pod_spec("jobmanager")["serviceAccountName"]
    );
}

#[test]
fn flink_keys_the_chart_derives_are_refused_in_flink_configuration() {
    let refused =
        try_install(json!({"flinkConfiguration": {"jobmanager.rpc.address": "elsewhere"}}))
            .err()
            .expect("the install fails");
    let message = refused.to_string();
    assert!(
        message.contains("flinkConfiguration.jobmanager.rpc.address"),
        "{message}"
    );
    assert!(message.contains("jobmanager.rpcAddress"), "{message}");

    let refused = try_install(json!({"mode": "application"}))
        .err()
        .expect("the install fails");
    assert!(
        refused.to_string().contains("application.jobClassName"),
        "{refused}"
    );
}

/// The rules of a Role, each with its resourceNames taken out; and those names.
fn rules_and_names(role: &Value) -> (Vec<Value>, Vec<Value>) {
    let mut names = Vec::new();
    let rules = role["rules"]
        .as_array()
        .expect("a Role has rules")
        .iter()
        .map(|rule| {
            let mut rule = rule.clone();
            if let Some(taken) = rule.as_object_mut().and_then(|r| r.remove("resourceNames")) {
                names.push(taken);
            }
            rule
        })
        .collect();
    (rules, names)
}

#[test]
fn rbac_dir_and_the_chart_grant_exactly_the_same_rules() {
    let text = std::fs::read_to_string(repository_file("rbac/role.yaml")).unwrap();
    let shipped: Value = serde_saphyr::from_str(&text).unwrap();
    let (shipped_rules, shipped_names) = rules_and_names(&shipped);

    // With the default names: the same apiGroups, resources and verbs; resourceNames the
    // Service each names (rbac/ the README's flink-jobmanager, the chart its own Service).
    let installed = install(json!({}));
    let role = installed.object(
        "rbac.authorization.k8s.io/v1",
        "Role",
        &format!("{FULLNAME}-port-sync"),
    );
    let (chart_rules, chart_names) = rules_and_names(&role);
    assert_eq!(chart_rules, shipped_rules);
    assert_eq!(shipped_names, [json!(["flink-jobmanager"])]);
    assert_eq!(chart_names, [json!([JOBMANAGER_SERVICE])]);
    installed.service(JOBMANAGER_SERVICE);

    // With fullnameOverride "flink" the chart's Service is rbac/'s flink-jobmanager, and the
    // rules are identical, resourceNames included.
    let installed = install(json!({"fullnameOverride": "flink"}));
    let role = installed.object("rbac.authorization.k8s.io/v1", "Role", "flink-port-sync");
    assert_eq!(role["rules"], shipped["rules"]);
    installed.service("flink-jobmanager");
}

/// The API stand-in authorising with the Role and RoleBinding Helm created (not rbac/), holding
/// the Service Helm created, and a kubeconfig with a token of the chart's ServiceAccount.
struct ChartRbacBed {
    api: ApiServer,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChartRbacBed {
    fn from(installed: &Installed) -> ChartRbacBed {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, object: Value| {
            let path = dir.path().join(file);
            std::fs::write(&path, object.to_string()).unwrap();
            path
        };
        let rbac_name = format!("{FULLNAME}-port-sync");
        let rbac_group = "rbac.authorization.k8s.io/v1";
        let mut rbac = kube_stand_in::RbacConfig {
            role_path: write(
                "role.yaml",
                installed.object(rbac_group, "Role", &rbac_name),
            ),
            rolebinding_path: write(
                "rolebinding.yaml",
                installed.object(rbac_group, "RoleBinding", &rbac_name),
            ),
            ..kube_stand_in::RbacConfig::default()
        };
        rbac.namespace = Some(NAMESPACE.to_owned());
        let api = ApiServer::start(ApiServerConfig {
            rbac,
            ..ApiServerConfig::default()
        })
        .unwrap();
        let mut service = installed.service(JOBMANAGER_SERVICE);
        for server_set in ["uid", "resourceVersion", "creationTimestamp"] {
            service["metadata"]
                .as_object_mut()
                .unwrap()
                .remove(server_set);
        }
        api.create_service(NAMESPACE, service).unwrap();
        let account = installed.pod_spec("jobmanager")["serviceAccountName"]
            .as_str()
            .unwrap()
            .to_owned();
        let token_file = dir.path().join("token");
        api.rotate_token(
            &token_file,
            &format!("system:serviceaccount:{NAMESPACE}:{account}"),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, &token_file, NAMESPACE)
            .unwrap();
        ChartRbacBed {
            api,
            kubeconfig,
            _dir: dir,
        }
    }

    /// (port, targetPort) of the Service's port `name`, when both are `value`.
    fn exposes(&self, name: &str, value: u16) -> bool {
        self.api
            .get_service(NAMESPACE, JOBMANAGER_SERVICE)
            .and_then(|service| {
                service["spec"]["ports"]
                    .as_array()?
                    .iter()
                    .find(|port| port["name"] == name)
                    .map(|port| port["port"] == value && port["targetPort"] == value)
            })
            .unwrap_or(false)
    }
}

/// The container's command line as a process of the built binary, with the container's
/// literal env vars, and `replace` applied to flag values (the pod's addresses are not this
/// machine's).
fn as_process(container: &Value, replace: &[(&str, &str)]) -> std::process::Command {
    let mut line = argv(container);
    for index in 1..line.len() {
        if let Some((_, value)) = replace.iter().find(|(flag, _)| line[index - 1] == *flag) {
            line[index] = (*value).to_owned();
        }
    }
    let prefix = if line[0] == "zk-wait" {
        "ZK_WAIT_"
    } else {
        "PORT_SYNC_"
    };
    let mut command = e2e::command(&line[0], prefix);
    command.args(&line[1..]);
    for variable in container["env"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let (Some(name), Some(value)) = (variable["name"].as_str(), variable["value"].as_str()) {
            command.env(name, value);
        }
    }
    command
}

/// Item 4 of the packaging issue: the JobManager pod Helm created, run on this machine. Its
/// zk-wait init container holds until a real 3-member ZooKeeper has a majority; a real Flink
/// JobManager starts from the configuration Helm rendered (only the pod's addresses, REST port,
/// storage dir and memory replaced) and binds inside the pinned ranges; its port-sync sidecar,
/// under the RBAC Helm created, brings the Service Helm created to those ports; and the
/// `helm test` pod's checks pass.
#[test]
fn the_rendered_jobmanager_pod_runs_against_real_zookeeper_and_flink() {
    use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig};
    use fixtures::process::{Echo, Process};
    use fixtures::zookeeper::{Ensemble, EnsembleConfig};
    use std::time::{Duration, Instant};

    let mut zookeeper = Ensemble::new(EnsembleConfig::ensemble(3)).unwrap();
    let installed = install(json!({
        "zookeeper": {"external": {"quorum": zookeeper.connect_string()}}
    }));
    let pod = installed.pod_spec("jobmanager");

    // The init container: holds while no member serves, and while one lone member says imok.
    let mut zk_wait = Process::spawn(
        "zk-wait",
        as_process(container(&pod, "initContainers", "zk-wait"), &[]),
        Echo::Quiet,
    )
    .unwrap();
    zookeeper.start(0).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        zk_wait.is_running(),
        "released early:\n{}",
        zk_wait.output()
    );
    zookeeper.start(1).unwrap();
    let status = zk_wait.expect_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", zk_wait.output());

    // The JobManager, from the rendered configuration.
    let (_, rendered) = installed.flink_config();
    let pod_specific = [
        "jobmanager.rpc.address",
        "jobmanager.bind-host",
        "rest.address",
        "rest.bind-address",
        "rest.port",
        "high-availability.storageDir",
        "jobmanager.memory.process.size",
        "taskmanager.memory.process.size",
        "taskmanager.bind-host",
    ];
    let quorum = rendered["high-availability.zookeeper.quorum"]
        .as_str()
        .unwrap();
    assert_eq!(quorum, zookeeper.connect_string());
    let mut config = JobManagerConfig::new(quorum);
    for (key, value) in &rendered {
        let key = key.as_str();
        if !pod_specific.contains(&key) {
            config = config.set(
                key,
                value.as_str().expect("config.yaml holds quoted strings"),
            );
        }
    }
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let mut jobmanager = JobManager::start(&flink, config).unwrap();
    jobmanager
        .wait_rest_ready(Duration::from_secs(120))
        .unwrap();
    let live = jobmanager.live_config().unwrap();
    assert_eq!(live["high-availability.cluster-id"], FULLNAME);
    let (rpc, blob) = jobmanager.live_ports().unwrap();
    assert!(
        (50100..=50200).contains(&rpc),
        "rpc {rpc} in the pinned range"
    );
    assert!(
        (50201..=50300).contains(&blob),
        "blob {blob} in the pinned range"
    );

    // The sidecar, under the chart's own RBAC.
    let bed = ChartRbacBed::from(&installed);
    let listen = format!("127.0.0.1:{}", fixtures::ports::free_port());
    let mut sidecar_command = as_process(
        container(&pod, "containers", "port-sync"),
        &[
            ("--jobmanager-url", &jobmanager.rest_url()),
            ("--listen", &listen),
        ],
    );
    sidecar_command
        .env("KUBECONFIG", &bed.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let mut sidecar = Process::spawn("port-sync", sidecar_command, Echo::Quiet).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(bed.exposes("rpc", rpc) && bed.exposes("blob", blob)) {
        assert!(
            Instant::now() < deadline && sidecar.is_running(),
            "the Service never reached rpc {rpc} blob {blob}: {:?}\n{}",
            bed.api.get_service(NAMESPACE, JOBMANAGER_SERVICE),
            sidecar.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bed.api.requests().iter().all(|r| r.status != Some(403)),
        "the chart's Role allowed everything port-sync did"
    );

    // `helm test`: both checks pass now.
    let test_pod = installed.test_pod();
    let checks = [
        as_process(
            container(&test_pod["spec"], "initContainers", "zookeeper-serves"),
            &[],
        ),
        {
            let mut command = as_process(
                container(&test_pod["spec"], "containers", "service-in-sync"),
                &[("--jobmanager-url", &jobmanager.rest_url())],
            );
            command
                .env("KUBECONFIG", &bed.kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST");
            command
        },
    ];
    for command in checks {
        let finished = e2e::run("helm test check", command, Duration::from_secs(60));
        assert_eq!(finished.code, Some(0), "{}", finished.said());
    }
    sidecar.kill();
}

/// Keys whose contents are Kubernetes or Flink data the parent's comment describes.
const DATA_KEYS: [&str; 4] = [
    "resources",
    "flinkConfiguration",
    "livenessProbe",
    "readinessProbe",
];

#[test]
fn every_value_is_commented_and_declared_in_the_schema() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // (indentation, key) of the keys enclosing the current line.
    let mut enclosing: Vec<(usize, String)> = Vec::new();
    let mut undocumented = Vec::new();
    let mut undeclared = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if key.is_empty() || key.contains(' ') {
            continue;
        }
        let indentation = line.len() - trimmed.len();
        enclosing.retain(|(outer, _)| *outer < indentation);
        let in_data = enclosing
            .iter()
            .any(|(_, outer)| DATA_KEYS.contains(&outer.as_str()));
        let path: Vec<String> = enclosing
            .iter()
            .map(|(_, outer)| outer.clone())
            .chain([key.to_owned()])
            .collect();
        enclosing.push((indentation, key.to_owned()));
        if in_data {
            continue;
        }
        let above = index.checked_sub(1).map_or("", |above| lines[above].trim());
        if !above.starts_with('#') {
            undocumented.push(path.join("."));
        }
        let declared = path
            .iter()
            .try_fold(&schema, |node, key| node["properties"].get(key));
        if declared.is_none() {
            undeclared.push(path.join("."));
        }
    }
    assert!(
        undocumented.is_empty(),
        "values without a comment: {undocumented:?}"
    );
    assert!(
        undeclared.is_empty(),
        "values the schema does not declare: {undeclared:?}"
    );
}

#[test]
fn the_schema_refuses_unknown_and_ill_typed_values() {
    for (values, said) in [
        (json!({"jobmanager": {"rpcAdress": "podIP"}}), "rpcAdress"),
        (
            json!({"jobmanager": {"rpcAddress": "nodeIP"}}),
            "rpcAddress",
        ),
        (json!({"blobServerPort": "6124-"}), "blobServerPort"),
        (json!({"flinkConfigFile": "flink.yaml"}), "flinkConfigFile"),
        (
            json!({"sidecars": {"zkWait": {"require": "most"}}}),
            "require",
        ),
    ] {
        let refused = try_install(values.clone())
            .err()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(refused.to_string().contains(said), "{values}: {refused}");
    }
}

/// The facts about Bitnami's Flink chart that docs/bitnami.md relies on.
fn bitnami_facts() -> Value {
    let text = std::fs::read_to_string(repository_file("tests/fixtures/bitnami-flink.json"))
        .expect("tests/fixtures/bitnami-flink.json");
    serde_json::from_str(&text).expect("the Bitnami facts are JSON")
}

/// The Helm values of docs/bitnami.md: its first ```yaml block.
fn bitnami_guide_values() -> Value {
    let guide =
        std::fs::read_to_string(repository_file("docs/bitnami.md")).expect("docs/bitnami.md");
    let block = guide
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/bitnami.md has a ```yaml block of values");
    serde_saphyr::from_str(block).expect("the guide's values are YAML")
}

/// Bitnami's image maps FLINK_CFG_<KEY> to a configuration key (the fixture's rule).
fn bitnami_config_key(variable: &str) -> String {
    variable
        .trim_start_matches("FLINK_CFG_")
        .replace("__", "-")
        .replace('_', ".")
        .to_lowercase()
}

#[test]
fn the_bitnami_guide_args_parse_and_name_bitnamis_service_and_port_names() {
    let facts = bitnami_facts();
    let values = bitnami_guide_values();
    let jobmanager = &values["jobmanager"];

    let zk_wait = parse_zk_wait(container(jobmanager, "initContainers", "zk-wait"));
    let port_sync = parse_port_sync(container(jobmanager, "sidecars", "port-sync"));

    // Release "my": Bitnami's Service name pattern, and its Service port names.
    assert_eq!(
        port_sync.service,
        facts["jobmanager_service"]["examples"]["my"]
    );
    let service_ports: Vec<&str> = facts["jobmanager_service"]["port_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    let mapped = port_mappings(&port_sync);
    assert_eq!(
        mapped,
        [
            ("tcp-rpc".to_owned(), "jobmanager.rpc.port".to_owned()),
            ("tcp-blob".to_owned(), "blob.server.port".to_owned()),
        ]
    );
    for (name, _) in &mapped {
        assert!(
            service_ports.contains(&name.as_str()),
            "{name} is not a port of Bitnami's Service"
        );
    }
    assert_eq!(
        port_sync.jobmanager_url.port(),
        facts["jobmanager_container"]["default_ports"]["http"]
            .as_u64()
            .map(|port| port as u16)
    );

    // The HA keys, as Bitnami's image derives them from the variables; the HA RPC port pinned to
    // Bitnami's bind port, so that the advertised port is the listened one.
    let config: std::collections::BTreeMap<String, String> = jobmanager["extraEnvVars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| {
            (
                bitnami_config_key(variable["name"].as_str().unwrap()),
                variable["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(config["high-availability.type"], "zookeeper");
    assert_eq!(
        config["high-availability.jobmanager.port"],
        facts["jobmanager_container"]["default_ports"]["rpc"].to_string()
    );
    assert_eq!(
        config["high-availability.zookeeper.quorum"],
        servers(&zk_wait).join(",")
    );
    for (variable, key) in facts["image_env_mapping"]["examples"].as_object().unwrap() {
        assert_eq!(&bitnami_config_key(variable), key);
    }
}

/// The value of `flag` in a container's argument list.
fn flag_value(args: &[String], flag: &str) -> String {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
        .clone()
}

#[test]
fn the_bitnami_guide_args_sync_a_bitnami_shaped_service_from_a_real_flink_jobmanager() {
    use e2e::kube_bed::{Bed, LIMIT, NAMESPACE as BED_NAMESPACE, SERVICE};
    use fixtures::flink::{DEFAULT_VERSION, Flink, JobManager, JobManagerConfig};
    use fixtures::ports::free_port;
    use fixtures::process::{Echo, Process};
    use fixtures::zookeeper::{Ensemble, EnsembleConfig};
    use std::time::{Duration, Instant};

    let facts = bitnami_facts();
    // A release named "flink": Bitnami names its Service flink-jobmanager, the Service the
    // shipped rbac/role.yaml grants (the stand-in enforces it).
    assert_eq!(facts["jobmanager_service"]["examples"]["flink"], SERVICE);
    let bed = Bed::new(ApiServerConfig::default());
    // Bitnami's Service: tcp-rpc, http, tcp-blob at 6123, 8081, 6124 with numeric targetPorts.
    bed.api
        .edit_service(BED_NAMESPACE, SERVICE, |service| {
            let defaults = &facts["jobmanager_container"]["service_default_ports"];
            service["spec"]["ports"] = facts["jobmanager_service"]["port_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| {
                    let port = &defaults[name.as_str().unwrap()];
                    json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"})
                })
                .collect();
        })
        .unwrap();

    // Flink as Bitnami configures it, plus the guide's HA variables: the RPC listener fixed by
    // jobmanager.rpc.bind-port and high-availability.jobmanager.port pinned to the same port.
    // Free ports instead of 6123/6124/8081: the machine is shared.
    let (rpc, blob, rest) = (free_port(), free_port(), free_port());
    let zookeeper = Ensemble::start_standalone(EnsembleConfig::standalone()).unwrap();
    let flink = Flink::install(DEFAULT_VERSION).unwrap();
    let values = bitnami_guide_values();
    // The guide pins the HA port to Bitnami's bind port (6123 there, `rpc` here); the quorum,
    // storage dir and cluster-id are the test bed's own.
    let pins_ha_port = values["jobmanager"]["extraEnvVars"]
        .as_array()
        .unwrap()
        .iter()
        .any(|variable| {
            bitnami_config_key(variable["name"].as_str().unwrap())
                == "high-availability.jobmanager.port"
                && variable["value"] == "6123"
        });
    assert!(
        pins_ha_port,
        "the guide pins high-availability.jobmanager.port to 6123"
    );
    let config = JobManagerConfig::new(&zookeeper.connect_string())
        .rest_port(rest)
        .blob_port(blob)
        .rpc_port(rpc)
        .set("jobmanager.rpc.bind-port", &rpc.to_string());
    let mut jobmanager = JobManager::start(&flink, config).unwrap();
    jobmanager
        .wait_rest_ready(Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("{error}\n{}", jobmanager.log()));

    // The guide's port-sync arguments, with the Service of release "flink", this test's REST
    // port and a free listen port.
    let guide = container(&values["jobmanager"], "sidecars", "port-sync");
    let mut args = argv(guide);
    let replace = |args: &mut Vec<String>, flag: &str, value: String| {
        let at = args.iter().position(|arg| arg == flag).unwrap() + 1;
        args[at] = value;
    };
    assert_eq!(
        flag_value(&args, "--jobmanager-url"),
        "http://127.0.0.1:8081"
    );
    replace(&mut args, "--service", SERVICE.to_owned());
    replace(
        &mut args,
        "--jobmanager-url",
        format!("http://127.0.0.1:{rest}"),
    );
    replace(&mut args, "--listen", format!("127.0.0.1:{}", free_port()));
    let mut command = e2e::command("port-sync", "PORT_SYNC_");
    command
        .env("KUBECONFIG", &bed.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(&args[1..]);
    let sidecar = Process::spawn("port-sync", command, Echo::Quiet).unwrap();

    let deadline = Instant::now() + LIMIT;
    while !(bed.exposes(SERVICE, "tcp-rpc", rpc) && bed.exposes(SERVICE, "tcp-blob", blob)) {
        assert!(
            Instant::now() < deadline,
            "Bitnami's Service never held tcp-rpc {rpc} and tcp-blob {blob}: {:?}\n{}\n{}",
            bed.api.get_service(BED_NAMESPACE, SERVICE),
            sidecar.output(),
            jobmanager.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The port Flink listens on is the one the Service now exposes.
    std::net::TcpStream::connect(("127.0.0.1", rpc)).expect("Flink listens on the synced RPC port");
    assert_eq!(bed.port_of(SERVICE, "http"), Some((8081, json!(8081))));
}

#[test]
fn every_value_set_of_the_checkers_installs_into_the_stand_in() {
    // The stand-in refuses what kube-apiserver refuses (names, labels, port names: see its
    // conformance table), so each install proves the rendered objects acceptable.
    for (name, values) in fixtures::helm::CHART_VALUE_SETS {
        let values: Value = serde_json::from_str(values).expect("a value set is JSON");
        let installed = try_install(values)
            .unwrap_or_else(|error| panic!("value set {name} does not install: {error}"));
        assert!(!installed.created().is_empty(), "{name}");
    }
}
