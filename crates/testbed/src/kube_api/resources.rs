//! The kinds of object the stand-in serves, one row each: where they live in the URL space,
//! how the real server defaults and validates them, and which lists strategic merge patch
//! merges by key. Serving another kind (as the Helm runner will need) is adding a row.

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

static ALL: &[&ResourceType] = &[&SERVICES];

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
