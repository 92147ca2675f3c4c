//! The three patch types of the real server, chosen by Content-Type: JSON Patch (RFC 6902,
//! applied by the `json-patch` crate, the one kube-core uses), JSON merge patch (RFC 7386)
//! and strategic merge patch, which merges the lists a kind declares by their merge key
//! (Service ports by `port`) and replaces the others. Pure functions over JSON values.

use super::status::ApiError;
use json_patch::PatchErrorKind;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a Content-Type header; parameters such as `charset` are ignored.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// `current` with `body` applied. `merge_keys` lists (path, key) of the lists that
/// strategic merge patch merges by key, e.g. ("spec.ports", "port").
pub fn apply(
    patch_type: PatchType,
    current: &Value,
    body: &[u8],
    merge_keys: &[(&str, &str)],
) -> Result<Value, ApiError> {
    let decode_error =
        |e: serde_json::Error| ApiError::bad_request(format!("error decoding patch: {e}"));
    let mut patched = current.clone();
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch =
                serde_json::from_slice(body).map_err(decode_error)?;
            json_patch::patch(&mut patched, &operations).map_err(|error| {
                let cause = match error.kind {
                    // The wording of the Go json-patch library behind the real server.
                    PatchErrorKind::TestFailed => format!("testing value {} failed", error.path),
                    _ => error.to_string(),
                };
                ApiError::patch_not_applicable(cause)
            })?;
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body).map_err(decode_error)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut patched, &patch);
        }
        PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(body).map_err(decode_error)?;
            let Value::Object(patch) = patch else {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            };
            let Value::Object(original) = patched else {
                return Err(ApiError::bad_request(
                    "the stored object is not a JSON object",
                ));
            };
            patched =
                Value::Object(merge_map(original, patch, "", merge_keys)?.unwrap_or_default());
        }
    }
    Ok(patched)
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Strategic merge of two maps; `None` when the patch says `$patch: delete`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    path: &str,
    merge_keys: &[(&str, &str)],
) -> Result<Option<Map<String, Value>>, ApiError> {
    match patch.remove("$patch") {
        None => {}
        Some(Value::String(directive)) if directive == "replace" => return Ok(Some(patch)),
        Some(Value::String(directive)) if directive == "delete" => return Ok(None),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other}"
            )));
        }
    }
    for (key, value) in patch {
        // Ordering and retainKeys hints change no content here; the server may ignore them.
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        let path = child_path(path, &key);
        match value {
            Value::Null => {
                original.remove(&key);
            }
            Value::Object(patch_map) => match original.remove(&key) {
                Some(Value::Object(original_map)) => {
                    if let Some(merged) = merge_map(original_map, patch_map, &path, merge_keys)? {
                        original.insert(key, Value::Object(merged));
                    }
                }
                _ => {
                    if let Some(merged) = merge_map(Map::new(), patch_map, &path, merge_keys)? {
                        original.insert(key, Value::Object(merged));
                    }
                }
            },
            Value::Array(items) => {
                let merge_key = merge_keys.iter().find(|(p, _)| *p == path).map(|(_, k)| *k);
                let merged = match (merge_key, original.remove(&key)) {
                    (Some(merge_key), Some(Value::Array(existing))) => {
                        merge_list(existing, items, merge_key, &path, merge_keys)?
                    }
                    (Some(merge_key), _) => {
                        merge_list(Vec::new(), items, merge_key, &path, merge_keys)?
                    }
                    // Lists without a merge key are replaced whole.
                    (None, _) => items,
                };
                original.insert(key, Value::Array(merged));
            }
            scalar => {
                original.insert(key, scalar);
            }
        }
    }
    Ok(Some(original))
}

/// Strategic merge of a list whose items are identified by `merge_key`: items of the patch
/// merge into the item with the same key or are appended; `{"$patch": "delete", key: k}`
/// removes one; an item `{"$patch": "replace"}` makes the patch's items the whole list.
fn merge_list(
    mut existing: Vec<Value>,
    patch_items: Vec<Value>,
    merge_key: &str,
    path: &str,
    merge_keys: &[(&str, &str)],
) -> Result<Vec<Value>, ApiError> {
    let is_directive = |item: &Value, directive: &str| {
        item.get("$patch").and_then(Value::as_str) == Some(directive)
    };
    if patch_items.iter().any(|item| is_directive(item, "replace")) {
        return Ok(patch_items
            .into_iter()
            .filter(|item| !is_directive(item, "replace"))
            .collect());
    }
    for item in patch_items {
        let Value::Object(mut item) = item else {
            return Err(ApiError::bad_request(format!(
                "{path}: expected a list of maps merged by {merge_key}, found {item}"
            )));
        };
        let Some(key_value) = item.get(merge_key).cloned() else {
            return Err(ApiError::bad_request(format!(
                "map: {} does not contain declared merge key: {merge_key}",
                Value::Object(item)
            )));
        };
        let position = existing
            .iter()
            .position(|candidate| candidate.get(merge_key) == Some(&key_value));
        if is_directive(&Value::Object(item.clone()), "delete") {
            existing.retain(|candidate| candidate.get(merge_key) != Some(&key_value));
            continue;
        }
        match position {
            Some(index) => {
                let Value::Object(original) = existing[index].take() else {
                    existing[index] = Value::Object(item);
                    continue;
                };
                match merge_map(original, item, path, merge_keys)? {
                    Some(merged) => existing[index] = Value::Object(merged),
                    None => {
                        existing.remove(index);
                    }
                }
            }
            None => {
                item.remove("$patch");
                existing.push(Value::Object(item));
            }
        }
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEYS: &[(&str, &str)] = &[("spec.ports", "port")];

    fn service() -> Value {
        json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"name": "rpc", "port": 6123, "targetPort": 6123},
            {"name": "blob", "port": 6124, "targetPort": 6124}
        ], "externalIPs": ["1.2.3.4"]}})
    }

    fn strategic(patch: Value) -> Value {
        apply(
            PatchType::StrategicMerge,
            &service(),
            patch.to_string().as_bytes(),
            KEYS,
        )
        .unwrap()
    }

    #[test]
    fn strategic_merge_merges_ports_by_port_and_replaces_other_lists() {
        let patched = strategic(json!({"spec": {
            "ports": [{"port": 6124, "targetPort": 9999}, {"name": "ui", "port": 8081}],
            "externalIPs": ["5.6.7.8"]
        }}));
        assert_eq!(
            patched["spec"]["ports"],
            json!([
                {"name": "rpc", "port": 6123, "targetPort": 6123},
                {"name": "blob", "port": 6124, "targetPort": 9999},
                {"name": "ui", "port": 8081}
            ])
        );
        assert_eq!(patched["spec"]["externalIPs"], json!(["5.6.7.8"]));
    }

    #[test]
    fn strategic_merge_directives_delete_and_replace() {
        let deleted = strategic(json!({"spec": {"ports": [{"$patch": "delete", "port": 6123}]}}));
        assert_eq!(
            deleted["spec"]["ports"],
            json!([{"name": "blob", "port": 6124, "targetPort": 6124}])
        );
        let replaced = strategic(
            json!({"spec": {"ports": [{"$patch": "replace"}, {"name": "x", "port": 1}]}}),
        );
        assert_eq!(replaced["spec"]["ports"], json!([{"name": "x", "port": 1}]));
        let map_replaced = strategic(json!({"spec": {"$patch": "replace", "ports": []}}));
        assert_eq!(map_replaced["spec"], json!({"ports": []}));
    }

    #[test]
    fn merge_patch_replaces_lists_and_null_deletes() {
        let patched = apply(
            PatchType::Merge,
            &service(),
            br#"{"spec": {"ports": [{"port": 1}], "externalIPs": null}}"#,
            KEYS,
        )
        .unwrap();
        assert_eq!(patched["spec"], json!({"ports": [{"port": 1}]}));
    }

    #[test]
    fn json_patch_test_failure_is_422_naming_the_path() {
        let body = br#"[{"op": "test", "path": "/spec/ports/0/name", "value": "blob"}]"#;
        let error = apply(PatchType::Json, &service(), body, KEYS).unwrap_err();
        assert_eq!(error.code, 422);
        let cause = &error.details.unwrap()["causes"][0]["message"];
        assert_eq!(cause, "testing value /spec/ports/0/name failed");
    }

    #[test]
    fn unknown_content_type_is_415() {
        assert_eq!(
            PatchType::from_content_type("application/json")
                .unwrap_err()
                .code,
            415
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
    }
}
