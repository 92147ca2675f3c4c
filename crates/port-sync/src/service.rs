//! The Kubernetes edge: get, patch and watch the one Service through kube, and the API's
//! failures sorted by what to do about them (retry at once after a re-read, back off, honour
//! Retry-After, tell the operator which RBAC rule is missing).

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, WatchEvent, WatchParams};
use std::fmt;
use std::time::Duration;

/// Bound on one get or patch; kube's own read timeout (295 s) is sized for watches.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The server ends each watch after this long (below kube's 295 s read timeout) and we start
/// another: a dead connection is noticed within this bound.
pub const WATCH_TIMEOUT_SECS: u32 = 290;
/// Where the permissions port-sync needs are granted.
pub const ROLE_MANIFEST: &str = "rbac/role.yaml";

/// Defines `FailureKind` from one list of variants and their metric labels, so that the label
/// of each kind and the list of all kinds (every series exists from the start) cannot drift.
macro_rules! failure_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $label:literal,)+) => {
        /// What went wrong with a call to the API server, sorted by what helps.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureKind {
            $($(#[doc = $doc])* $variant,)+
        }

        impl FailureKind {
            pub const ALL: &[FailureKind] = &[$(FailureKind::$variant),+];

            /// The `kind` label of `port_sync_errors_total`.
            pub fn metric_label(self) -> &'static str {
                match self {
                    $(FailureKind::$variant => $label,)+
                }
            }
        }
    };
}

failure_kinds! {
    /// 403: the service account lacks a permission; retried at a pace of minutes (someone
    /// may fix the Role).
    Forbidden => "api_forbidden",
    /// 401: the token is not (or no longer) accepted; kube re-reads the token file.
    Unauthorized => "api_unauthorized",
    /// 404: no such Service (yet).
    NotFound => "api_not_found",
    /// 409 or 422: the Service changed under us (a failed `test` op) or refused the change;
    /// re-read, re-plan and retry.
    Conflict => "api_conflict",
    /// 429: too many requests; wait as long as the server asks.
    RateLimited => "api_rate_limited",
    /// 5xx, refused or reset connections, timeouts.
    Unavailable => "api_unavailable",
    /// The watch stream's resourceVersion is too old (410): start a fresh watch.
    Gone => "api_gone",
    Other => "api_other",
}

/// One failed call, with a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub kind: FailureKind,
    pub message: String,
    /// How long the server asked us to wait (429's `details.retryAfterSeconds`).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The Kubernetes verb of a call: for messages about missing permissions, and permissions are
/// granted (and refused) per verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Patch,
    Watch,
}

impl Verb {
    pub const ALL: [Verb; 3] = [Verb::Get, Verb::Patch, Verb::Watch];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Patch => "patch",
            Verb::Watch => "watch",
        }
    }
}

/// What a watch of the Service reports.
#[derive(Debug, Clone)]
pub enum ServiceEvent {
    /// The Service as it now is (added or modified).
    Changed(Box<Service>),
    Deleted,
}

/// The one Service port-sync keeps in sync.
#[derive(Clone)]
pub struct ServiceHandle {
    api: Api<Service>,
    namespace: String,
    name: String,
}

impl ServiceHandle {
    /// Connects with kube's standard inference (in-cluster service account, else KUBECONFIG
    /// or ~/.kube/config). `namespace` None takes the pod's or the context's namespace.
    pub async fn connect(namespace: Option<&str>, name: &str) -> Result<Self, kube::Error> {
        let client = kube::Client::try_default().await?;
        let namespace =
            namespace.map_or_else(|| client.default_namespace().to_owned(), ToOwned::to_owned);
        Ok(Self::new(client, &namespace, name))
    }

    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `NAMESPACE/NAME`, for messages.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub async fn get(&self) -> Result<Service, ApiFailure> {
        bounded(Verb::Get, self, self.api.get(&self.name)).await
    }

    /// Sends one JSON Patch (`application/json-patch+json`) and returns the Service as
    /// patched.
    pub async fn patch(&self, patch: &json_patch::Patch) -> Result<Service, ApiFailure> {
        let params = PatchParams::default();
        let body: Patch<()> = Patch::Json(patch.clone());
        bounded(
            Verb::Patch,
            self,
            self.api.patch(&self.name, &params, &body),
        )
        .await
    }

    /// Watches this one Service from `resource_version` ("0": start with its current state).
    /// The stream ends when the server closes the watch (after `WATCH_TIMEOUT_SECS`); then
    /// the caller starts another from the last version it saw.
    pub async fn watch(
        &self,
        resource_version: &str,
    ) -> Result<
        impl Stream<Item = Result<(ServiceEvent, Option<String>), ApiFailure>> + use<>,
        ApiFailure,
    > {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(WATCH_TIMEOUT_SECS);
        let stream = self
            .api
            .watch(&params, resource_version)
            .await
            .map_err(|error| classify(Verb::Watch, self, &error))?;
        let target = self.clone();
        Ok(stream.filter_map(move |item| {
            let mapped = match item {
                Err(error) => Some(Err(classify(Verb::Watch, &target, &error))),
                Ok(WatchEvent::Added(service) | WatchEvent::Modified(service)) => {
                    let version = service.metadata.resource_version.clone();
                    Some(Ok((ServiceEvent::Changed(Box::new(service)), version)))
                }
                Ok(WatchEvent::Deleted(service)) => Some(Ok((
                    ServiceEvent::Deleted,
                    service.metadata.resource_version,
                ))),
                // kube asks for bookmarks (WatchParams' default); they carry no Service.
                Ok(WatchEvent::Bookmark(_)) => None,
                Ok(WatchEvent::Error(status)) => {
                    Some(Err(from_status(Verb::Watch, &target, &status)))
                }
            };
            std::future::ready(mapped)
        }))
    }
}

async fn bounded<T>(
    verb: Verb,
    target: &ServiceHandle,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiFailure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(classify(verb, target, &error)),
        Err(_) => Err(ApiFailure {
            kind: FailureKind::Unavailable,
            message: format!(
                "{} of Service {}: no answer from the API server within {}s",
                verb.as_str(),
                target.display_name(),
                REQUEST_TIMEOUT.as_secs()
            ),
            retry_after: None,
        }),
    }
}

fn classify(verb: Verb, target: &ServiceHandle, error: &kube::Error) -> ApiFailure {
    match error {
        kube::Error::Api(status) => from_status(verb, target, status),
        other => ApiFailure {
            kind: FailureKind::Unavailable,
            message: format!(
                "{} of Service {}: cannot reach the API server: {}",
                verb.as_str(),
                target.display_name(),
                innermost(other)
            ),
            retry_after: None,
        },
    }
}

fn from_status(verb: Verb, target: &ServiceHandle, status: &kube::core::Status) -> ApiFailure {
    describe_status(
        verb,
        &target.namespace,
        &target.name,
        status.code,
        &status.message,
        status
            .details
            .as_ref()
            .map_or(0, |details| details.retry_after_seconds),
    )
}

/// Sorts an API status (code, message, Retry-After seconds) and words it for the operator.
/// Pure, so the wording is tested without a server.
pub fn describe_status(
    verb: Verb,
    namespace: &str,
    name: &str,
    code: u16,
    server_message: &str,
    retry_after_seconds: u32,
) -> ApiFailure {
    let verb_name = verb.as_str();
    let said = if server_message.is_empty() {
        String::new()
    } else {
        format!(" (the API server said: {server_message})")
    };
    let (kind, message) = match code {
        403 => (
            FailureKind::Forbidden,
            format!(
                "forbidden: the service account may not {verb_name} services/{name} in namespace \
                 {namespace}; add to its Role in {namespace} the rule {{apiGroups: [\"\"], \
                 resources: [services], resourceNames: [{name}], verbs: [{verb_name}]}} \
                 ({ROLE_MANIFEST} grants get, list, watch and patch){said}"
            ),
        ),
        401 => (
            FailureKind::Unauthorized,
            format!(
                "unauthorized: the API server does not accept the token (expired or rotated \
                 out?); the token file is re-read, retrying{said}"
            ),
        ),
        404 => (
            FailureKind::NotFound,
            format!("Service {namespace}/{name} not found; retrying until it exists{said}"),
        ),
        409 | 422 => (
            FailureKind::Conflict,
            format!(
                "{verb_name} of Service {namespace}/{name} refused with {code}: it changed since it \
                 was read, or refuses the change; re-reading and retrying{said}"
            ),
        ),
        410 => (
            FailureKind::Gone,
            format!("the watch of Service {namespace}/{name} is too old; starting afresh{said}"),
        ),
        429 => (
            FailureKind::RateLimited,
            format!("{verb_name} of Service {namespace}/{name}: too many requests{said}"),
        ),
        500..=599 => (
            FailureKind::Unavailable,
            format!("{verb_name} of Service {namespace}/{name}: API server error {code}{said}"),
        ),
        _ => (
            FailureKind::Other,
            format!("{verb_name} of Service {namespace}/{name}: unexpected answer {code}{said}"),
        ),
    };
    let asked =
        (retry_after_seconds > 0).then(|| Duration::from_secs(u64::from(retry_after_seconds)));
    ApiFailure {
        kind,
        message: message.trim_end().to_owned(),
        retry_after: asked.or((code == 429).then_some(THROTTLED_RETRY_AFTER)),
    }
}

/// kube-apiserver's max-in-flight and API Priority and Fairness filters answer 429 with a plain
/// text body and the header `Retry-After: 1` (staging/src/k8s.io/apiserver/pkg/server/filters/
/// maxinflight.go, `retryAfter = "1"`); kube-client turns that body into a Status without
/// details and drops the header, so a 429 without `details.retryAfterSeconds` waits this long.
pub const THROTTLED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// kube's errors wrap the useful cause ("Connection refused", "invalid peer certificate") in
/// layers of context; the innermost says what happened.
fn innermost(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let outer = error.to_string();
    let inner = cause.to_string();
    if outer == inner {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_resource_name_namespace_and_the_role() {
        let failure = describe_status(
            Verb::Patch,
            "flink",
            "flink-jm",
            403,
            "services \"flink-jm\" is forbidden: User \"system:serviceaccount:flink:port-sync\" \
             cannot patch resource \"services\" in API group \"\" in the namespace \"flink\"",
            0,
        );
        assert_eq!(failure.kind, FailureKind::Forbidden);
        for part in [
            "may not patch services/flink-jm in namespace flink",
            "add to its Role in flink the rule {apiGroups: [\"\"], resources: [services], \
             resourceNames: [flink-jm], verbs: [patch]}",
            "rbac/role.yaml",
            "cannot patch resource",
        ] {
            assert!(
                failure.message.contains(part),
                "{part}: {}",
                failure.message
            );
        }
    }

    #[test]
    fn not_found_is_clear_and_kept_retrying() {
        let failure = describe_status(Verb::Get, "flink", "flink-jm", 404, "", 0);
        assert_eq!(failure.kind, FailureKind::NotFound);
        assert!(
            failure
                .message
                .starts_with("Service flink/flink-jm not found")
        );
    }

    #[test]
    fn conflicts_and_failed_tests_mean_re_read() {
        for code in [409, 422] {
            let failure = describe_status(Verb::Patch, "ns", "s", code, "test failed", 0);
            assert_eq!(failure.kind, FailureKind::Conflict, "{code}");
        }
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let failure = describe_status(Verb::Get, "ns", "s", 429, "slow down", 3);
        assert_eq!(failure.kind, FailureKind::RateLimited);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
        // The real throttling filters' 429 reaches port-sync without details: their 1 s holds.
        let failure = describe_status(
            Verb::Get,
            "ns",
            "s",
            429,
            "Too many requests, please try again later.\n",
            0,
        );
        assert_eq!(failure.retry_after, Some(THROTTLED_RETRY_AFTER));
        assert!(!failure.message.ends_with('\n'), "{:?}", failure.message);
        let failure = describe_status(Verb::Get, "ns", "s", 503, "", 0);
        assert_eq!(failure.retry_after, None);
    }

    #[test]
    fn server_errors_are_unavailable_and_the_rest_other() {
        for code in [500, 503, 504] {
            let kind = describe_status(Verb::Get, "ns", "s", code, "", 0).kind;
            assert_eq!(kind, FailureKind::Unavailable);
        }
        assert_eq!(
            describe_status(Verb::Watch, "ns", "s", 410, "", 0).kind,
            FailureKind::Gone
        );
        assert_eq!(
            describe_status(Verb::Get, "ns", "s", 401, "", 0).kind,
            FailureKind::Unauthorized
        );
        assert_eq!(
            describe_status(Verb::Get, "ns", "s", 400, "", 0).kind,
            FailureKind::Other
        );
    }
}
