//! The kinds of object the stand-in serves, one row each: where they live in the URL space,
//! how the real server defaults and validates them, and which lists strategic merge patch
//! merges by key. Serving another kind is adding a row: besides Services (port-sync's kind,
//! validated as the real server does), the kinds the Helm chart creates, kept in the store as
//! given after a check of their name (Helm creates them; nothing here acts on them).

use super::status::FieldError;
use super::validate;
use serde_json::Value;

pub struct ResourceType {
    /// API group; "" for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural used in URLs and RBAC rules.
    pub plural: &'static str,
    pub namespaced: bool,
    /// Fills in defaults, then validates; returns the field errors a 422 lists.
    pub prepare: fn(&mut Value) -> Result<(), Vec<FieldError>>,
    /// (path of a list in the object, the key its items merge by) for strategic merge patch.
    pub merge_keys: &'static [(&'static str, &'static str)],
}

impl ResourceType {
    /// `v1` or `group/v1`, as objects of this kind carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub static SERVICES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    namespaced: true,
    prepare: validate::prepare_service,
    // ServicePort's patchMergeKey is `port` (not port+protocol), as in k8s.io/api.
    merge_keys: &[("spec.ports", "port"), ("metadata.ownerReferences", "uid")],
};

/// A kind the stand-in stores as given, checking only the name: what Helm's install needs.
const fn stored_as_given(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> ResourceType {
    ResourceType {
        group,
        version,
        kind,
        plural,
        namespaced: true,
        prepare: validate::prepare_named_object,
        merge_keys: &[("metadata.ownerReferences", "uid")],
    }
}

pub static CONFIG_MAPS: ResourceType = stored_as_given("", "v1", "ConfigMap", "configmaps");
pub static SERVICE_ACCOUNTS: ResourceType =
    stored_as_given("", "v1", "ServiceAccount", "serviceaccounts");
pub static PERSISTENT_VOLUME_CLAIMS: ResourceType =
    stored_as_given("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims");
pub static PODS: ResourceType = stored_as_given("", "v1", "Pod", "pods");
pub static DEPLOYMENTS: ResourceType = stored_as_given("apps", "v1", "Deployment", "deployments");
pub static STATEFUL_SETS: ResourceType =
    stored_as_given("apps", "v1", "StatefulSet", "statefulsets");
pub static POD_DISRUPTION_BUDGETS: ResourceType = stored_as_given(
    "policy",
    "v1",
    "PodDisruptionBudget",
    "poddisruptionbudgets",
);
pub static ROLES: ResourceType =
    stored_as_given("rbac.authorization.k8s.io", "v1", "Role", "roles");
pub static ROLE_BINDINGS: ResourceType = stored_as_given(
    "rbac.authorization.k8s.io",
    "v1",
    "RoleBinding",
    "rolebindings",
);
pub static NETWORK_POLICIES: ResourceType = stored_as_given(
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "networkpolicies",
);
/// prometheus-operator's kinds (CustomResourceDefinitions in a real cluster), which the chart
/// creates when its monitoring values are on.
pub static SERVICE_MONITORS: ResourceType = stored_as_given(
    "monitoring.coreos.com",
    "v1",
    "ServiceMonitor",
    "servicemonitors",
);
pub static PROMETHEUS_RULES: ResourceType = stored_as_given(
    "monitoring.coreos.com",
    "v1",
    "PrometheusRule",
    "prometheusrules",
);

static ALL: &[&ResourceType] = &[
    &SERVICES,
    &CONFIG_MAPS,
    &SERVICE_ACCOUNTS,
    &PERSISTENT_VOLUME_CLAIMS,
    &PODS,
    &DEPLOYMENTS,
    &STATEFUL_SETS,
    &POD_DISRUPTION_BUDGETS,
    &ROLES,
    &ROLE_BINDINGS,
    &NETWORK_POLICIES,
    &SERVICE_MONITORS,
    &PROMETHEUS_RULES,
];

/// The kind `api_version` (`v1`, `apps/v1`) and `kind` (`Deployment`) name, if served.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .copied()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The named groups served (not the core group), each once, in table order.
pub fn named_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for resource in ALL.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(resource.group, resource.version)) {
            groups.push((resource.group, resource.version));
        }
    }
    groups
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every kind served in one group-version, for discovery answers.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceType> {
    ALL.iter()
        .copied()
        .filter(move |r| r.group == group && r.version == version)
}
