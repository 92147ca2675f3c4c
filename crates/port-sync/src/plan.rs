//! The planner: the Service's ports as read + the ports the JobManager wants -> one RFC 6902
//! JSON Patch that sets `port` and `targetPort` of exactly the mapped entries, or nothing when
//! they already match. Pure: no I/O, no clock.
//!
//! The patch addresses entries by index, as JSON Patch must, so it first `test`s each touched
//! entry's name and old values: if anyone reorders or edits those entries between our read and
//! our patch, the API server refuses the whole patch (422) and we re-read, instead of changing
//! the wrong entry. The patch does not pin the resourceVersion: the `test` ops guard exactly
//! what it touches, so an unrelated concurrent change (a label, another port) costs no retry.
//! Not server-side apply and not strategic merge: both key Service ports by
//! (port, protocol), so changing a port number there adds a second entry instead of replacing.

use crate::ports::{DesiredPorts, PortPair};
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::fmt;

/// One entry to change, for logs and `--once` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub index: usize,
    pub name: String,
    pub old_port: i32,
    /// `targetPort` as read: a number, a container port name, or absent.
    pub old_target_port: Option<IntOrString>,
    pub new_port: u16,
    /// What the JobManager listens on: `new_port` unless Flink has a bind port.
    pub new_target_port: u16,
}

impl fmt::Display for Change {
    /// `rpc (index 0): port 6123 -> 46911, targetPort 6123 -> 33221`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (index {}): port {} -> {}, targetPort {} -> {}",
            self.name,
            self.index,
            self.old_port,
            self.new_port,
            show_target(self.old_target_port.as_ref()),
            self.new_target_port
        )
    }
}

/// A patch to send and what it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub patch: json_patch::Patch,
}

impl Plan {
    pub fn patch_json(&self) -> Value {
        serde_json::to_value(&self.patch).expect("a JSON Patch always serialises")
    }
}

/// Why no patch can be planned; waiting or retrying does not help until the Service (or
/// `--port`) is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A `--port` name the Service does not have.
    PortNameMissing {
        missing: Vec<String>,
        present: Vec<String>,
    },
    /// Two Service ports share a mapped name, so which one to change is not clear.
    PortNameTwice { name: String },
    /// After the change two entries would have the same port and protocol, which the API
    /// server refuses.
    PortClash { port: u16, names: Vec<String> },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::PortNameMissing { missing, present } => {
                let present = if present.is_empty() {
                    "it has no ports".to_owned()
                } else {
                    format!("it has: {}", present.join(", "))
                };
                write!(
                    f,
                    "the Service has no port named {} ({present}); add a port with that name to the \
                     Service, or map another name with --port NAME=FLINK_KEY",
                    missing.join(", ")
                )
            }
            PlanError::PortNameTwice { name } => write!(
                f,
                "the Service has two ports named {name}; port names must be unique"
            ),
            PlanError::PortClash { port, names } => write!(
                f,
                "setting the ports would give {} the same port {port} and protocol, which \
                 Kubernetes refuses",
                names.join(" and ")
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Plans the patch that makes the Service's mapped ports equal `desired`; `Ok(None)` when
/// they already are. Only names in `desired` are looked at or touched.
pub fn plan(service: &Service, desired: &DesiredPorts) -> Result<Option<Plan>, PlanError> {
    let ports: &[ServicePort] = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default();
    let indexes = mapped_indexes(ports, desired)?;
    let changes: Vec<Change> = indexes
        .into_iter()
        .filter_map(|(index, new)| {
            let entry = &ports[index];
            let in_place = entry.port == i32::from(new.port)
                && entry.target_port == Some(IntOrString::Int(i32::from(new.target_port)));
            (!in_place).then(|| Change {
                index,
                name: entry.name.clone().unwrap_or_default(),
                old_port: entry.port,
                old_target_port: entry.target_port.clone(),
                new_port: new.port,
                new_target_port: new.target_port,
            })
        })
        .collect();
    if changes.is_empty() {
        return Ok(None);
    }
    check_no_clash(ports, &changes)?;
    let patch = patch_for(&changes);
    Ok(Some(Plan { changes, patch }))
}

/// True when every mapped port already equals the desired one (in `port` and `targetPort`).
pub fn in_sync(service: &Service, desired: &DesiredPorts) -> bool {
    matches!(plan(service, desired), Ok(None))
}

/// The Service's ports as `(name, port, targetPort)`, for output; `targetPort` as read: a
/// number, a container port name, or absent.
pub fn describe_ports(service: &Service) -> Vec<(String, i32, Option<IntOrString>)> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            (
                entry.name.clone().unwrap_or_else(|| "(unnamed)".into()),
                entry.port,
                entry.target_port.clone(),
            )
        })
        .collect()
}

/// The index of each desired name in the Service's ports, in name order.
fn mapped_indexes(
    ports: &[ServicePort],
    desired: &DesiredPorts,
) -> Result<Vec<(usize, PortPair)>, PlanError> {
    let mut found = Vec::with_capacity(desired.len());
    let mut missing = Vec::new();
    for (name, new) in desired.pairs() {
        let mut matching = ports
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.name.as_deref() == Some(name));
        match (matching.next(), matching.next()) {
            (Some((index, _)), None) => found.push((index, new)),
            (Some(_), Some(_)) => return Err(PlanError::PortNameTwice { name: name.into() }),
            (None, _) => missing.push(name.to_owned()),
        }
    }
    if !missing.is_empty() {
        return Err(PlanError::PortNameMissing {
            missing,
            present: ports
                .iter()
                .map(|entry| entry.name.clone().unwrap_or_else(|| "(unnamed)".into()))
                .collect(),
        });
    }
    Ok(found)
}

fn check_no_clash(ports: &[ServicePort], changes: &[Change]) -> Result<(), PlanError> {
    let after = |index: usize, entry: &ServicePort| -> i32 {
        changes
            .iter()
            .find(|change| change.index == index)
            .map_or(entry.port, |change| i32::from(change.new_port))
    };
    for change in changes {
        let protocol = protocol_of(&ports[change.index]);
        let names: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(index, entry)| {
                after(*index, entry) == i32::from(change.new_port) && protocol_of(entry) == protocol
            })
            .map(|(_, entry)| entry.name.clone().unwrap_or_else(|| "(unnamed)".into()))
            .collect();
        if names.len() > 1 {
            return Err(PlanError::PortClash {
                port: change.new_port,
                names,
            });
        }
    }
    Ok(())
}

fn protocol_of(entry: &ServicePort) -> &str {
    entry.protocol.as_deref().unwrap_or("TCP")
}

/// All `test` ops first, then the changes: the server checks the whole view before it
/// changes anything (it would refuse the whole patch anyway, but this order reads right).
fn patch_for(changes: &[Change]) -> json_patch::Patch {
    let mut tests = Vec::new();
    let mut sets = Vec::new();
    for change in changes {
        let at = |field: &str| format!("/spec/ports/{}/{field}", change.index);
        tests.push(json!({"op": "test", "path": at("name"), "value": change.name}));
        tests.push(json!({"op": "test", "path": at("port"), "value": change.old_port}));
        sets.push(json!({"op": "replace", "path": at("port"), "value": change.new_port}));
        match &change.old_target_port {
            Some(old) => {
                tests.push(json!({"op": "test", "path": at("targetPort"), "value": old}));
                sets.push(
                    json!({"op": "replace", "path": at("targetPort"), "value": change.new_target_port}),
                );
            }
            // The API server defaults targetPort to port, so a Service read from it always
            // has one; `add` covers an object that was never defaulted.
            None => sets.push(
                json!({"op": "add", "path": at("targetPort"), "value": change.new_target_port}),
            ),
        }
    }
    tests.extend(sets);
    serde_json::from_value(Value::Array(tests)).expect("the ops are well-formed JSON Patch")
}

/// `targetPort` for a text line: `6123`, `"rpc"` (a container port name) or `(unset)`.
pub fn show_target(target: Option<&IntOrString>) -> String {
    match target {
        Some(IntOrString::Int(port)) => port.to_string(),
        Some(IntOrString::String(name)) => format!("{name:?}"),
        None => "(unset)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "flink-jobmanager", "namespace": "flink", "resourceVersion": "41",
                         "labels": {"app": "flink"}},
            "spec": {"selector": {"app": "flink"}, "ports": ports},
        }))
        .unwrap()
    }

    fn chart_service() -> Service {
        service(json!([
            {"name": "rest", "port": 8081, "targetPort": 8081, "protocol": "TCP"},
            {"name": "rpc", "port": 6123, "targetPort": 6123, "protocol": "TCP"},
            {"name": "blob", "port": 6124, "targetPort": 6124, "protocol": "TCP"},
        ]))
    }

    fn live_ports() -> DesiredPorts {
        DesiredPorts::from([("rpc", 44215), ("blob", 33533)])
    }

    /// Applies a plan the way the API server does: to the object as stored, all or nothing.
    fn apply(plan: &Plan, to: &Service) -> Result<Value, json_patch::PatchError> {
        let mut document = serde_json::to_value(to).unwrap();
        json_patch::patch(&mut document, &plan.patch)?;
        Ok(document)
    }

    #[test]
    fn nothing_to_do_when_the_ports_already_match() {
        let current = service(json!([
            {"name": "rpc", "port": 44215, "targetPort": 44215},
            {"name": "blob", "port": 33533, "targetPort": 33533},
        ]));
        assert_eq!(plan(&current, &live_ports()), Ok(None));
        assert!(in_sync(&current, &live_ports()));
    }

    #[test]
    fn the_patch_changes_exactly_port_and_target_port_of_the_mapped_entries() {
        let before = chart_service();
        let plan = plan(&before, &live_ports()).unwrap().unwrap();
        let after = apply(&plan, &before).unwrap();

        let mut expected = serde_json::to_value(&before).unwrap();
        expected["spec"]["ports"][1]["port"] = json!(44215);
        expected["spec"]["ports"][1]["targetPort"] = json!(44215);
        expected["spec"]["ports"][2]["port"] = json!(33533);
        expected["spec"]["ports"][2]["targetPort"] = json!(33533);
        assert_eq!(after, expected);
        let after: Service = serde_json::from_value(after).unwrap();
        assert!(in_sync(&after, &live_ports()));
    }

    #[test]
    fn test_ops_come_first_and_pin_index_name_and_old_values() {
        let plan = plan(&chart_service(), &DesiredPorts::from([("rpc", 44215)]))
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.patch_json(),
            json!([
                {"op": "test", "path": "/spec/ports/1/name", "value": "rpc"},
                {"op": "test", "path": "/spec/ports/1/port", "value": 6123},
                {"op": "test", "path": "/spec/ports/1/targetPort", "value": 6123},
                {"op": "replace", "path": "/spec/ports/1/port", "value": 44215},
                {"op": "replace", "path": "/spec/ports/1/targetPort", "value": 44215},
            ])
        );
        assert_eq!(
            plan.changes[0].to_string(),
            "rpc (index 1): port 6123 -> 44215, targetPort 6123 -> 44215"
        );
    }

    #[test]
    fn a_reordered_service_fails_the_test_ops_and_is_left_unchanged() {
        let plan = plan(&chart_service(), &live_ports()).unwrap().unwrap();
        let reordered = service(json!([
            {"name": "rpc", "port": 6123, "targetPort": 6123, "protocol": "TCP"},
            {"name": "rest", "port": 8081, "targetPort": 8081, "protocol": "TCP"},
            {"name": "blob", "port": 6124, "targetPort": 6124, "protocol": "TCP"},
        ]));
        assert!(apply(&plan, &reordered).is_err());
    }

    #[test]
    fn a_concurrent_edit_of_a_touched_entry_fails_the_test_ops() {
        let plan = plan(&chart_service(), &live_ports()).unwrap().unwrap();
        let edited = service(json!([
            {"name": "rest", "port": 8081, "targetPort": 8081, "protocol": "TCP"},
            {"name": "rpc", "port": 6123, "targetPort": 7000, "protocol": "TCP"},
            {"name": "blob", "port": 6124, "targetPort": 6124, "protocol": "TCP"},
        ]));
        assert!(apply(&plan, &edited).is_err());
    }

    #[test]
    fn a_named_target_port_is_replaced_by_the_number() {
        let before = service(json!([{"name": "rpc", "port": 6123, "targetPort": "rpc"}]));
        let plan = plan(&before, &DesiredPorts::from([("rpc", 44215)]))
            .unwrap()
            .unwrap();
        assert!(
            plan.changes[0]
                .to_string()
                .contains("targetPort \"rpc\" -> 44215")
        );
        let after = apply(&plan, &before).unwrap();
        assert_eq!(after["spec"]["ports"][0]["port"], json!(44215));
        assert_eq!(after["spec"]["ports"][0]["targetPort"], json!(44215));
    }

    #[test]
    fn a_port_already_right_but_with_another_target_is_fixed() {
        let before = service(json!([{"name": "rpc", "port": 44215, "targetPort": 6123}]));
        let plan = plan(&before, &DesiredPorts::from([("rpc", 44215)]))
            .unwrap()
            .unwrap();
        let after: Service = serde_json::from_value(apply(&plan, &before).unwrap()).unwrap();
        assert!(in_sync(&after, &DesiredPorts::from([("rpc", 44215)])));
    }

    #[test]
    fn an_undefaulted_target_port_is_added() {
        let before = service(json!([{"name": "rpc", "port": 6123}]));
        let plan = plan(&before, &DesiredPorts::from([("rpc", 44215)]))
            .unwrap()
            .unwrap();
        let after = apply(&plan, &before).unwrap();
        assert_eq!(after["spec"]["ports"][0]["targetPort"], json!(44215));
    }

    #[test]
    fn only_the_entries_that_differ_are_touched() {
        let before = service(json!([
            {"name": "rpc", "port": 44215, "targetPort": 44215},
            {"name": "blob", "port": 6124, "targetPort": 6124},
        ]));
        let plan = plan(&before, &live_ports()).unwrap().unwrap();
        assert_eq!(plan.changes.len(), 1);
        assert_eq!(plan.changes[0].name, "blob");
        assert!(
            plan.patch_json()
                .as_array()
                .unwrap()
                .iter()
                .all(|op| op["path"].as_str().unwrap().starts_with("/spec/ports/1/"))
        );
    }

    #[test]
    fn a_missing_name_lists_the_names_the_service_has() {
        let before = service(json!([
            {"name": "rest", "port": 8081, "targetPort": 8081},
            {"name": "rpc", "port": 6123, "targetPort": 6123},
        ]));
        let error = plan(&before, &live_ports()).unwrap_err();
        assert_eq!(
            error,
            PlanError::PortNameMissing {
                missing: vec!["blob".into()],
                present: vec!["rest".into(), "rpc".into()],
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("no port named blob (it has: rest, rpc)"),
            "{message}"
        );
    }

    #[test]
    fn a_service_without_ports_says_so() {
        let mut bare = chart_service();
        bare.spec.as_mut().unwrap().ports = None;
        let message = plan(&bare, &live_ports()).unwrap_err().to_string();
        assert!(
            message.contains("no port named blob, rpc (it has no ports)"),
            "{message}"
        );
    }

    #[test]
    fn a_duplicate_name_is_refused() {
        let before = service(json!([
            {"name": "rpc", "port": 6123, "protocol": "TCP"},
            {"name": "rpc", "port": 6123, "protocol": "UDP"},
        ]));
        let error = plan(&before, &DesiredPorts::from([("rpc", 1)])).unwrap_err();
        assert_eq!(error, PlanError::PortNameTwice { name: "rpc".into() });
    }

    #[test]
    fn a_port_that_another_entry_keeps_is_a_clash() {
        let before = chart_service();
        let error = plan(&before, &DesiredPorts::from([("rpc", 8081)])).unwrap_err();
        assert_eq!(
            error,
            PlanError::PortClash {
                port: 8081,
                names: vec!["rest".into(), "rpc".into()]
            }
        );
    }

    fn bind_port_pair() -> DesiredPorts {
        let mut desired = DesiredPorts::default();
        desired.insert_pair(
            "rpc",
            PortPair {
                port: 46911,
                target_port: 33221,
            },
        );
        desired
    }

    #[test]
    fn a_bind_port_becomes_the_target_port_and_the_advertised_port_the_port() {
        let before = chart_service();
        let plan = plan(&before, &bind_port_pair()).unwrap().unwrap();
        assert_eq!(
            plan.changes[0].to_string(),
            "rpc (index 1): port 6123 -> 46911, targetPort 6123 -> 33221"
        );
        let after = apply(&plan, &before).unwrap();
        assert_eq!(after["spec"]["ports"][1]["port"], json!(46911));
        assert_eq!(after["spec"]["ports"][1]["targetPort"], json!(33221));
        let after: Service = serde_json::from_value(after).unwrap();
        assert!(in_sync(&after, &bind_port_pair()));
        // The same Service with port = targetPort = the advertised port is not in sync.
        assert!(!in_sync(&after, &DesiredPorts::from([("rpc", 46911)])));
    }

    #[test]
    fn an_undefaulted_target_port_is_added_as_the_bind_port() {
        let before = service(json!([{"name": "rpc", "port": 6123}]));
        let plan = plan(&before, &bind_port_pair()).unwrap().unwrap();
        let after = apply(&plan, &before).unwrap();
        assert_eq!(after["spec"]["ports"][0]["port"], json!(46911));
        assert_eq!(after["spec"]["ports"][0]["targetPort"], json!(33221));
    }

    #[test]
    fn swapping_two_mapped_ports_is_not_a_clash() {
        let before = chart_service();
        let swapped = DesiredPorts::from([("rpc", 6124), ("blob", 6123)]);
        let plan = plan(&before, &swapped).unwrap().unwrap();
        let after: Service = serde_json::from_value(apply(&plan, &before).unwrap()).unwrap();
        assert!(in_sync(&after, &swapped));
    }
}
