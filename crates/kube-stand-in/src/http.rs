//! One HTTP request, start to end: route the path, apply an injected fault, authenticate,
//! authorise, then serve it from the store, answering errors with Status bodies. Every
//! request is logged with its outcome.

use super::auth::{Identity, TokenRegistry};
use super::faults::{Fault, Faults, RequestKind, RequestRecord};
use super::patch::{self, PatchType};
use super::rbac::{Authorizer, RequestAttributes, forbidden_message};
use super::resources::{self, ResourceType};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, SERVER_RETRY_AFTER_SECS, TOO_MANY_REQUESTS_BODY};
use super::store::Store;
use super::watch::{self, WatchRequest};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

/// The real server's default limit on a request body.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// A watch without timeoutSeconds; the real server picks 30 to 60 minutes.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// State every connection shares.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub tokens: Mutex<TokenRegistry>,
    pub authorizer: Authorizer,
    pub faults: Faults,
    pub bookmark_interval: Duration,
    /// host:port, for discovery's serverAddressByClientCIDRs.
    pub address: String,
}

impl Shared {
    // Locks are held for a few map operations and never across an await; a panic in a test
    // thread while holding one leaves consistent data, so poisoning is ignored.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, TokenRegistry> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request for objects of a served kind.
struct ResourceRequest {
    resource: &'static ResourceType,
    /// Empty for a request across all namespaces.
    namespace: String,
    name: Option<String>,
    kind: RequestKind,
}

enum Route {
    Resource(ResourceRequest),
    Version,
    CoreGroups,
    Groups,
    GroupVersion { group: String, version: String },
    Health,
    Unknown(ApiError),
}

impl Route {
    fn kind(&self) -> RequestKind {
        match self {
            Route::Resource(request) => request.kind,
            _ => RequestKind::Other,
        }
    }
}

fn verb_name(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::Get => "get",
        RequestKind::List => "list",
        RequestKind::Watch => "watch",
        RequestKind::Create => "create",
        RequestKind::Update => "update",
        RequestKind::Patch => "patch",
        RequestKind::Delete => "delete",
        RequestKind::Other => "",
    }
}

fn percent_decode(text: &str) -> String {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = match bytes.get(index..index + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)),
            _ => None,
        };
        match (bytes[index], escaped) {
            (_, Some((high, low))) => {
                // Two hex digits make one byte, below 256.
                decoded.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                index += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                index += 1;
            }
            (other, None) => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn is_true(query: &HashMap<String, String>, key: &str) -> bool {
    matches!(query.get(key).map(String::as_str), Some("true" | "1"))
}

fn route(method: &Method, path: &str, query: &HashMap<String, String>) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz"] => return Route::Health,
        ["api"] => return Route::CoreGroups,
        ["apis"] => return Route::Groups,
        ["api", version] => {
            return Route::GroupVersion {
                group: String::new(),
                version: (*version).to_owned(),
            };
        }
        ["apis", group, version] => {
            return Route::GroupVersion {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            };
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::Unknown(ApiError::unknown_path()),
    };
    // The old `/watch/` prefix is still served by the real server.
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", namespace, plural] => (*namespace, *plural, None),
        ["namespaces", namespace, plural, name] => (*namespace, *plural, Some(*name)),
        [plural] => ("", *plural, None),
        [plural, name] => ("", *plural, Some(*name)),
        _ => return Route::Unknown(ApiError::unknown_path()),
    };
    let Some(resource) = resources::find(group, version, plural) else {
        return Route::Unknown(ApiError::unknown_path());
    };
    if resource.namespaced && namespace.is_empty() && name.is_some() {
        return Route::Unknown(ApiError::unknown_path());
    }
    let watching = legacy_watch || is_true(query, "watch");
    let kind = match (method, name) {
        (&Method::GET, Some(_)) if watching => RequestKind::Watch,
        (&Method::GET, Some(_)) => RequestKind::Get,
        (&Method::GET, None) if watching => RequestKind::Watch,
        (&Method::GET, None) => RequestKind::List,
        (&Method::POST, None) => RequestKind::Create,
        (&Method::PUT, Some(_)) => RequestKind::Update,
        (&Method::PATCH, Some(_)) => RequestKind::Patch,
        (&Method::DELETE, Some(_)) => RequestKind::Delete,
        (other, _) => return Route::Unknown(ApiError::method_not_allowed(other.as_str())),
    };
    Route::Resource(ResourceRequest {
        resource,
        namespace: namespace.to_owned(),
        name: name.map(str::to_owned),
        kind,
    })
}

fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let mut response = json_response(error.code, &error.to_status());
    if let Some(seconds) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A 429 as kube-apiserver's throttling filters write it: Go's `http.Error` (plain text with
/// `X-Content-Type-Options: nosniff`) and a `Retry-After` header, no `Status` body (see
/// [`TOO_MANY_REQUESTS_BODY`]).
fn throttled_response(retry_after_secs: u64) -> Response<ResponseBody> {
    let mut response =
        Response::new(Full::new(Bytes::from_static(TOO_MANY_REQUESTS_BODY.as_bytes())).boxed());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

fn header(request: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Serves one request. An `Err` makes hyper close the connection without an answer: that is
/// how an injected reset is delivered.
pub(crate) async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<ResponseBody>, io::Error> {
    let arrived = Instant::now();
    let query_string = request.uri().query().unwrap_or("").to_owned();
    let query = parse_query(&query_string);
    let route = route(request.method(), request.uri().path(), &query);
    let mut record = RequestRecord {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: query_string,
        content_type: header(&request, CONTENT_TYPE),
        identity: None,
        kind: route.kind(),
        status: None,
        at: SystemTime::now(),
        took: Duration::ZERO,
    };

    let injected = match shared.faults.take(record.kind) {
        Some(Fault::Reset) => {
            record.took = arrived.elapsed();
            shared.faults.log(record);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected reset",
            ));
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            None
        }
        Some(Fault::Status(429)) => Some(throttled_response(SERVER_RETRY_AFTER_SECS)),
        Some(Fault::Status(code)) => Some(error_response(&ApiError::injected(code))),
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            Some(throttled_response(retry_after_secs))
        }
        None => None,
    };

    let response = match injected {
        Some(response) => response,
        None => {
            let authorization = header(&request, AUTHORIZATION);
            let identity = shared.tokens().authenticate(authorization.as_deref());
            match identity {
                None => error_response(&ApiError::unauthorized()),
                Some(identity) => {
                    record.identity = Some(identity.user.clone());
                    serve(request, route, &query, &identity, &shared)
                        .await
                        .unwrap_or_else(|error| error_response(&error))
                }
            }
        }
    };
    record.status = Some(response.status().as_u16());
    record.took = arrived.elapsed();
    shared.faults.log(record);
    Ok(response)
}

async fn serve(
    request: Request<Incoming>,
    route: Route,
    query: &HashMap<String, String>,
    identity: &Identity,
    shared: &Arc<Shared>,
) -> Result<Response<ResponseBody>, ApiError> {
    // Discovery and /version are open to every authenticated user (system:discovery).
    let target = match route {
        Route::Unknown(error) => return Err(error),
        Route::Health => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(response);
        }
        Route::Version => return Ok(json_response(200, &version())),
        Route::CoreGroups => return Ok(json_response(200, &core_groups(&shared.address))),
        Route::Groups => return Ok(json_response(200, &groups())),
        Route::GroupVersion { group, version } => {
            return group_version(&group, &version).map(|body| json_response(200, &body));
        }
        Route::Resource(target) => target,
    };

    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?;
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
    let collection = matches!(target.kind, RequestKind::List | RequestKind::Watch);
    // For list and watch, RBAC sees the name a field selector pins (as the real server does).
    let name = if collection && target.name.is_none() {
        fields.name.clone()
    } else {
        target.name.clone()
    };
    let attributes = RequestAttributes {
        verb: verb_name(target.kind),
        api_group: target.resource.group,
        resource: target.resource.plural,
        namespace: &target.namespace,
        name: name.as_deref(),
    };
    if !shared.authorizer.allows(identity, &attributes) {
        return Err(ApiError::forbidden(
            forbidden_message(identity, &attributes),
            target.resource.group,
            target.resource.plural,
            name.as_deref().unwrap_or(""),
        ));
    }

    let resource = target.resource;
    let namespace = target.namespace.as_str();
    let path_name = target.name.as_deref().unwrap_or("");
    match target.kind {
        RequestKind::Get => Ok(json_response(
            200,
            &shared.store().get(resource, namespace, path_name)?,
        )),
        RequestKind::List => {
            if !fields.namespace_matches(namespace) {
                return Ok(json_response(
                    200,
                    &list_body(resource, Vec::new(), shared.store().resource_version()),
                ));
            }
            let (items, version) = shared
                .store()
                .list(resource, namespace, fields.name.as_deref());
            let items = items
                .into_iter()
                .filter(|item| fields.matches(item) && labels.matches(item))
                .collect();
            Ok(json_response(200, &list_body(resource, items, version)))
        }
        RequestKind::Watch => {
            let mut fields = fields;
            if let Some(name) = &target.name {
                fields.name = Some(name.clone());
            }
            let since = match query.get("resourceVersion").map(String::as_str) {
                None | Some("" | "0") => None,
                Some(text) => Some(text.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {text}"))
                })?),
            };
            let timeout = match query.get("timeoutSeconds") {
                Some(text) => Duration::from_secs(text.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid timeoutSeconds: {text}"))
                })?),
                None => DEFAULT_WATCH_TIMEOUT,
            };
            let body = watch::start(
                shared,
                WatchRequest {
                    resource,
                    namespace: namespace.to_owned(),
                    fields,
                    labels,
                    since,
                    bookmarks: is_true(query, "allowWatchBookmarks"),
                    timeout,
                },
            );
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        RequestKind::Create => {
            let body = read_json(request).await?;
            let created = shared.store().create(resource, namespace, body)?;
            Ok(json_response(201, &created))
        }
        RequestKind::Update => {
            let body = read_json(request).await?;
            let updated = shared
                .store()
                .update(resource, namespace, path_name, |_| Ok(body))?;
            Ok(json_response(200, &updated))
        }
        RequestKind::Patch => {
            let content_type = header(&request, CONTENT_TYPE).unwrap_or_default();
            let patch_type = PatchType::from_content_type(&content_type)?;
            let body = read_body(request).await?;
            let patched = shared
                .store()
                .update(resource, namespace, path_name, |current| {
                    patch::apply(patch_type, current, &body, resource.merge_keys)
                })?;
            Ok(json_response(200, &patched))
        }
        RequestKind::Delete => {
            let deleted = shared.store().delete(resource, namespace, path_name)?;
            let uid = deleted
                .pointer("/metadata/uid")
                .cloned()
                .unwrap_or(Value::Null);
            Ok(json_response(
                200,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": { "name": path_name, "kind": resource.plural, "uid": uid }
                }),
            ))
        }
        RequestKind::Other => Err(ApiError::unknown_path()),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limited = Limited::new(request.into_body(), MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::request_entity_too_large())
        }
        Err(error) => Err(ApiError::bad_request(format!(
            "reading the request body: {error}"
        ))),
    }
}

async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let body = read_body(request).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body of the request is not valid JSON: {e}"))
    })
}

/// A typed list as the real server returns it: items without their own kind and apiVersion.
fn list_body(resource: &ResourceType, items: Vec<Value>, version: u64) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(object) = item.as_object_mut() {
                object.remove("kind");
                object.remove("apiVersion");
            }
            item
        })
        .collect();
    json!({
        "kind": format!("{}List", resource.kind),
        "apiVersion": resource.api_version(),
        "metadata": { "resourceVersion": version.to_string() },
        "items": items,
    })
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-testbed",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn core_groups(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": address }]
    })
}

fn groups() -> Value {
    let groups: Vec<Value> = resources::named_groups()
        .into_iter()
        .map(|(group, version)| {
            let group_version = json!({
                "groupVersion": format!("{group}/{version}"),
                "version": version,
            });
            json!({
                "name": group,
                "versions": [group_version.clone()],
                "preferredVersion": group_version,
            })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn group_version(group: &str, version: &str) -> Result<Value, ApiError> {
    let served: Vec<Value> = resources::in_group_version(group, version)
        .map(|resource| {
            json!({
                "name": resource.plural,
                "singularName": resource.kind.to_lowercase(),
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    if served.is_empty() {
        return Err(ApiError::unknown_path());
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": served,
    }))
}
