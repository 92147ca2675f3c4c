//! Field and label selectors of list and watch requests, in the subset the real server
//! supports for Services: fields `metadata.name` and `metadata.namespace`; labels with
//! `=`, `==`, `!=`, existence and non-existence.

use super::status::ApiError;
use serde_json::Value;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

impl FieldSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut selector = FieldSelector::default();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .filter(|(field, _)| !field.ends_with('!'))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unable to parse requirement: only = and == are supported here: {term}"
                    ))
                })?;
            match field {
                "metadata.name" => selector.name = Some(value.to_owned()),
                "metadata.namespace" => selector.namespace = Some(value.to_owned()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {other}"
                    )));
                }
            }
        }
        Ok(selector)
    }

    /// Whether `namespace` (of the request) and the selector's namespace can both hold.
    pub(crate) fn namespace_matches(&self, namespace: &str) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|wanted| namespace.is_empty() || wanted == namespace)
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let field = |name: &str| {
            object
                .pointer(&format!("/metadata/{name}"))
                .and_then(Value::as_str)
        };
        self.name
            .as_deref()
            .is_none_or(|n| field("name") == Some(n))
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| field("namespace") == Some(n))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let requirements = text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|term| {
                if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse requirement: set-based selectors are not supported here: {term}"
                    )));
                }
                Ok(if let Some((key, value)) = term.split_once("!=") {
                    LabelRequirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
                } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                    LabelRequirement::Equals(key.trim().to_owned(), value.trim().to_owned())
                } else if let Some(key) = term.strip_prefix('!') {
                    LabelRequirement::NotExists(key.trim().to_owned())
                } else {
                    LabelRequirement::Exists(term.to_owned())
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector(requirements))
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::NotExists(key) => label(key).is_none(),
        })
    }
}
