//! Authorisation by the project's own RBAC manifests: the rules of `rbac/role.yaml` granted
//! to the subjects of `rbac/rolebinding.yaml`, in the namespace the kustomization puts them
//! in. Matching follows the real RBAC authoriser: apiGroups, resources and verbs (with `*`),
//! and `resourceNames`, which a request only satisfies when it names an object: get, patch,
//! update and delete by path, list and watch through `fieldSelector=metadata.name=<name>`.

use super::auth::{Identity, SUPERUSER_GROUP};
use serde::Deserialize;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// One rule of a Role, as in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl PolicyRule {
    /// A rule for core-group (`""`) resources; `names` empty means any object.
    pub fn core(resources: &[&str], verbs: &[&str], names: &[&str]) -> Self {
        let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        PolicyRule {
            api_groups: vec![String::new()],
            resources: owned(resources),
            verbs: owned(verbs),
            resource_names: owned(names),
        }
    }

    fn matches(&self, request: &RequestAttributes<'_>) -> bool {
        let listed = |items: &[String], wanted: &str| items.iter().any(|i| i == "*" || i == wanted);
        listed(&self.verbs, request.verb)
            && listed(&self.api_groups, request.api_group)
            && listed(&self.resources, request.resource)
            && (self.resource_names.is_empty()
                || request
                    .name
                    .is_some_and(|name| self.resource_names.iter().any(|n| n == name)))
    }
}

/// What a request wants to do, as the authoriser sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestAttributes<'a> {
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub namespace: &'a str,
    /// The object's name from the path, or for list/watch from `fieldSelector=metadata.name=`.
    pub name: Option<&'a str>,
}

/// Where the RBAC manifests are and how a test changes what they grant.
#[derive(Debug, Clone)]
pub struct RbacConfig {
    pub role_path: PathBuf,
    pub rolebinding_path: PathBuf,
    /// The namespace Role and RoleBinding live in. `None`: the kustomization's `namespace`
    /// (the file `kustomization.yaml` beside the Role), else the Role's own, else "default".
    pub namespace: Option<String>,
    /// Verbs taken out of every rule, e.g. `patch` to test port-sync without it.
    pub without_verbs: Vec<String>,
    /// Rules added to the Role.
    pub extra_rules: Vec<PolicyRule>,
    /// Further copies of the Role and RoleBinding in the same namespace, one per Flink
    /// cluster, as further releases of the chart create them.
    pub copies: Vec<RoleCopy>,
}

/// One more copy of the Role and its RoleBinding, as each release of the chart creates for its
/// own Flink cluster: the rules of `rbac/role.yaml` (less `without_verbs`; `extra_rules` stay
/// with the first Role) with every `resourceNames` naming `service`, granted to the service
/// account `service_account` of the Role's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCopy {
    pub service: String,
    pub service_account: String,
}

impl Default for RbacConfig {
    fn default() -> Self {
        let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rbac");
        RbacConfig {
            role_path: rbac.join("role.yaml"),
            rolebinding_path: rbac.join("rolebinding.yaml"),
            namespace: None,
            without_verbs: Vec::new(),
            extra_rules: Vec::new(),
            copies: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct RoleManifest {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Deserialize, Clone)]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleBindingManifest {
    kind: String,
    role_ref: RoleRef,
    #[serde(default)]
    subjects: Vec<Subject>,
}

#[derive(Deserialize)]
struct Kustomization {
    #[serde(default)]
    namespace: Option<String>,
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    serde_saphyr::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("parsing {}: {e}", path.display()),
        )
    })
}

/// The rules in force: one Role, bound to its subjects in one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    namespace: String,
    rules: Vec<PolicyRule>,
    /// Users the binding names: service accounts as `system:serviceaccount:ns:name`.
    users: Vec<String>,
    groups: Vec<String>,
    /// The copies' rules by the user each is bound to.
    copies: HashMap<String, Vec<PolicyRule>>,
}

impl Authorizer {
    pub(crate) fn load(config: &RbacConfig) -> io::Result<Self> {
        let role: RoleManifest = read_yaml(&config.role_path)?;
        let binding: RoleBindingManifest = read_yaml(&config.rolebinding_path)?;
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
        if role.kind != "Role" || binding.kind != "RoleBinding" {
            return Err(invalid(format!(
                "expected a Role and a RoleBinding, found {} and {}",
                role.kind, binding.kind
            )));
        }
        let kustomization_path = config.role_path.with_file_name("kustomization.yaml");
        let kustomized_namespace = if kustomization_path.exists() {
            read_yaml::<Kustomization>(&kustomization_path)?.namespace
        } else {
            None
        };
        let manifest_namespace = kustomized_namespace
            .clone()
            .or(role.metadata.namespace.clone());
        let namespace = config
            .namespace
            .clone()
            .or(manifest_namespace.clone())
            .unwrap_or_else(|| "default".to_owned());

        // A binding whose roleRef names another role grants nothing, as on a real cluster.
        let bound = binding.role_ref.kind == "Role" && binding.role_ref.name == role.metadata.name;
        let mut users = Vec::new();
        let mut groups = Vec::new();
        for subject in binding.subjects.iter().filter(|_| bound) {
            match subject.kind.as_str() {
                "ServiceAccount" => {
                    // The kustomization moves the service account with everything else; a
                    // subject in the manifests' own namespace follows it there.
                    let subject_namespace = match subject.namespace.as_deref() {
                        None | Some("") => namespace.clone(),
                        Some(ns) if Some(ns) == manifest_namespace.as_deref() => namespace.clone(),
                        Some(ns) => ns.to_owned(),
                    };
                    users.push(format!(
                        "system:serviceaccount:{subject_namespace}:{}",
                        subject.name
                    ));
                }
                "User" => users.push(subject.name.clone()),
                "Group" => groups.push(subject.name.clone()),
                other => return Err(invalid(format!("unknown subject kind {other}"))),
            }
        }

        let without_verbs = |mut rules: Vec<PolicyRule>| {
            for rule in &mut rules {
                rule.verbs
                    .retain(|verb| !config.without_verbs.contains(verb));
            }
            rules
        };
        let copies = config
            .copies
            .iter()
            .map(|copy| {
                let mut rules = without_verbs(role.rules.clone());
                for rule in &mut rules {
                    if !rule.resource_names.is_empty() {
                        rule.resource_names = vec![copy.service.clone()];
                    }
                }
                let user = format!("system:serviceaccount:{namespace}:{}", copy.service_account);
                (user, rules)
            })
            .collect();
        let mut rules = role.rules;
        rules.extend(config.extra_rules.iter().cloned());
        Ok(Authorizer {
            namespace,
            rules: without_verbs(rules),
            users,
            groups,
            copies,
        })
    }

    pub(crate) fn allows(&self, identity: &Identity, request: &RequestAttributes<'_>) -> bool {
        if identity.groups.iter().any(|g| g == SUPERUSER_GROUP) {
            return true;
        }
        if request.namespace != self.namespace {
            return false;
        }
        let bound = self.users.contains(&identity.user)
            || identity.groups.iter().any(|g| self.groups.contains(g));
        let copy_rules = self
            .copies
            .get(&identity.user)
            .map_or(&[][..], Vec::as_slice);
        (bound && self.rules.iter().any(|rule| rule.matches(request)))
            || copy_rules.iter().any(|rule| rule.matches(request))
    }
}

/// The real RBAC authoriser's refusal, e.g. `services "flink-jobmanager" is forbidden: User
/// "system:serviceaccount:flink:port-sync" cannot patch resource "services" in API group ""
/// in the namespace "flink"`.
pub(crate) fn forbidden_message(identity: &Identity, request: &RequestAttributes<'_>) -> String {
    let target = match request.name {
        Some(name) if !name.is_empty() => format!("{} \"{name}\"", request.resource),
        _ => request.resource.to_owned(),
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", request.namespace)
    };
    format!(
        "{target} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        identity.user, request.verb, request.resource, request.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(verb: &'a str, name: &'a str) -> RequestAttributes<'a> {
        RequestAttributes {
            verb,
            api_group: "",
            resource: "services",
            namespace: "flink",
            name: Some(name),
        }
    }

    #[test]
    fn each_copy_grants_its_own_service_account_its_own_service_only() {
        let config = RbacConfig {
            without_verbs: vec!["list".to_owned()],
            copies: (0..3)
                .map(|i| RoleCopy {
                    service: format!("flink-jobmanager-{i}"),
                    service_account: format!("port-sync-{i}"),
                })
                .collect(),
            ..RbacConfig::default()
        };
        let authorizer = Authorizer::load(&config).expect("the shipped manifests load");
        let copy = Identity::service_account("flink", "port-sync-1");
        assert!(authorizer.allows(&copy, &request("patch", "flink-jobmanager-1")));
        assert!(authorizer.allows(&copy, &request("watch", "flink-jobmanager-1")));
        assert!(!authorizer.allows(&copy, &request("list", "flink-jobmanager-1")));
        assert!(!authorizer.allows(&copy, &request("delete", "flink-jobmanager-1")));
        assert!(!authorizer.allows(&copy, &request("patch", "flink-jobmanager-2")));
        assert!(!authorizer.allows(&copy, &request("patch", "flink-jobmanager")));
        let elsewhere = RequestAttributes {
            namespace: "other",
            ..request("patch", "flink-jobmanager-1")
        };
        assert!(!authorizer.allows(&copy, &elsewhere));
        // The first Role is unchanged and grants nothing of the copies'.
        let first = Identity::service_account("flink", "port-sync");
        assert!(authorizer.allows(&first, &request("patch", "flink-jobmanager")));
        assert!(!authorizer.allows(&first, &request("patch", "flink-jobmanager-1")));
        let stranger = Identity::service_account("flink", "port-sync-9");
        assert!(!authorizer.allows(&stranger, &request("get", "flink-jobmanager-1")));
    }
}
