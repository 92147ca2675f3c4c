//! Judges rendered NetworkPolicy objects the way a network plugin enforces them, for the chart
//! tests: no CNI runs here, so whether a connection would be admitted is computed from the
//! objects (networking.k8s.io/v1 semantics: a pod no Ingress policy selects admits everything;
//! a selected pod admits a connection when any rule of any policy selecting it admits the
//! source and port). ipBlock peers are not judged (the chart renders none).

use serde_json::Value;
use std::collections::BTreeMap;

/// One end of a connection: a pod's labels and its namespace's labels.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
}

impl Pod {
    /// A pod in `namespace` with `labels`; its namespace carries the label the API server sets
    /// on every namespace, `kubernetes.io/metadata.name`.
    pub fn new(namespace: &str, labels: &Value) -> Pod {
        let labels = labels
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(key, value)| {
                        (key.clone(), value.as_str().unwrap_or_default().to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Pod {
            namespace: namespace.to_owned(),
            labels,
            namespace_labels: BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                namespace.to_owned(),
            )]),
        }
    }
}

/// Whether a TCP connection from `source` to `target` on `port` is admitted by `policies`
/// (every NetworkPolicy of the cluster; those of other namespaces select nothing here).
pub fn admitted(policies: &[Value], source: &Pod, target: &Pod, port: u16) -> bool {
    let selecting: Vec<&Value> = policies
        .iter()
        .filter(|policy| {
            policy["metadata"]["namespace"]
                .as_str()
                .is_none_or(|namespace| namespace == target.namespace)
                && governs_ingress(policy)
                && selector_matches(&policy["spec"]["podSelector"], &target.labels)
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|policy| {
        policy["spec"]["ingress"].as_array().is_some_and(|rules| {
            rules
                .iter()
                .any(|rule| rule_admits(rule, &target.namespace, source, port))
        })
    })
}

/// policyTypes lists Ingress, or is absent (then every policy governs ingress).
fn governs_ingress(policy: &Value) -> bool {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => types.iter().any(|kind| kind == "Ingress"),
        None => true,
    }
}

fn rule_admits(rule: &Value, policy_namespace: &str, source: &Pod, port: u16) -> bool {
    let from_admits = match rule["from"].as_array() {
        None => true,
        Some(peers) if peers.is_empty() => true,
        Some(peers) => peers
            .iter()
            .any(|peer| peer_matches(peer, policy_namespace, source)),
    };
    let port_admits = match rule["ports"].as_array() {
        None => true,
        Some(ports) if ports.is_empty() => true,
        Some(ports) => ports.iter().any(|entry| port_matches(entry, port)),
    };
    from_admits && port_admits
}

/// A peer: podSelector alone selects pods of the policy's namespace; namespaceSelector alone
/// every pod of the matching namespaces; both, the matching pods of the matching namespaces.
fn peer_matches(peer: &Value, policy_namespace: &str, source: &Pod) -> bool {
    let pods = &peer["podSelector"];
    let namespaces = &peer["namespaceSelector"];
    let namespace_ok = if namespaces.is_null() {
        source.namespace == policy_namespace
    } else {
        selector_matches(namespaces, &source.namespace_labels)
    };
    let pod_ok = pods.is_null() || selector_matches(pods, &source.labels);
    !(pods.is_null() && namespaces.is_null()) && namespace_ok && pod_ok
}

fn port_matches(entry: &Value, port: u16) -> bool {
    let protocol_ok = entry["protocol"].as_str().is_none_or(|p| p == "TCP");
    let Some(first) = entry["port"].as_u64() else {
        // No port (all ports) or a named port, which the chart never renders.
        return protocol_ok && entry["port"].is_null();
    };
    let last = entry["endPort"].as_u64().unwrap_or(first);
    protocol_ok && (first..=last).contains(&u64::from(port))
}

/// A LabelSelector: every matchLabels pair and every matchExpressions requirement holds; an
/// empty selector selects everything.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector["matchLabels"].as_object().is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(key, value)| labels.get(key).map(String::as_str) == value.as_str())
    });
    let expressions_ok = selector["matchExpressions"]
        .as_array()
        .is_none_or(|requirements| {
            requirements.iter().all(|requirement| {
                let key = requirement["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = requirement["values"]
                    .as_array()
                    .map(|values| values.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let value = labels.get(key).map(String::as_str);
                match requirement["operator"].as_str() {
                    Some("In") => value.is_some_and(|v| values.contains(&v)),
                    Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                    Some("Exists") => value.is_some(),
                    Some("DoesNotExist") => value.is_none(),
                    other => panic!("not a LabelSelector operator: {other:?}"),
                }
            })
        });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, labels: Value) -> Pod {
        Pod::new(namespace, &labels)
    }

    #[test]
    fn an_unselected_pod_admits_everything_and_a_selected_one_only_its_rules() {
        let policy = json!({
            "metadata": {"namespace": "a"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"podSelector": {"matchExpressions": [
                        {"key": "role", "operator": "In", "values": ["app"]}
                    ]}}],
                    "ports": [{"protocol": "TCP", "port": 5000, "endPort": 5010}]
                }]
            }
        });
        let db = pod("a", json!({"role": "db"}));
        let app = pod("a", json!({"role": "app"}));
        let app_elsewhere = pod("b", json!({"role": "app"}));
        let policies = [policy];
        assert!(admitted(&policies, &app, &db, 5010));
        assert!(!admitted(&policies, &app, &db, 5011));
        assert!(!admitted(&policies, &db, &db, 5000));
        assert!(!admitted(&policies, &app_elsewhere, &db, 5000));
        assert!(admitted(&policies, &db, &app, 1));
    }

    #[test]
    fn a_namespace_selector_admits_pods_of_matching_namespaces() {
        let policy = json!({
            "spec": {
                "podSelector": {},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": "monitoring"
                }}}]}]
            }
        });
        let target = pod("a", json!({}));
        let policies = [policy];
        assert!(admitted(
            &policies,
            &pod("monitoring", json!({})),
            &target,
            8099
        ));
        assert!(!admitted(&policies, &pod("a", json!({})), &target, 8099));
    }
}
