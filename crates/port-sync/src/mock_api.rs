//! A Kubernetes API server inside the test process, for tests of the sync loop and `--once` on
//! paused time: a tower `Service` that `kube::Client` sends its requests to (kube-rs's
//! controller-rs tests its reconciler the same way, with tower-test's mock).
//!
//! It holds the one Service and answers what port-sync sends as kube-apiserver does: get;
//! watch (from version "0" it first sends the Service as it is, then every change); JSON Patch,
//! all or nothing, 422 when a `test` op fails; the resourceVersion raised on every change. A
//! test can refuse a verb (403, 503, 429 with Retry-After), play an outside writer, or push any
//! watch event; every request is recorded with the (paused) time it came. A scripted port
//! source stands in for the JobManager.

use crate::flink::{FetchError, JobManagerError, PortSource};
use crate::ports::{DesiredPorts, PortMapping};
use crate::service::ServiceHandle;
use hyper::body::{Body, Bytes, Frame};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const NAMESPACE: &str = "flink";
pub const NAME: &str = "flink-jobmanager";

/// The Service as the chart makes it, at resourceVersion 10.
pub fn chart_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "resourceVersion": "10"},
        "spec": {"selector": {"app": "flink"}, "ports": [
            {"name": "rest", "port": 8081, "targetPort": 8081, "protocol": "TCP"},
            {"name": "rpc", "port": 6123, "targetPort": 6123, "protocol": "TCP"},
            {"name": "blob", "port": 6124, "targetPort": 6124, "protocol": "TCP"},
        ]},
    })
}

/// One request as the API server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Since the mock was made, on tokio's (paused) clock.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Sent {
    /// The Kubernetes verb: get, watch, patch, or other.
    pub fn verb(&self) -> &'static str {
        let one = format!("/api/v1/namespaces/{NAMESPACE}/services/{NAME}");
        let list = format!("/api/v1/namespaces/{NAMESPACE}/services");
        match self.method.as_str() {
            "GET" if self.path == one => "get",
            "GET" if self.path == list && self.query.split('&').any(|p| p == "watch=true") => {
                "watch"
            }
            "PATCH" if self.path == one => "patch",
            _ => "other",
        }
    }
}

/// How a verb is refused.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    code: u16,
    retry_after_seconds: Option<u32>,
    /// Refused this many more times; None: until allowed.
    times: Option<u32>,
}

type Hook = Arc<dyn Fn(&MockApi) + Send + Sync>;

struct State {
    start: Instant,
    service: Value,
    version: u64,
    sent: Vec<Sent>,
    watches: Vec<mpsc::UnboundedSender<Bytes>>,
    refusals: BTreeMap<&'static str, Refusal>,
    after_patch: Option<Hook>,
}

#[derive(Clone)]
pub struct MockApi {
    state: Arc<Mutex<State>>,
}

impl MockApi {
    pub fn new(service: Value) -> Self {
        let version = service["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|version| version.parse().ok())
            .unwrap_or(1);
        Self {
            state: Arc::new(Mutex::new(State {
                start: Instant::now(),
                service,
                version,
                sent: Vec::new(),
                watches: Vec::new(),
                refusals: BTreeMap::new(),
                after_patch: None,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no test panics while holding the mock's lock")
    }

    /// A handle on the Service through a `kube::Client` that talks to this mock only.
    pub fn handle(&self) -> ServiceHandle {
        ServiceHandle::new(kube::Client::new(self.clone(), NAMESPACE), NAMESPACE, NAME)
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state().sent.clone()
    }

    pub fn count(&self, verb: &str) -> usize {
        self.state()
            .sent
            .iter()
            .filter(|s| s.verb() == verb)
            .count()
    }

    /// The times (seconds since start) of the requests of `verb`.
    pub fn times(&self, verb: &str) -> Vec<f64> {
        let state = self.state();
        let times = state.sent.iter().filter(|s| s.verb() == verb);
        times.map(|s| s.at.as_secs_f64()).collect()
    }

    pub fn service(&self) -> Value {
        self.state().service.clone()
    }

    /// Refuses `verb` with `code` until `allow`.
    pub fn refuse(&self, verb: &'static str, code: u16) {
        self.state().refusals.insert(
            verb,
            Refusal {
                code,
                retry_after_seconds: None,
                times: None,
            },
        );
    }

    /// Refuses the next `verb` once, with `code` and `details.retryAfterSeconds`.
    pub fn refuse_once(&self, verb: &'static str, code: u16, retry_after_seconds: Option<u32>) {
        self.state().refusals.insert(
            verb,
            Refusal {
                code,
                retry_after_seconds,
                times: Some(1),
            },
        );
    }

    pub fn allow(&self, verb: &str) {
        self.state().refusals.remove(verb);
    }

    /// Runs after every accepted PATCH (an outside writer that reacts to ours).
    pub fn after_patch(&self, hook: impl Fn(&MockApi) + Send + Sync + 'static) {
        self.state().after_patch = Some(Arc::new(hook));
    }

    /// An outside writer's change: stored at a new resourceVersion, sent to every watch.
    pub fn edit(&self, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let mut service = state.service.clone();
        change(&mut service);
        state.store(service);
    }

    /// Sends `object` as a watch event of `kind` to every open watch, changing nothing stored.
    pub fn send_event(&self, kind: &str, object: Value) {
        self.state().send_event(kind, &object);
    }

    /// The server ends every open watch (as it does after timeoutSeconds).
    pub fn end_watches(&self) {
        self.state().watches.clear();
    }

    async fn answer(self, request: http::Request<kube::client::Body>) -> http::Response<MockBody> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let mut state = self.state();
        let sent = Sent {
            at: state.start.elapsed(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(ToOwned::to_owned),
            body: (!bytes.is_empty())
                .then(|| serde_json::from_slice(&bytes).expect("port-sync sends JSON")),
        };
        let verb = sent.verb();
        state.sent.push(sent.clone());
        if let Some(refusal) = state.refusals.get(verb).copied() {
            match refusal.times {
                Some(1) => {
                    state.refusals.remove(verb);
                }
                Some(n) => state.refusals.get_mut(verb).expect("just read").times = Some(n - 1),
                None => {}
            }
            return refused(verb, refusal);
        }
        match verb {
            "get" => whole(200, &state.service),
            "watch" => {
                let (events, stream) = mpsc::unbounded_channel();
                let from_start = sent.query.split('&').any(|p| p == "resourceVersion=0");
                if from_start {
                    let _ = events.send(event("ADDED", &state.service));
                }
                state.watches.push(events);
                http::Response::new(MockBody::Stream(stream))
            }
            "patch" => {
                let patch: json_patch::Patch =
                    serde_json::from_value(sent.body.clone().unwrap_or_default())
                        .expect("port-sync sends JSON Patch");
                let mut service = state.service.clone();
                if let Err(error) = json_patch::patch(&mut service, &patch) {
                    // As kube-apiserver answers a failed `test` op.
                    return status(422, "Invalid", &error.to_string(), None);
                }
                state.store(service);
                let answer = whole(200, &state.service);
                let hook = state.after_patch.clone();
                drop(state);
                if let Some(hook) = hook {
                    hook(&self);
                }
                answer
            }
            _ => status(404, "NotFound", "the mock knows only the one Service", None),
        }
    }
}

impl State {
    fn store(&mut self, mut service: Value) {
        self.version += 1;
        service["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.service = service;
        let service = self.service.clone();
        self.send_event("MODIFIED", &service);
    }

    fn send_event(&mut self, kind: &str, object: &Value) {
        self.watches
            .retain(|watch| watch.send(event(kind, object)).is_ok());
    }
}

fn event(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn whole(code: u16, value: &Value) -> http::Response<MockBody> {
    let mut response = http::Response::new(MockBody::Whole(Some(Bytes::from(value.to_string()))));
    *response.status_mut() = http::StatusCode::from_u16(code).expect("a valid status");
    response
}

/// A Status body as kube-apiserver sends it.
fn status(
    code: u16,
    reason: &str,
    message: &str,
    retry_after_seconds: Option<u32>,
) -> http::Response<MockBody> {
    let mut details = json!({"name": NAME, "kind": "services"});
    if let Some(seconds) = retry_after_seconds {
        details["retryAfterSeconds"] = json!(seconds);
    }
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    });
    whole(code, &body)
}

fn refused(verb: &str, refusal: Refusal) -> http::Response<MockBody> {
    match refusal.code {
        // The wording of kube-apiserver's authorization filter.
        403 => status(
            403,
            "Forbidden",
            &format!(
                "services \"{NAME}\" is forbidden: User \"system:serviceaccount:{NAMESPACE}:port-sync\" \
                 cannot {verb} resource \"services\" in API group \"\" in the namespace \"{NAMESPACE}\""
            ),
            None,
        ),
        429 => status(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
            refusal.retry_after_seconds,
        ),
        code => status(
            code,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            refusal.retry_after_seconds,
        ),
    }
}

impl tower_service::Service<http::Request<kube::client::Body>> for MockApi {
    type Response = http::Response<MockBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move { Ok(api.answer(request).await) })
    }
}

/// A whole answer, or a watch's stream of event lines that ends when the mock drops its end.
pub enum MockBody {
    Whole(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(lines) => lines
                .poll_recv(cx)
                .map(|line| line.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// The JobManager as a script: answers the ports it is given, or is not there.
#[derive(Clone)]
pub struct MockJobManager {
    answer: Arc<Mutex<Result<DesiredPorts, JobManagerError>>>,
    url: http::Uri,
}

impl MockJobManager {
    /// A JobManager not up yet: connection refused.
    pub fn silent() -> Self {
        Self {
            answer: Arc::new(Mutex::new(Err(JobManagerError::Fetch(
                FetchError::Unreachable("Connection refused".into()),
            )))),
            url: http::Uri::from_static("http://127.0.0.1:8081/jobmanager/config"),
        }
    }

    pub fn answer(&self, ports: DesiredPorts) {
        *self.answer.lock().expect("not poisoned") = Ok(ports);
    }
}

impl PortSource for MockJobManager {
    fn config_url(&self) -> &http::Uri {
        &self.url
    }

    fn desired_ports(
        &self,
        _: &[PortMapping],
    ) -> impl Future<Output = Result<DesiredPorts, JobManagerError>> + Send {
        std::future::ready(self.answer.lock().expect("not poisoned").clone())
    }
}
