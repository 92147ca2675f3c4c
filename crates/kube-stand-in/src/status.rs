//! `Status` bodies: every error the stand-in answers is one, shaped as the real API server
//! shapes it (kind, apiVersion, status Failure, message, reason, details, code), because
//! clients such as kube-rs decode these fields and port-sync's error handling reads them.

use serde_json::{Value, json};

/// The `Retry-After` every throttling or draining filter of kube-apiserver sends: a constant
/// "1" (`retryAfter` in staging/src/k8s.io/apiserver/pkg/server/filters/maxinflight.go, which
/// priority-and-fairness.go shares; "1" in waitgroup.go).
pub const SERVER_RETRY_AFTER_SECS: u64 = 1;

/// The whole body of a 429 from max-in-flight or API Priority and Fairness: not a `Status` but
/// Go's `http.Error` plain text (`tooManyRequests` in
/// staging/src/k8s.io/apiserver/pkg/server/filters/maxinflight.go, called by
/// priority-and-fairness.go too). `http.Error` ends it with a newline.
pub const TOO_MANY_REQUESTS_BODY: &str = "Too many requests, please try again later.\n";

/// One API error: the HTTP code and the `Status` body that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status (name, group, kind, causes, retryAfterSeconds), when there are any.
    pub details: Option<Value>,
    /// Sent as a `Retry-After` header too (429 and 503 carry one on the real server).
    pub retry_after_secs: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `details` naming one object; the real server uses the plural resource as `kind` here.
pub(crate) fn object_details(group: &str, resource: &str, name: &str) -> Value {
    let mut details = json!({ "kind": resource });
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    details
}

/// `services "x"`, `deployments.apps "x"` or, with no name, `services`; the real server's
/// way of naming a target (the group follows the resource outside the core group).
fn qualified(group: &str, resource: &str, name: &str) -> String {
    let resource = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        resource
    } else {
        format!("{resource} \"{name}\"")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub(crate) fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn forbidden(message: String, group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(403, "Forbidden", message).with_details(object_details(group, resource, name))
    }

    pub(crate) fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} not found", qualified(group, resource, name)),
        )
        .with_details(object_details(group, resource, name))
    }

    /// A path the server does not serve at all (the real server's wording).
    pub(crate) fn unknown_path() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(json!({}))
    }

    pub(crate) fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} already exists", qualified(group, resource, name)),
        )
        .with_details(object_details(group, resource, name))
    }

    pub(crate) fn conflict(group: &str, resource: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, resource, name)
            ),
        )
        .with_details(object_details(group, resource, name))
    }

    /// The watch cache no longer holds the events after `requested`; clients must re-list.
    pub(crate) fn expired(requested: u64, oldest: u64) -> Self {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            ),
        )
        .with_details(json!({}))
    }

    /// Field validation failed: `Kind "name" is invalid: <cause>` or `[<cause>, <cause>]`.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, causes: &[FieldError]) -> Self {
        let rendered: Vec<String> = causes.iter().map(FieldError::to_string).collect();
        let summary = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|cause| {
                json!({ "reason": cause.reason(), "message": cause.body(), "field": cause.field })
            })
            .collect();
        let mut details = json!({ "name": name, "kind": kind, "causes": causes });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(details)
    }

    /// A patch that could not be applied (a failed `test`, a missing path). The real server
    /// answers with a generic message and names the failure in `details.causes`.
    pub(crate) fn patch_not_applicable(cause: String) -> Self {
        ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(
            json!({ "causes": [{ "reason": "UnexpectedServerResponse", "message": cause }] }),
        )
    }

    pub(crate) fn request_entity_too_large() -> Self {
        ApiError::new(413, "RequestEntityTooLarge", "Request entity too large")
    }

    /// An injected server error, worded as the real server words these codes. (429 is not
    /// here: the real server answers it in plain text, see [`TOO_MANY_REQUESTS_BODY`].)
    pub(crate) fn injected(code: u16) -> Self {
        match code {
            500 => ApiError::new(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
            )
            .with_details(json!({ "causes": [{ "message": "injected fault" }] })),
            503 => ApiError::shutting_down(),
            504 => ApiError::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            other => ApiError::new(other, "", format!("injected status {other}")),
        }
    }

    /// The 503 a client meets from a kube-apiserver that is draining: a Status with no
    /// `details`, and `Retry-After: 1` as a header only
    /// (staging/src/k8s.io/apiserver/pkg/server/filters/waitgroup.go,
    /// `waitGroupWriteRetryAfterToResponse`).
    fn shutting_down() -> Self {
        let mut error = ApiError::new(503, "ServiceUnavailable", "apiserver is shutting down");
        error.retry_after_secs = Some(SERVER_RETRY_AFTER_SECS);
        error
    }

    /// The `Status` object as JSON.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// One field-level validation failure, rendered as the apimachinery `field.Error`s are.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub problem: FieldProblem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldProblem {
    /// `Invalid value: <value>: <detail>`; the value is pre-rendered (strings quoted, as Go does).
    Invalid { value: String, detail: String },
    /// `Required value` (and `: <detail>` when there is one).
    Required { detail: String },
    /// `Duplicate value: <value>`.
    Duplicate { value: String },
    /// `Unsupported value: <value>: supported values: "A", "B"`.
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
}

impl FieldError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: &str,
    ) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Invalid {
                value: value.into(),
                detail: detail.to_owned(),
            },
        }
    }

    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Required {
                detail: detail.to_owned(),
            },
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::Duplicate {
                value: value.into(),
            },
        }
    }

    pub(crate) fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        FieldError {
            field: field.into(),
            problem: FieldProblem::NotSupported {
                value: value.into(),
                supported: supported.iter().map(|s| format!("\"{s}\"")).collect(),
            },
        }
    }

    /// The `reason` of a Status cause (`metav1.CauseType`).
    fn reason(&self) -> &'static str {
        match self.problem {
            FieldProblem::Invalid { .. } => "FieldValueInvalid",
            FieldProblem::Required { .. } => "FieldValueRequired",
            FieldProblem::Duplicate { .. } => "FieldValueDuplicate",
            FieldProblem::NotSupported { .. } => "FieldValueNotSupported",
        }
    }

    /// The message without the field path, as a cause's `message` carries it.
    fn body(&self) -> String {
        match &self.problem {
            FieldProblem::Invalid { value, detail } => format!("Invalid value: {value}: {detail}"),
            FieldProblem::Required { detail } if detail.is_empty() => "Required value".to_owned(),
            FieldProblem::Required { detail } => format!("Required value: {detail}"),
            FieldProblem::Duplicate { value } => format!("Duplicate value: {value}"),
            FieldProblem::NotSupported { value, supported } => {
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                )
            }
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}
