//! Rendered pods run by podman: a Pod spec (a StatefulSet's or Deployment's template, as Helm
//! rendered it into the API stand-in) translated into `podman run` arguments with exactly its
//! securityContext, environment, command and volume mounts, and its volumes made the way the
//! kubelet makes them (emptyDir: a 0777 folder; configMap: read-only files; with fsGroup both
//! group-owned and set-gid).
//!
//! Why `podman run` and not `podman kube play`: the test bed must put each pod on a fixed address
//! of its own network with the cluster's DNS names in its /etc/hosts (no cluster DNS here), and
//! `podman run --read-only` mounts tmpfs on /tmp, /run and /var/tmp unless told not to, which a
//! kubelet never does; flags make both exact. (kube play's own handling was not measured.) The
//! translation refuses every
//! field it does not understand, so nothing the chart sets is dropped silently.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the kubelet would know about the pod when it resolves `fieldRef`s.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub ip: String,
}

/// A pod volume, as the kubelet would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    EmptyDir,
    /// The ConfigMap's name.
    ConfigMap {
        name: String,
    },
    /// A StatefulSet's volumeClaimTemplate: a fresh file system's root (root-owned, 0755), which
    /// the kubelet hands to fsGroup (group-owned, group-writable, set-gid).
    Claim,
}

/// The pod's volumes by name, with a StatefulSet's `claim_templates`; an error names a volume
/// kind the translation does not make.
pub fn volumes(
    pod_spec: &Value,
    claim_templates: &[Value],
) -> Result<BTreeMap<String, VolumeSource>, String> {
    let mut volumes = BTreeMap::new();
    for claim in claim_templates {
        let name = claim
            .get("metadata")
            .and_then(|metadata| metadata.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("volumeClaimTemplate without a name: {claim}"))?;
        volumes.insert(name.to_owned(), VolumeSource::Claim);
    }
    for volume in array(pod_spec, "volumes") {
        let name = text(volume, "name")?;
        let source = if volume.get("emptyDir").is_some() {
            VolumeSource::EmptyDir
        } else if let Some(config_map) = volume.get("configMap") {
            if config_map.get("items").is_some() {
                return Err(format!("volume {name}: configMap items are not translated"));
            }
            VolumeSource::ConfigMap {
                name: text(config_map, "name")?,
            }
        } else {
            return Err(format!(
                "volume {name}: only emptyDir and configMap volumes are translated, not {volume}"
            ));
        };
        volumes.insert(name, source);
    }
    Ok(volumes)
}

/// The `podman run` arguments (between `run` and the image, then the image and its
/// arguments) of `container` in `pod_spec`, its volumes at `volume_dirs`.
pub fn container_args(
    pod_spec: &Value,
    container: &Value,
    pod: &PodIdentity,
    volume_dirs: &BTreeMap<String, PathBuf>,
) -> Result<Vec<String>, String> {
    let name = text(container, "name")?;
    // An image's VOLUME lines are no volumes to a kubelet (the path stays on the image's root,
    // read-only here); podman would mount anonymous writable volumes there.
    let mut args = vec!["--image-volume=ignore".to_owned()];
    args.extend(security_args(pod_spec, container).map_err(|e| format!("{name}: {e}"))?);
    for variable in array(container, "env") {
        let variable_name = text(variable, "name")?;
        let value = match (variable.get("value"), variable.get("valueFrom")) {
            (Some(value), None) => value.as_str().unwrap_or_default().to_owned(),
            (None, Some(from)) => {
                field_ref(from, pod).map_err(|e| format!("{name}: env {variable_name}: {e}"))?
            }
            (None, None) => String::new(),
            _ => {
                return Err(format!(
                    "{name}: env {variable_name} has value and valueFrom"
                ));
            }
        };
        args.push(format!("--env={variable_name}={value}"));
    }
    for mount in array(container, "volumeMounts") {
        let volume = text(mount, "name")?;
        let path = text(mount, "mountPath")?;
        let mut host = volume_dirs
            .get(&volume)
            .ok_or_else(|| format!("{name}: mounts volume {volume}, which the pod lacks"))?
            .clone();
        if let Some(sub_path) = mount.get("subPath").and_then(Value::as_str) {
            host = host.join(sub_path);
        }
        let read_only = mount.get("readOnly").and_then(Value::as_bool) == Some(true);
        let options = if read_only { "ro" } else { "rw" };
        args.push(format!("--volume={}:{path}:{options}", host.display()));
    }
    if let Some(dir) = container.get("workingDir").and_then(Value::as_str) {
        args.push(format!("--workdir={dir}"));
    }
    let command = strings(container, "command")?;
    if !command.is_empty() {
        args.push(format!(
            "--entrypoint={}",
            serde_json::to_string(&command).map_err(|e| e.to_string())?
        ));
    }
    args.push(text(container, "image")?);
    args.extend(strings(container, "args")?);
    Ok(args)
}

/// The container's effective securityContext (the pod's, overridden field by field by the
/// container's) as podman flags. Fields the translation does not know are an error.
fn security_args(pod_spec: &Value, container: &Value) -> Result<Vec<String>, String> {
    let empty = Value::Object(Default::default());
    let pod_context = pod_spec.get("securityContext").unwrap_or(&empty);
    let context = container.get("securityContext").unwrap_or(&empty);
    for key in keys(pod_context) {
        if ![
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "fsGroup",
            "seccompProfile",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("pod securityContext.{key} is not translated"));
        }
    }
    for key in keys(context) {
        if ![
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "readOnlyRootFilesystem",
            "allowPrivilegeEscalation",
            "capabilities",
            "seccompProfile",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("securityContext.{key} is not translated"));
        }
    }
    let effective = |key: &str| context.get(key).or_else(|| pod_context.get(key));
    let mut args = Vec::new();
    let user = effective("runAsUser").and_then(Value::as_u64);
    let group = effective("runAsGroup").and_then(Value::as_u64);
    if effective("runAsNonRoot").and_then(Value::as_bool) == Some(true) && user.unwrap_or(0) == 0 {
        // The kubelet refuses such a container unless the image's USER is numeric non-root;
        // the chart always sets runAsUser, so this translation demands it.
        return Err("runAsNonRoot without a non-zero runAsUser".to_owned());
    }
    match (user, group) {
        (Some(user), Some(group)) => args.push(format!("--user={user}:{group}")),
        (Some(user), None) => args.push(format!("--user={user}")),
        (None, Some(_)) => return Err("runAsGroup without runAsUser".to_owned()),
        (None, None) => {}
    }
    if let Some(fs_group) = pod_context.get("fsGroup").and_then(Value::as_u64) {
        // The kubelet adds fsGroup to every container's supplementary groups.
        args.push(format!("--group-add={fs_group}"));
    }
    if context
        .get("readOnlyRootFilesystem")
        .and_then(Value::as_bool)
        == Some(true)
    {
        // podman adds tmpfs on /tmp, /run and /var/tmp to a read-only container; a kubelet
        // does not, so neither does this.
        args.push("--read-only".to_owned());
        args.push("--read-only-tmpfs=false".to_owned());
    }
    if context
        .get("allowPrivilegeEscalation")
        .and_then(Value::as_bool)
        == Some(false)
    {
        args.push("--security-opt=no-new-privileges".to_owned());
    }
    if let Some(capabilities) = context.get("capabilities") {
        for key in keys(capabilities) {
            if key != "drop" && key != "add" {
                return Err(format!("capabilities.{key} is not translated"));
            }
        }
        for drop in strings(capabilities, "drop")? {
            args.push(format!("--cap-drop={}", drop.to_lowercase()));
        }
        for add in strings(capabilities, "add")? {
            args.push(format!("--cap-add={}", add.to_lowercase()));
        }
    }
    match effective("seccompProfile")
        .and_then(|profile| profile.get("type"))
        .and_then(Value::as_str)
    {
        // podman's default profile is the container runtime's default, as RuntimeDefault is.
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".to_owned()),
        Some(other) => return Err(format!("seccompProfile type {other} is not translated")),
    }
    Ok(args)
}

fn field_ref(from: &Value, pod: &PodIdentity) -> Result<String, String> {
    let path = from
        .get("fieldRef")
        .and_then(|field| field.get("fieldPath"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("only fieldRef is translated, not {from}"))?;
    match path {
        "status.podIP" => Ok(pod.ip.clone()),
        "metadata.name" => Ok(pod.name.clone()),
        "metadata.namespace" => Ok(pod.namespace.clone()),
        other => Err(format!("fieldRef {other} is not translated")),
    }
}

/// Makes the pod's volumes under `dir` as the kubelet would; their host folders by name.
pub fn make_volumes(
    pod_spec: &Value,
    claim_templates: &[Value],
    config_maps: &BTreeMap<String, Value>,
    dir: &Path,
) -> io::Result<BTreeMap<String, PathBuf>> {
    let fs_group = pod_spec
        .get("securityContext")
        .and_then(|context| context.get("fsGroup"))
        .and_then(Value::as_u64)
        .map(|group| group as u32);
    let mut made = BTreeMap::new();
    for (name, source) in volumes(pod_spec, claim_templates).map_err(io::Error::other)? {
        let path = dir.join(&name);
        std::fs::create_dir_all(&path)?;
        match &source {
            VolumeSource::EmptyDir => {
                // The kubelet makes an emptyDir 0777 (and, with fsGroup, group-owned set-gid).
                set_mode(&path, if fs_group.is_some() { 0o2777 } else { 0o777 })?;
            }
            VolumeSource::ConfigMap { name: map } => {
                let object = config_maps.get(map).ok_or_else(|| {
                    io::Error::other(format!("volume {name}: ConfigMap {map} was not rendered"))
                })?;
                for (key, value) in object
                    .get("data")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let file = path.join(key);
                    std::fs::write(&file, value.as_str().unwrap_or_default())?;
                    // defaultMode 0644, as the kubelet writes a ConfigMap's files.
                    set_mode(&file, 0o644)?;
                }
                set_mode(&path, if fs_group.is_some() { 0o2755 } else { 0o755 })?;
            }
            VolumeSource::Claim => {
                set_mode(&path, if fs_group.is_some() { 0o2775 } else { 0o755 })?;
            }
        }
        if let Some(group) = fs_group {
            chown_tree(&path, group)?;
        }
        made.insert(name, path);
    }
    Ok(made)
}

fn chown_tree(path: &Path, group: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(group))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), group)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|object| object.keys().cloned().collect())
        .unwrap_or_default()
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{key} missing in {value}"))
}

fn strings(value: &Value, key: &str) -> Result<Vec<String>, String> {
    array(value, key)
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{key}: {item} is not a string"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodIdentity {
        PodIdentity {
            name: "demo-0".to_owned(),
            namespace: "flink".to_owned(),
            ip: "10.89.0.10".to_owned(),
        }
    }

    fn spec() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "config", "configMap": {"name": "zk"}},
                        {"name": "tmp", "emptyDir": {}}],
            "containers": [{
                "name": "zookeeper", "image": "zookeeper:3.9.3",
                "command": ["bash", "-c", "exec zkServer.sh start-foreground"],
                "env": [{"name": "ZOO_LOG_DIR", "value": "/logs"},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
                    "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
                "volumeMounts": [{"name": "config", "mountPath": "/conf", "readOnly": true},
                                 {"name": "tmp", "mountPath": "/tmp"}]
            }]
        })
    }

    fn dirs() -> BTreeMap<String, PathBuf> {
        BTreeMap::from([
            ("config".to_owned(), PathBuf::from("/v/config")),
            ("tmp".to_owned(), PathBuf::from("/v/tmp")),
        ])
    }

    #[test]
    fn a_container_runs_with_exactly_its_security_context_env_mounts_and_command() {
        let spec = spec();
        let args = container_args(&spec, &spec["containers"][0], &pod(), &dirs()).unwrap();
        assert_eq!(
            args,
            [
                "--image-volume=ignore",
                "--user=1000:1000",
                "--group-add=1000",
                "--read-only",
                "--read-only-tmpfs=false",
                "--security-opt=no-new-privileges",
                "--cap-drop=all",
                "--env=ZOO_LOG_DIR=/logs",
                "--env=POD_IP=10.89.0.10",
                "--volume=/v/config:/conf:ro",
                "--volume=/v/tmp:/tmp:rw",
                r#"--entrypoint=["bash","-c","exec zkServer.sh start-foreground"]"#,
                "zookeeper:3.9.3",
            ]
        );
    }

    #[test]
    fn an_unknown_security_field_is_refused_rather_than_dropped() {
        let mut spec = spec();
        spec["containers"][0]["securityContext"]["privileged"] = json!(false);
        let error = container_args(&spec, &spec["containers"][0], &pod(), &dirs()).unwrap_err();
        assert!(error.contains("securityContext.privileged"), "{error}");
    }

    #[test]
    fn run_as_non_root_without_a_user_is_refused() {
        let mut spec = spec();
        let context = spec["containers"][0]["securityContext"]
            .as_object_mut()
            .unwrap();
        context.remove("runAsUser");
        context.remove("runAsGroup");
        let error = container_args(&spec, &spec["containers"][0], &pod(), &dirs()).unwrap_err();
        assert!(error.contains("runAsNonRoot"), "{error}");
    }

    #[test]
    fn a_volume_kind_not_translated_is_named() {
        let spec =
            json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "x"}}]});
        let error = volumes(&spec, &[]).unwrap_err();
        assert!(error.contains("volume data"), "{error}");
    }
}
