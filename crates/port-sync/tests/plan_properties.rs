//! Properties of the patch planner over generated Services and desired ports, checked by
//! applying the planned patch with the `json-patch` crate (the same 4.x line the API stand-in
//! and kube use): only the mapped entries change, and they end holding the desired ports; a
//! reorder after planning makes the patch fail instead of changing the wrong entry.

use k8s_openapi::api::core::v1::Service;
use port_sync::plan::{PlanError, plan};
use port_sync::ports::DesiredPorts;
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMES: [&str; 6] = ["rpc", "blob", "rest", "metrics", "ui", "query"];

/// A Service with 1-6 uniquely named ports on distinct numbers; targetPort a number, a
/// container port name, or absent.
fn service() -> impl Strategy<Value = Value> {
    (1..=NAMES.len())
        .prop_flat_map(|count| {
            (
                prop::collection::hash_set(1u16..=65535, count),
                prop::collection::vec(0u8..3, count),
                prop::collection::vec(1u16..=65535, count),
            )
        })
        .prop_map(|(ports, target_kinds, targets)| {
            let entries: Vec<Value> = ports
                .into_iter()
                .zip(target_kinds)
                .zip(targets)
                .enumerate()
                .map(|(index, ((port, kind), target))| {
                    let mut entry = json!({"name": NAMES[index], "port": port, "protocol": "TCP"});
                    match kind {
                        0 => entry["targetPort"] = json!(target),
                        1 => entry["targetPort"] = json!(format!("{}-port", NAMES[index])),
                        _ => {}
                    }
                    entry
                })
                .collect();
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "flink-jobmanager", "namespace": "flink",
                             "resourceVersion": "42", "labels": {"app": "flink"}},
                "spec": {"selector": {"app": "flink"}, "ports": entries}
            })
        })
}

/// Desired ports for a subset of the Service's names (chosen by mask).
fn desired_for(service: &Value, mask: u8, values: &[u16]) -> DesiredPorts {
    let mut desired = DesiredPorts::default();
    for (index, entry) in service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        if mask & (1 << index) != 0 {
            desired.insert(entry["name"].as_str().unwrap(), values[index]);
        }
    }
    desired
}

fn typed(service: &Value) -> Service {
    serde_json::from_value(service.clone()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_patch_changes_only_mapped_entries_and_they_end_right(
        service in service(),
        mask in 1u8..64,
        values in prop::collection::vec(1u16..=65535, NAMES.len()),
    ) {
        let desired = desired_for(&service, mask, &values);
        prop_assume!(!desired.is_empty());
        match plan(&typed(&service), &desired) {
            Ok(None) => {
                for entry in service["spec"]["ports"].as_array().unwrap() {
                    if let Some(want) = desired.get(entry["name"].as_str().unwrap()) {
                        prop_assert_eq!(&entry["port"], &json!(want));
                        prop_assert_eq!(&entry["targetPort"], &json!(want));
                    }
                }
            }
            Ok(Some(planned)) => {
                let mut patched = service.clone();
                json_patch::patch(&mut patched, &planned.patch).unwrap();
                let before = service["spec"]["ports"].as_array().unwrap();
                let after = patched["spec"]["ports"].as_array().unwrap();
                prop_assert_eq!(before.len(), after.len());
                for (old, new) in before.iter().zip(after) {
                    prop_assert_eq!(&old["name"], &new["name"], "order kept");
                    match desired.get(old["name"].as_str().unwrap()) {
                        Some(want) => {
                            prop_assert_eq!(&new["port"], &json!(want));
                            prop_assert_eq!(&new["targetPort"], &json!(want));
                            prop_assert_eq!(&new["protocol"], &old["protocol"]);
                        }
                        None => prop_assert_eq!(old, new, "an unmapped entry changed"),
                    }
                }
                let mut rest_before = service.clone();
                let mut rest_after = patched.clone();
                rest_before["spec"]["ports"] = Value::Null;
                rest_after["spec"]["ports"] = Value::Null;
                prop_assert_eq!(rest_before, rest_after, "a field outside the ports changed");
            }
            Err(PlanError::PortClash { port, .. }) => {
                // Refused only when the result would really repeat a port number.
                let mut resulting: Vec<u16> = service["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| desired.get(e["name"].as_str().unwrap())
                        .unwrap_or(e["port"].as_u64().unwrap() as u16))
                    .collect();
                prop_assert!(resulting.contains(&port));
                resulting.sort_unstable();
                let before = resulting.len();
                resulting.dedup();
                prop_assert!(resulting.len() < before, "a clash was claimed where none is");
            }
            Err(other) => prop_assert!(false, "unexpected planning error: {}", other),
        }
    }

    #[test]
    fn a_reorder_after_planning_fails_the_patch_instead_of_changing_the_wrong_entry(
        service in service(),
        mask in 1u8..64,
        values in prop::collection::vec(1u16..=65535, NAMES.len()),
        rotation in 1usize..NAMES.len(),
    ) {
        let desired = desired_for(&service, mask, &values);
        let Ok(Some(planned)) = plan(&typed(&service), &desired) else {
            return Ok(());
        };
        let mut reordered = service.clone();
        let ports = reordered["spec"]["ports"].as_array_mut().unwrap();
        let count = ports.len();
        prop_assume!(count > 1 && rotation % count != 0);
        ports.rotate_left(rotation % count);
        let original = reordered.clone();
        let result = json_patch::patch(&mut reordered, &planned.patch);
        prop_assert!(result.is_err(), "the patch applied to a reordered Service");
        prop_assert_eq!(original, reordered, "a failed patch must change nothing");
    }
}

#[test]
fn a_name_the_service_lacks_is_refused_whatever_else_is_mapped() {
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"name": "rpc", "port": 6123, "targetPort": 6123}]}});
    let mut desired = DesiredPorts::default();
    desired.insert("rpc", 1000);
    desired.insert("blob", 2000);
    assert!(matches!(
        plan(&typed(&service), &desired),
        Err(PlanError::PortNameMissing { .. })
    ));
}
