//! The object store: objects keyed by group/version/kind/namespace/name, one global
//! resourceVersion that grows with every change (as etcd's revision does), and a bounded
//! history of change events that watches replay from. Pure state: no sockets, no clocks
//! beyond the creation timestamp; the HTTP layer and the test helpers both go through it.

use super::resources::ResourceType;
use super::status::ApiError;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(resource: &ResourceType, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: resource.group.to_owned(),
            version: resource.version.to_owned(),
            kind: resource.kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn is_of(&self, resource: &ResourceType) -> bool {
        self.group == resource.group
            && self.version == resource.version
            && self.kind == resource.kind
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub resource_version: u64,
    pub event_type: EventType,
    pub key: ObjectKey,
    pub object: Value,
}

/// Live watchers lagging this many events behind are cut with 410, as a real watch cache
/// drops a watcher that cannot keep up.
const LIVE_EVENT_BUFFER: usize = 1024;

pub(crate) struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    resource_version: u64,
    history: VecDeque<StoredEvent>,
    history_limit: usize,
    /// The newest version whose event was dropped from `history`; a watch from below it
    /// cannot be served.
    compacted_through: u64,
    events: broadcast::Sender<StoredEvent>,
}

fn metadata_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn set_metadata(object: &mut Value, field: &str, value: Value) {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"][field] = value;
}

fn remove_metadata(object: &mut Value, field: &str) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove(field);
    }
}

/// A version-4-shaped UUID; only uniqueness matters to clients.
fn new_uid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| format!("{:x}", fastrand::u8(..16)))
            .collect()
    };
    format!("{}-{}-4{}-a{}-{}", hex(8), hex(4), hex(3), hex(3), hex(12))
}

/// RFC 3339 UTC with seconds, as `metadata.creationTimestamp` is written.
fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (seconds / 86_400) as i64;
    let time_of_day = seconds % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time_of_day / 3600,
        time_of_day % 3600 / 60,
        time_of_day % 60
    )
}

/// The object without `metadata.resourceVersion`, to tell a real change from a no-op.
fn without_version(object: &Value) -> Value {
    let mut copy = object.clone();
    remove_metadata(&mut copy, "resourceVersion");
    copy
}

impl Store {
    pub(crate) fn new(history_limit: usize) -> Self {
        Store {
            objects: BTreeMap::new(),
            // A fresh cluster is never at 0; starting higher also keeps "0" meaning "any".
            resource_version: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_through: 0,
            events: broadcast::channel(LIVE_EVENT_BUFFER).0,
        }
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.resource_version
    }

    fn record(&mut self, event_type: EventType, key: ObjectKey, mut object: Value) -> Value {
        self.resource_version += 1;
        set_metadata(
            &mut object,
            "resourceVersion",
            json!(self.resource_version.to_string()),
        );
        let event = StoredEvent {
            resource_version: self.resource_version,
            event_type,
            key: key.clone(),
            object: object.clone(),
        };
        if event_type == EventType::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_through = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        object
    }

    /// Checks identity fields against the request and fills in apiVersion and kind.
    fn check_identity(
        resource: &ResourceType,
        namespace: &str,
        name: Option<&str>,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request is not a {} object",
                resource.kind
            )));
        }
        match object.get("kind").and_then(Value::as_str) {
            None | Some("") => object["kind"] = json!(resource.kind),
            Some(kind) if kind == resource.kind => {}
            Some(kind) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({}) or kind {kind} is not {}",
                    object
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                    resource.api_version(),
                    resource.kind
                )));
            }
        }
        object["apiVersion"] = json!(resource.api_version());
        match metadata_str(object, "namespace") {
            None | Some("") => set_metadata(object, "namespace", json!(namespace)),
            Some(ns) if ns == namespace => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if let Some(url_name) = name {
            let body_name = metadata_str(object, "name").unwrap_or("");
            if body_name != url_name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
                )));
            }
        }
        Ok(())
    }

    fn prepare(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
        (resource.prepare)(object).map_err(|errors| {
            let name = metadata_str(object, "name").unwrap_or("");
            ApiError::invalid(resource.kind, resource.group, name, &errors)
        })
    }

    pub(crate) fn create(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        Self::check_identity(resource, namespace, None, &mut object)?;
        Self::prepare(resource, &mut object)?;
        let name = metadata_str(&object, "name").unwrap_or("").to_owned();
        let key = ObjectKey::new(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(
                resource.group,
                resource.plural,
                &name,
            ));
        }
        set_metadata(&mut object, "uid", json!(new_uid()));
        set_metadata(&mut object, "creationTimestamp", json!(now_rfc3339()));
        Ok(self.record(EventType::Added, key, object))
    }

    pub(crate) fn get(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&ObjectKey::new(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource.group, resource.plural, name))
    }

    /// Objects of one kind in one namespace, optionally one name; and the version they are at.
    pub(crate) fn list(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: Option<&str>,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .iter()
            .filter(|(key, _)| {
                key.is_of(resource)
                    && in_namespace(key, namespace)
                    && name.is_none_or(|wanted| key.name == wanted)
            })
            .map(|(_, object)| object.clone())
            .collect();
        (items, self.resource_version)
    }

    /// Every object in `namespace` (all namespaces when empty), of every kind, in key order.
    pub(crate) fn everything(&self, namespace: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(key, _)| in_namespace(key, namespace))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Changes one object: `change` computes the new object from the stored one. A stale
    /// `metadata.resourceVersion` in the result is a 409; a result equal to the stored object
    /// changes nothing (no new version, no event), as on the real server.
    pub(crate) fn update(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let current = self.get(resource, namespace, name)?;
        let mut updated = change(&current)?;
        Self::check_identity(resource, namespace, Some(name), &mut updated)?;
        let current_version = metadata_str(&current, "resourceVersion").unwrap_or("");
        match metadata_str(&updated, "resourceVersion") {
            // Services allow unconditional updates: no version, no precondition.
            None | Some("") => {}
            Some(version) if version == current_version => {}
            Some(_) => return Err(ApiError::conflict(resource.group, resource.plural, name)),
        }
        // Set by the server; a client cannot change them.
        for field in ["uid", "creationTimestamp"] {
            match current.pointer(&format!("/metadata/{field}")) {
                Some(value) => set_metadata(&mut updated, field, value.clone()),
                None => remove_metadata(&mut updated, field),
            }
        }
        Self::prepare(resource, &mut updated)?;
        if without_version(&updated) == without_version(&current) {
            return Ok(current);
        }
        let key = ObjectKey::new(resource, namespace, name);
        Ok(self.record(EventType::Modified, key, updated))
    }

    pub(crate) fn delete(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let current = self.get(resource, namespace, name)?;
        let key = ObjectKey::new(resource, namespace, name);
        Ok(self.record(EventType::Deleted, key, current))
    }

    /// Events after `since` (from history) and a receiver for those still to come, taken
    /// together so none falls between them. 410 when history no longer reaches back.
    pub(crate) fn events_since(
        &self,
        since: u64,
    ) -> Result<(Vec<StoredEvent>, broadcast::Receiver<StoredEvent>), ApiError> {
        if since < self.compacted_through {
            return Err(ApiError::expired(since, self.compacted_through));
        }
        let replay = self
            .history
            .iter()
            .filter(|event| event.resource_version > since)
            .cloned()
            .collect();
        Ok((replay, self.events.subscribe()))
    }

    /// The current objects as ADDED events and a receiver for what follows: how a watch
    /// without a resourceVersion (or with "0") starts.
    pub(crate) fn current_state(
        &self,
        resource: &ResourceType,
        namespace: &str,
    ) -> (Vec<StoredEvent>, broadcast::Receiver<StoredEvent>) {
        let events = self
            .objects
            .iter()
            .filter(|(key, _)| key.is_of(resource) && in_namespace(key, namespace))
            .map(|(key, object)| StoredEvent {
                resource_version: self.resource_version,
                event_type: EventType::Added,
                key: key.clone(),
                object: object.clone(),
            })
            .collect();
        (events, self.events.subscribe())
    }
}

/// An empty namespace is a request across all namespaces (`/api/v1/services`).
fn in_namespace(key: &ObjectKey, namespace: &str) -> bool {
    namespace.is_empty() || key.namespace == namespace
}

/// Whether a stored event belongs to a watch of `resource` in `namespace` (and `name`).
pub(crate) fn event_matches(
    event: &StoredEvent,
    resource: &ResourceType,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    event.key.is_of(resource)
        && in_namespace(&event.key, namespace)
        && name.is_none_or(|wanted| event.key.name == wanted)
}
