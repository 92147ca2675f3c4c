//! Defaulting and validation of core/v1 Services, with the real server's field paths and
//! messages (k8s.io/kubernetes pkg/apis/core/validation), for the parts port-sync and tests
//! touch: ports (range, names, protocol, targetPort, duplicates) and the object's name. Other
//! kinds get only the name check every kind has.

use super::status::FieldError;
use serde_json::{Value, json};
use std::collections::HashSet;

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

/// A Go-style rendering of a JSON value in an `Invalid value:` message: strings quoted.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

fn is_dns1035_label(name: &str) -> bool {
    is_dns1123_label(name) && name.as_bytes()[0].is_ascii_lowercase()
}

/// An IANA service name, as a named targetPort must be; the first problem found.
fn port_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if name.contains("--") {
        Some("must not contain consecutive hyphens")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter (a-z)")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with a hyphen")
    } else {
        None
    }
}

/// A DNS-1123 subdomain, as most kinds' names must be: dot-separated labels, 253 at most.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// Label values and the name part of label keys.
const LABEL_MAX: usize = 63;

/// Alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric (the
/// `qualifiedNameFmt` of apimachinery's util/validation); empty passes.
fn matches_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// Why a label key is not a qualified name (`[prefix/]name`), in the words of
/// `IsQualifiedName` (staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go).
fn label_key_problems(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    let mut problems = Vec::new();
    match prefix {
        Some("") => problems.push("prefix part must be non-empty".to_owned()),
        Some(prefix) if !is_dns1123_subdomain(prefix) => {
            problems.push(format!("prefix part {DNS1123_SUBDOMAIN}"));
        }
        _ => {}
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_MAX {
        problems.push(format!(
            "name part must be no more than {LABEL_MAX} characters"
        ));
    }
    if name.is_empty() || !matches_label_value(name) {
        problems.push(format!("name part {QUALIFIED_NAME}"));
    }
    problems
}

/// `metadata.labels` checked as `ValidateLabels` does
/// (staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go): every key a
/// qualified name, every value a label value; both reported at `metadata.labels`.
fn label_errors(object: &Value) -> Vec<FieldError> {
    const FIELD: &str = "metadata.labels";
    let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for (key, value) in labels {
        for problem in label_key_problems(key) {
            errors.push(FieldError::invalid(FIELD, render(&json!(key)), &problem));
        }
        let Some(text) = value.as_str() else {
            errors.push(FieldError::invalid(
                FIELD,
                render(value),
                "must be a string",
            ));
            continue;
        };
        if text.len() > LABEL_MAX {
            errors.push(FieldError::invalid(
                FIELD,
                render(value),
                &format!("must be no more than {LABEL_MAX} characters"),
            ));
        }
        if !matches_label_value(text) {
            errors.push(FieldError::invalid(FIELD, render(value), LABEL_VALUE));
        }
    }
    errors
}

/// The checks every kind stored as given gets: a name that is a DNS-1123 subdomain, and
/// valid labels.
pub(crate) fn prepare_named_object(object: &mut Value) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) if !is_dns1123_subdomain(name) => errors.push(FieldError::invalid(
            "metadata.name",
            render(&json!(name)),
            DNS1123_SUBDOMAIN,
        )),
        Some(_) => {}
    }
    errors.extend(label_errors(object));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Fills in what the real server defaults (type, sessionAffinity, each port's protocol and
/// targetPort), then validates. Defaults first, as the real server does, so `targetPort`
/// exists on every stored port: port-sync's `test` ops see what a real cluster stores.
pub(crate) fn prepare_service(service: &mut Value) -> Result<(), Vec<FieldError>> {
    default_service(service);
    let errors = validate_service(service);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn default_service(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("type").or_insert_with(|| json!("ClusterIP"));
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        port.entry("protocol").or_insert_with(|| json!("TCP"));
        let unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset && let Some(number) = port.get("port").cloned() {
            port.insert("targetPort".to_owned(), number);
        }
    }
}

fn validate_service(service: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match service.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) if !is_dns1035_label(name) => errors.push(FieldError::invalid(
            "metadata.name",
            render(&json!(name)),
            DNS1035_LABEL,
        )),
        Some(_) => {}
    }
    // ObjectMeta's checks run in this order: name, then labels.
    errors.extend(label_errors(service));

    let spec = service.get("spec").cloned().unwrap_or(json!({}));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }

    let require_names = ports.len() > 1;
    let mut names = HashSet::new();
    for (index, port) in ports.iter().enumerate() {
        validate_port(
            port,
            &format!("spec.ports[{index}]"),
            require_names,
            &mut names,
            &mut errors,
        );
    }

    // (port, protocol) must be unique; the message prints the key as Go's %#v does.
    let mut keys = HashSet::new();
    for (index, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_owned();
        if !keys.insert((number, protocol.clone())) {
            errors.push(FieldError::duplicate(
                format!("spec.ports[{index}]"),
                format!(
                    "core.ServicePort{{Name:\"\", Protocol:\"{protocol}\", AppProtocol:(*string)(nil), Port:{number}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
                ),
            ));
        }
    }
    errors
}

fn validate_port(
    port: &Value,
    path: &str,
    require_name: bool,
    names: &mut HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let name = port.get("name").and_then(Value::as_str).unwrap_or("");
    if require_name && name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        if !is_dns1123_label(name) {
            errors.push(FieldError::invalid(
                format!("{path}.name"),
                render(&json!(name)),
                DNS1123_LABEL,
            ));
        } else if !names.insert(name.to_owned()) {
            errors.push(FieldError::duplicate(
                format!("{path}.name"),
                render(&json!(name)),
            ));
        }
    }

    match port.get("port") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(value @ Value::Number(_)) => errors.push(FieldError::invalid(
            format!("{path}.port"),
            render(value),
            PORT_RANGE,
        )),
        Some(value) => errors.push(FieldError::invalid(
            format!("{path}.port"),
            render(value),
            "must be an integer",
        )),
        None => errors.push(FieldError::invalid(format!("{path}.port"), "0", PORT_RANGE)),
    }

    let protocol = port
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP");
    if !PROTOCOLS.contains(&protocol) {
        errors.push(FieldError::not_supported(
            format!("{path}.protocol"),
            render(&json!(protocol)),
            &PROTOCOLS,
        ));
    }

    match port.get("targetPort") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|p| (1..=65535).contains(&p)) => {}
        Some(value @ Value::Number(_)) => errors.push(FieldError::invalid(
            format!("{path}.targetPort"),
            render(value),
            PORT_RANGE,
        )),
        Some(Value::String(target)) => {
            if let Some(problem) = port_name_problem(target) {
                errors.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    render(&json!(target)),
                    problem,
                ));
            }
        }
        Some(value) => errors.push(FieldError::invalid(
            format!("{path}.targetPort"),
            render(value),
            "must be an integer or a port name",
        )),
        None => {}
    }
}
