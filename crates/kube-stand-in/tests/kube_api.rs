//! The Kubernetes API stand-in over real HTTPS with a plain HTTP client: TLS, tokens, RBAC
//! from the shipped manifests, patch types, resourceVersion, validation, watch and faults.
//! Every request has a client timeout and every watch a server timeout: nothing hangs.

use kube_stand_in::{ApiServer, ApiServerConfig, Fault, FaultOn, PolicyRule, RequestKind};
use reqwest::blocking::{Client, Response};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "flink";
const SERVICE: &str = "flink-jobmanager";
const PORT_SYNC: &str = "system:serviceaccount:flink:port-sync";
const HOUR: Duration = Duration::from_secs(3600);

fn client_trusting(ca_pem: &str) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(certificate.expect("CA PEM"))
            .expect("CA accepted");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

fn jobmanager_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": SERVICE, "namespace": NAMESPACE },
        "spec": {
            "selector": { "component": "jobmanager" },
            "ports": [
                { "name": "rpc", "port": 6123 },
                { "name": "blob", "port": 6124, "targetPort": 6124 },
                { "name": "webui", "port": 8081 }
            ]
        }
    })
}

/// A running server holding the JobManager Service, a client trusting its CA and a
/// port-sync token.
struct Bed {
    server: ApiServer,
    client: Client,
    token: String,
}

impl Bed {
    fn start(config: ApiServerConfig) -> Bed {
        let server = ApiServer::start(config).expect("stand-in starts");
        server
            .create_service(NAMESPACE, jobmanager_service())
            .expect("service created");
        let client = client_trusting(server.ca_pem());
        let token = server.issue_token(PORT_SYNC, HOUR);
        Bed {
            server,
            client,
            token,
        }
    }

    fn new() -> Bed {
        Bed::start(ApiServerConfig::default())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn service_path(&self, name: &str) -> String {
        self.url(&format!("/api/v1/namespaces/{NAMESPACE}/services/{name}"))
    }

    fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .expect("answer")
    }

    fn patch(&self, content_type: &str, body: Value) -> Response {
        self.patch_as(&self.token, content_type, body)
    }

    fn patch_as(&self, token: &str, content_type: &str, body: Value) -> Response {
        self.client
            .patch(self.service_path(SERVICE))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .expect("answer")
    }

    fn ports(&self) -> Value {
        self.server
            .get_service(NAMESPACE, SERVICE)
            .expect("service")["spec"]["ports"]
            .clone()
    }
}

fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

const SERVICE_PATH: &str = "/api/v1/namespaces/flink/services/flink-jobmanager";
const PINNED_LIST: &str =
    "/api/v1/namespaces/flink/services?fieldSelector=metadata.name%3Dflink-jobmanager";

#[test]
fn tls_verifies_against_the_servers_ca_and_fails_against_another() {
    let bed = Bed::new();
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);

    let other = ApiServer::start(ApiServerConfig::default()).expect("second stand-in");
    let wrong_ca = client_trusting(other.ca_pem());
    let refused = wrong_ca
        .get(bed.url(SERVICE_PATH))
        .bearer_auth(&bed.token)
        .send();
    assert!(
        refused.is_err(),
        "a client trusting another CA must fail the handshake"
    );

    // Plain HTTP on the same port gets no HTTP answer: the TLS server refuses it.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", bed.server.port())).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(format!("GET {SERVICE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP must not be served"
    );
}

#[test]
fn unknown_missing_and_expired_tokens_get_401_status() {
    let bed = Bed::new();
    let unknown = bed
        .client
        .get(bed.url(SERVICE_PATH))
        .bearer_auth("not-a-token")
        .send()
        .unwrap();
    let (code, body) = json_of(unknown);
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");

    let missing = bed.client.get(bed.url(SERVICE_PATH)).send().unwrap();
    assert_eq!(missing.status().as_u16(), 401);

    let short = bed.server.issue_token(PORT_SYNC, Duration::from_secs(2));
    let fresh = bed
        .client
        .get(bed.url(SERVICE_PATH))
        .bearer_auth(&short)
        .send()
        .unwrap();
    assert_eq!(fresh.status().as_u16(), 200);
    // Margins of seconds: the machine is shared, and a late first request must not expire.
    std::thread::sleep(Duration::from_millis(2200));
    let expired = bed
        .client
        .get(bed.url(SERVICE_PATH))
        .bearer_auth(&short)
        .send()
        .unwrap();
    let (code, body) = json_of(expired);
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");
}

#[test]
fn rotation_writes_a_new_token_and_the_old_one_lives_until_its_expiry() {
    let bed = Bed::new();
    let folder = tempfile::tempdir().unwrap();
    let token_file = folder.path().join("token");
    let old = bed
        .server
        .rotate_token(&token_file, PORT_SYNC, Duration::from_secs(2))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), old);
    let new = bed
        .server
        .rotate_token(&token_file, PORT_SYNC, HOUR)
        .unwrap();
    assert_ne!(old, new);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), new);
    // Only the token file remains: the temporary file was renamed over it.
    assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 1);

    let with = |token: &str| {
        bed.client
            .get(bed.url(SERVICE_PATH))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        with(&old),
        200,
        "a rotated-out token stays valid until it expires"
    );
    assert_eq!(with(&new), 200);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(with(&old), 401);
    assert_eq!(with(&new), 200);
}

#[test]
fn rbac_allows_the_roles_verbs_on_the_named_service() {
    let bed = Bed::new();
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);

    let (code, list) = json_of(bed.get(PINNED_LIST));
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ServiceList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], SERVICE);
    assert_eq!(
        list["metadata"]["resourceVersion"],
        bed.server.resource_version().to_string()
    );

    let watch = bed.get(&format!("{PINNED_LIST}&watch=true&timeoutSeconds=1"));
    assert_eq!(watch.status().as_u16(), 200);

    let patched = bed.patch(
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"a": "b"}}}),
    );
    assert_eq!(patched.status().as_u16(), 200);
}

#[test]
fn rbac_forbids_other_verbs_names_and_unpinned_lists_with_the_real_message() {
    let bed = Bed::new();
    bed.server
        .create_service(
            NAMESPACE,
            json!({"metadata": {"name": "other"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .unwrap();

    let (code, body) = json_of(bed.get("/api/v1/namespaces/flink/services/other"));
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "services \"other\" is forbidden: User \"system:serviceaccount:flink:port-sync\" cannot get resource \"services\" in API group \"\" in the namespace \"flink\""
    );
    assert_eq!(
        body["details"],
        json!({"name": "other", "kind": "services"})
    );

    let (code, body) = json_of(bed.get("/api/v1/namespaces/flink/services"));
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "services is forbidden: User \"system:serviceaccount:flink:port-sync\" cannot list resource \"services\" in API group \"\" in the namespace \"flink\""
    );

    let deleted = bed
        .client
        .delete(bed.service_path(SERVICE))
        .bearer_auth(&bed.token)
        .send()
        .unwrap();
    let (code, body) = json_of(deleted);
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot delete resource"),
        "{body}"
    );

    let replaced = bed
        .client
        .put(bed.service_path(SERVICE))
        .bearer_auth(&bed.token)
        .json_body(&jobmanager_service())
        .send()
        .unwrap();
    assert_eq!(replaced.status().as_u16(), 403);

    let (code, _) = json_of(bed.get("/api/v1/namespaces/default/services/flink-jobmanager"));
    assert_eq!(code, 403, "the Role grants nothing outside its namespace");

    // An unbound identity gets nothing, the admin everything.
    let stranger = bed
        .server
        .issue_token("system:serviceaccount:flink:default", HOUR);
    let response = bed
        .client
        .get(bed.url(SERVICE_PATH))
        .bearer_auth(stranger)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let admin = bed.server.admin_token().to_owned();
    let response = bed
        .client
        .get(bed.url("/api/v1/namespaces/flink/services"))
        .bearer_auth(admin)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn a_role_without_patch_or_watch_forbids_them_by_name() {
    let bed = Bed::start(
        ApiServerConfig::default()
            .without_verb("patch")
            .without_verb("watch"),
    );
    let (code, body) = json_of(bed.patch("application/merge-patch+json", json!({"metadata": {}})));
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "services \"flink-jobmanager\" is forbidden: User \"system:serviceaccount:flink:port-sync\" cannot patch resource \"services\" in API group \"\" in the namespace \"flink\""
    );
    assert_eq!(
        body["details"],
        json!({"name": SERVICE, "kind": "services"})
    );

    let (code, body) = json_of(bed.get(&format!("{PINNED_LIST}&watch=1&timeoutSeconds=1")));
    assert_eq!(code, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot watch resource \"services\"")
    );
    assert_eq!(
        bed.get(SERVICE_PATH).status().as_u16(),
        200,
        "get is still granted"
    );

    // Extra rules widen the Role.
    let wide = Bed::start(ApiServerConfig::default().with_rule(PolicyRule::core(
        &["services"],
        &["list"],
        &[],
    )));
    assert_eq!(
        wide.get("/api/v1/namespaces/flink/services")
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn json_patch_applies_and_a_failed_test_op_is_422() {
    let bed = Bed::new();
    let before = bed.server.resource_version();
    let good = json!([
        {"op": "test", "path": "/spec/ports/0/name", "value": "rpc"},
        {"op": "test", "path": "/spec/ports/0/port", "value": 6123},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 44215},
        {"op": "replace", "path": "/spec/ports/0/targetPort", "value": 44215}
    ]);
    let (code, body) = json_of(bed.patch("application/json-patch+json", good));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["ports"][0]["port"], 44215);
    assert_eq!(body["spec"]["ports"][0]["targetPort"], 44215);
    let after: u64 = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after > before);

    let stale_test = json!([
        {"op": "test", "path": "/spec/ports/0/name", "value": "blob"},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 1}
    ]);
    let (code, body) = json_of(bed.patch("application/json-patch+json", stale_test));
    assert_eq!(code, 422);
    assert_status(&body, 422, "Invalid");
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "testing value /spec/ports/0/name failed"
    );
    assert_eq!(
        bed.ports()[0]["port"],
        44215,
        "a failed patch changes nothing"
    );
    assert_eq!(bed.server.resource_version(), after);
}

#[test]
fn merge_and_strategic_merge_patches_follow_their_rfcs_and_merge_keys() {
    let bed = Bed::new();
    let (code, body) = json_of(bed.patch(
        "application/merge-patch+json",
        json!({"spec": {"ports": [{"name": "rpc", "port": 7000}]}}),
    ));
    assert_eq!(code, 200, "{body}");
    // Merge patch replaces lists whole (and the server defaults the new entry).
    assert_eq!(
        body["spec"]["ports"],
        json!([{"name": "rpc", "port": 7000, "protocol": "TCP", "targetPort": 7000}])
    );

    let bed = Bed::new();
    let (code, body) = json_of(bed.patch(
        "application/strategic-merge-patch+json",
        json!({"spec": {"ports": [{"port": 6124, "targetPort": 33533}, {"name": "metrics", "port": 9249}]}}),
    ));
    assert_eq!(code, 200, "{body}");
    let ports = body["spec"]["ports"].as_array().unwrap();
    assert_eq!(
        ports.len(),
        4,
        "merged by port: one changed, one added: {ports:?}"
    );
    assert_eq!(ports[1]["name"], "blob");
    assert_eq!(ports[1]["targetPort"], 33533);
    assert_eq!(ports[3]["name"], "metrics");

    let (code, body) = json_of(bed.patch(
        "application/strategic-merge-patch+json",
        json!({"spec": {"ports": [{"$patch": "delete", "port": 9249}]}}),
    ));
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["ports"].as_array().unwrap().len(), 3);
    let (code, body) = json_of(bed.patch(
        "application/strategic-merge-patch+json",
        json!({"spec": {"ports": [{"$patch": "replace"}, {"name": "rpc", "port": 1234}]}}),
    ));
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["ports"].as_array().unwrap().len(), 1);
}

#[test]
fn stale_resource_versions_are_409_and_unchanged_patches_keep_the_version() {
    let bed = Bed::new();
    let current = bed.server.get_service(NAMESPACE, SERVICE).unwrap();
    let version = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    bed.server
        .edit_service(NAMESPACE, SERVICE, |svc| {
            svc["metadata"]["labels"] = json!({"edited": "yes"})
        })
        .unwrap();

    let (code, body) = json_of(bed.patch(
        "application/merge-patch+json",
        json!({"metadata": {"resourceVersion": version}, "spec": {"type": "NodePort"}}),
    ));
    assert_eq!(code, 409);
    assert_status(&body, 409, "Conflict");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on services \"flink-jobmanager\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let admin = bed.server.admin_token().to_owned();
    let (code, _) = json_of(
        bed.client
            .put(bed.service_path(SERVICE))
            .bearer_auth(&admin)
            .json_body(&current)
            .send()
            .unwrap(),
    );
    assert_eq!(code, 409, "PUT with a stale resourceVersion");

    let before = bed.server.resource_version();
    let (code, body) = json_of(bed.patch(
        "application/merge-patch+json",
        json!({"spec": {"ports": bed.ports()}}),
    ));
    assert_eq!(code, 200);
    assert_eq!(body["metadata"]["resourceVersion"], before.to_string());
    assert_eq!(
        bed.server.resource_version(),
        before,
        "a no-op patch bumps nothing"
    );

    let (code, body) = json_of(bed.patch("application/json", json!({})));
    assert_eq!(code, 415);
    assert_status(&body, 415, "UnsupportedMediaType");
}

#[test]
fn invalid_services_are_422_with_real_field_messages() {
    let bed = Bed::new();
    let (code, body) = json_of(bed.patch(
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/ports/1/port", "value": 70000}]),
    ));
    assert_eq!(code, 422);
    assert_status(&body, 422, "Invalid");
    assert_eq!(
        body["message"],
        "Service \"flink-jobmanager\" is invalid: spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    assert_eq!(
        body["details"]["causes"][0],
        json!({"reason": "FieldValueInvalid", "message": "Invalid value: 70000: must be between 1 and 65535, inclusive", "field": "spec.ports[1].port"})
    );
    assert_eq!(body["details"]["kind"], "Service");
    assert_eq!(body["details"]["name"], SERVICE);

    let (code, body) = json_of(bed.patch(
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/ports/1/name", "value": "rpc"}]),
    ));
    assert_eq!(code, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("spec.ports[1].name: Duplicate value: \"rpc\""),
        "{body}"
    );

    let (code, body) = json_of(bed.patch(
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/spec/ports/2/name"}]),
    ));
    assert_eq!(code, 422);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("spec.ports[2].name: Required value"),
        "{body}"
    );

    let (code, body) = json_of(bed.patch(
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/ports/1/port", "value": 6123},
               {"op": "replace", "path": "/spec/ports/0/targetPort", "value": 65536}]),
    ));
    assert_eq!(code, 422);
    let causes = body["details"]["causes"].as_array().unwrap();
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == "spec.ports[0].targetPort"),
        "{body}"
    );
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == "spec.ports[1]" && c["reason"] == "FieldValueDuplicate"),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Service \"flink-jobmanager\" is invalid: [")
    );

    let error = bed
        .server
        .create_service(
            NAMESPACE,
            json!({"metadata": {"name": "bad"}, "spec": {"ports": [{"port": 0}]}}),
        )
        .unwrap_err();
    assert_eq!(error.code, 422);
}

#[test]
fn missing_objects_and_unknown_paths_are_404_status() {
    let bed = Bed::start(ApiServerConfig::default().with_rule(PolicyRule::core(
        &["services"],
        &["get"],
        &["gone"],
    )));
    let (code, body) = json_of(bed.get("/api/v1/namespaces/flink/services/gone"));
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["message"], "services \"gone\" not found");
    assert_eq!(body["details"], json!({"name": "gone", "kind": "services"}));

    let (code, body) = json_of(bed.get("/api/v1/namespaces/flink/widgets/x"));
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    let (code, _) = json_of(bed.get("/nothing/here"));
    assert_eq!(code, 404);
    let (code, version) = json_of(bed.get("/version"));
    assert_eq!(code, 200);
    assert_eq!(version["major"], "1");
}

/// Reads watch events until `wanted` matches one or the stream ends; the server's
/// timeoutSeconds bounds it.
fn read_events(response: Response, mut wanted: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    for line in BufReader::new(response).lines() {
        let Ok(line) = line else { break };
        let event: Value = serde_json::from_str(&line).expect("one JSON event per line");
        let done = wanted(&event);
        events.push(event);
        if done {
            break;
        }
    }
    events
}

#[test]
fn watch_sees_modified_after_an_edit_and_replays_from_a_resource_version() {
    let bed = Bed::new();
    let start = bed.server.resource_version();
    let response = bed.get(&format!(
        "{PINNED_LIST}&watch=true&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=5"
    ));
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    bed.server
        .edit_service(NAMESPACE, SERVICE, |svc| {
            svc["spec"]["ports"][0]["port"] = json!(6125)
        })
        .unwrap();
    let began = Instant::now();
    let events = read_events(response, |e| e["type"] == "MODIFIED");
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "the event came at once"
    );
    let modified = events.last().unwrap();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["spec"]["ports"][0]["port"], 6125);
    assert_eq!(
        modified["object"]["metadata"]["resourceVersion"],
        (start + 1).to_string()
    );

    // From the old version, the same change is replayed from history.
    let replay = bed.get(&format!(
        "{PINNED_LIST}&watch=1&resourceVersion={start}&timeoutSeconds=2"
    ));
    let events = read_events(replay, |e| e["type"] == "MODIFIED");
    assert_eq!(events.last().unwrap()["type"], "MODIFIED");

    // Without a version, the watch starts with the current object as ADDED.
    let fresh = bed.get(&format!("{PINNED_LIST}&watch=true&timeoutSeconds=2"));
    let events = read_events(fresh, |_| true);
    assert_eq!(events[0]["type"], "ADDED");
}

#[test]
fn watch_from_a_too_old_resource_version_gets_a_410_error_event() {
    let bed = Bed::start(ApiServerConfig::default().watch_history(2));
    for port in [7001, 7002, 7003] {
        bed.server
            .edit_service(NAMESPACE, SERVICE, |svc| {
                svc["spec"]["ports"][0]["port"] = json!(port)
            })
            .unwrap();
    }
    let response = bed.get(&format!(
        "{PINNED_LIST}&watch=true&resourceVersion=1&timeoutSeconds=2"
    ));
    assert_eq!(response.status().as_u16(), 200);
    let events = read_events(response, |_| true);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    let status = &events[0]["object"];
    assert_status(status, 410, "Expired");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 1 ("),
        "{status}"
    );
}

#[test]
fn watch_sends_bookmarks_when_asked() {
    let bed = Bed::start(ApiServerConfig::default().bookmark_interval(Duration::from_millis(200)));
    let version = bed.server.resource_version();
    let response = bed.get(&format!(
        "{PINNED_LIST}&watch=true&resourceVersion={version}&allowWatchBookmarks=true&timeoutSeconds=3"
    ));
    let events = read_events(response, |e| e["type"] == "BOOKMARK");
    let bookmark = events.last().unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        version.to_string()
    );
}

#[test]
fn injected_server_errors_answer_with_status_bodies_then_stop() {
    let bed = Bed::new();
    let faults = bed.server.faults();
    faults.fail_next(FaultOn::Get, 1, Fault::Status(500));
    faults.fail_next(FaultOn::Get, 1, Fault::Status(503));
    let (code, body) = json_of(bed.get(SERVICE_PATH));
    assert_eq!(code, 500);
    assert_status(&body, 500, "InternalError");
    let (code, body) = json_of(bed.get(SERVICE_PATH));
    assert_eq!(code, 503);
    assert_status(&body, 503, "ServiceUnavailable");
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);

    // A fault for patches leaves other requests alone.
    faults.fail_next(FaultOn::Patch, 1, Fault::Status(500));
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);
    assert_eq!(faults.pending(), 1);
    let response = bed.patch("application/merge-patch+json", json!({}));
    assert_eq!(response.status().as_u16(), 500);
    assert_eq!(faults.pending(), 0);
}

/// maxinflight.go and priority-and-fairness.go answer 429 with Go's `http.Error`: plain
/// text, `Retry-After: 1`, no Status body for a client to read `retryAfterSeconds` from.
#[test]
fn too_many_requests_is_plain_text_with_retry_after_as_the_throttling_filters_send() {
    let bed = Bed::new();
    let faults = bed.server.faults();
    faults.fail_next(FaultOn::Any, 1, Fault::Status(429));
    faults.fail_next(
        FaultOn::Any,
        1,
        Fault::TooManyRequests {
            retry_after_secs: 3,
        },
    );
    for retry_after in ["1", "3"] {
        let response = bed.get(PINNED_LIST);
        assert_eq!(response.status().as_u16(), 429);
        let headers = response.headers();
        assert_eq!(headers["retry-after"], retry_after);
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(
            response.text().unwrap(),
            "Too many requests, please try again later.\n"
        );
    }
    assert_eq!(bed.get(PINNED_LIST).status().as_u16(), 200);
}

/// waitgroup.go: a draining server's 503 is a Status with no details and `Retry-After: 1`.
#[test]
fn service_unavailable_is_the_draining_servers_status_with_retry_after() {
    let bed = Bed::new();
    bed.server
        .faults()
        .fail_next(FaultOn::Patch, 1, Fault::Status(503));
    let response = bed.patch("application/merge-patch+json", json!({}));
    assert_eq!(response.headers()["retry-after"], "1");
    let (code, body) = json_of(response);
    assert_eq!(code, 503);
    assert_status(&body, 503, "ServiceUnavailable");
    assert_eq!(body["message"], "apiserver is shutting down");
    assert!(body.get("details").is_none(), "{body}");
}

#[test]
fn reset_closes_the_connection_without_an_answer() {
    let bed = Bed::new();
    bed.server.faults().fail_next(FaultOn::Get, 1, Fault::Reset);
    let result = bed
        .client
        .get(bed.url(SERVICE_PATH))
        .bearer_auth(&bed.token)
        .send();
    assert!(
        result.is_err(),
        "no answer expected, got {:?}",
        result.map(|r| r.status())
    );
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);
    let log = bed.server.requests();
    let reset = log
        .iter()
        .find(|r| r.status.is_none())
        .expect("the reset is logged");
    assert_eq!(reset.kind, RequestKind::Get);
}

#[test]
fn delay_answers_late() {
    let bed = Bed::new();
    bed.server
        .faults()
        .fail_next(FaultOn::Get, 1, Fault::Delay(Duration::from_millis(700)));
    let began = Instant::now();
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);
    assert!(began.elapsed() >= Duration::from_millis(700));
    let began = Instant::now();
    assert_eq!(bed.get(SERVICE_PATH).status().as_u16(), 200);
    assert!(began.elapsed() < Duration::from_millis(700));
}

#[test]
fn down_for_refuses_connections_cuts_watches_and_comes_back_on_the_same_port() {
    let bed = Bed::new();
    let port = bed.server.port();
    let version = bed.server.resource_version();
    let watch = bed.get(&format!(
        "{PINNED_LIST}&watch=true&resourceVersion={version}&timeoutSeconds=30"
    ));
    assert_eq!(watch.status().as_u16(), 200);

    bed.server.down_for(Duration::from_millis(1500));
    let began = Instant::now();
    let events = read_events(watch, |_| false);
    assert!(events.is_empty());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the watch was cut, not timed out"
    );
    let refused = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "nothing listens while down");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client_trusting(bed.server.ca_pem());
        let answer = fresh
            .get(bed.url(SERVICE_PATH))
            .bearer_auth(&bed.token)
            .send();
        if answer.as_ref().is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server came back on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_request_log_records_what_clients_did() {
    let bed = Bed::new();
    bed.get(SERVICE_PATH);
    bed.patch("application/json-patch+json", json!([]));
    let log = bed.server.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, SERVICE_PATH);
    assert_eq!(log[0].identity.as_deref(), Some(PORT_SYNC));
    assert_eq!(log[0].status, Some(200));
    assert_eq!(log[1].kind, RequestKind::Patch);
    assert_eq!(
        log[1].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    bed.server.faults().clear_requests();
    bed.get(PINNED_LIST);
    let log = bed.server.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].query,
        "fieldSelector=metadata.name%3Dflink-jobmanager"
    );
    assert!(!log.iter().any(|r| r.method == "PATCH"));
}

#[test]
fn the_kubeconfig_names_the_server_ca_token_file_and_namespace() {
    let bed = Bed::new();
    let folder = tempfile::tempdir().unwrap();
    let token_file = folder.path().join("token");
    bed.server
        .rotate_token(&token_file, PORT_SYNC, HOUR)
        .unwrap();
    let kubeconfig = folder.path().join("kubeconfig");
    bed.server
        .write_kubeconfig(&kubeconfig, &token_file, NAMESPACE)
        .unwrap();
    let parsed: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(parsed["clusters"][0]["cluster"]["server"], bed.server.url());
    let ca = parsed["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(ca)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), bed.server.ca_pem());
    assert_eq!(
        parsed["users"][0]["user"]["tokenFile"],
        token_file.to_str().unwrap()
    );
    assert_eq!(parsed["contexts"][0]["context"]["namespace"], NAMESPACE);
    assert_eq!(parsed["current-context"], "testbed");
}

/// PUT/POST helper: reqwest's `json` needs a feature; a body and a header do the same.
trait JsonBody {
    fn json_body(self, value: &Value) -> Self;
}

impl JsonBody for reqwest::blocking::RequestBuilder {
    fn json_body(self, value: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }
}

/// A request as the admin, who may do everything (how Helm reaches the stand-in).
fn as_admin(bed: &Bed, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = bed
        .client
        .request(method, bed.url(path))
        .bearer_auth(bed.server.admin_token());
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    json_of(request.send().expect("answer"))
}

#[test]
fn discovery_lists_every_group_and_kind_the_chart_creates() {
    let bed = Bed::new();
    let (code, groups) = as_admin(&bed, reqwest::Method::GET, "/apis", None);
    assert_eq!(code, 200);
    assert_eq!(groups["kind"], "APIGroupList");
    let served: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["preferredVersion"]["groupVersion"].as_str().unwrap())
        .collect();
    assert_eq!(
        served,
        [
            "apps/v1",
            "policy/v1",
            "rbac.authorization.k8s.io/v1",
            "networking.k8s.io/v1",
            "monitoring.coreos.com/v1"
        ]
    );
    for (path, kinds) in [
        (
            "/api/v1",
            &[
                "Service",
                "ConfigMap",
                "ServiceAccount",
                "PersistentVolumeClaim",
                "Pod",
            ][..],
        ),
        ("/apis/apps/v1", &["Deployment", "StatefulSet"][..]),
        ("/apis/policy/v1", &["PodDisruptionBudget"][..]),
        (
            "/apis/rbac.authorization.k8s.io/v1",
            &["Role", "RoleBinding"][..],
        ),
        ("/apis/networking.k8s.io/v1", &["NetworkPolicy"][..]),
        (
            "/apis/monitoring.coreos.com/v1",
            &["ServiceMonitor", "PrometheusRule"][..],
        ),
    ] {
        let (code, list) = as_admin(&bed, reqwest::Method::GET, path, None);
        assert_eq!(code, 200, "{path}");
        assert_eq!(list["kind"], "APIResourceList", "{path}");
        let listed: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|resource| resource["kind"].as_str().unwrap())
            .collect();
        assert_eq!(listed, kinds, "{path}");
    }
    let (code, _) = as_admin(&bed, reqwest::Method::GET, "/apis/batch/v1", None);
    assert_eq!(code, 404, "a group not served is not discovered");
}

#[test]
fn other_kinds_are_404_until_created_then_stored_as_given() {
    let bed = Bed::new();
    let path = "/apis/apps/v1/namespaces/flink/deployments/demo-jobmanager";
    let (code, body) = as_admin(&bed, reqwest::Method::GET, path, None);
    assert_eq!(code, 404);
    assert_status(&body, 404, "NotFound");
    assert_eq!(
        body["message"],
        "deployments.apps \"demo-jobmanager\" not found"
    );

    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "demo-jobmanager"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "jm"}]}}}
    });
    let (code, created) = as_admin(
        &bed,
        reqwest::Method::POST,
        "/apis/apps/v1/namespaces/flink/deployments?fieldManager=helm",
        Some(deployment.clone()),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"], deployment["spec"]);
    assert_eq!(created["metadata"]["namespace"], NAMESPACE);
    assert!(created["metadata"]["uid"].is_string());
    let (code, read) = as_admin(&bed, reqwest::Method::GET, path, None);
    assert_eq!(code, 200);
    assert_eq!(read, created);
    assert_eq!(
        bed.server
            .get_object("apps/v1", "Deployment", NAMESPACE, "demo-jobmanager"),
        Some(created)
    );

    // A second create is 409; a bad name is 422; port-sync's token may not create anything.
    let (code, body) = as_admin(
        &bed,
        reqwest::Method::POST,
        "/apis/apps/v1/namespaces/flink/deployments",
        Some(deployment),
    );
    assert_eq!(code, 409);
    assert_status(&body, 409, "AlreadyExists");
    let (code, body) = as_admin(
        &bed,
        reqwest::Method::POST,
        "/api/v1/namespaces/flink/configmaps",
        Some(json!({"metadata": {"name": "Not_A_Name"}, "data": {}})),
    );
    assert_eq!(code, 422);
    assert_status(&body, 422, "Invalid");
    let denied = bed
        .client
        .post(bed.url("/api/v1/namespaces/flink/configmaps"))
        .bearer_auth(&bed.token)
        .header("Content-Type", "application/json")
        .body(json!({"metadata": {"name": "x"}}).to_string())
        .send()
        .expect("answer");
    assert_eq!(denied.status().as_u16(), 403);

    // Services keep their validation when created this way too.
    let (code, body) = as_admin(
        &bed,
        reqwest::Method::POST,
        "/api/v1/namespaces/flink/services",
        Some(json!({"metadata": {"name": "bad"}, "spec": {"ports": [{"port": 0}]}})),
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        bed.server.objects(NAMESPACE).len(),
        2,
        "the Service and the Deployment"
    );
}

/// metav1 `ValidateLabels`: keys are qualified names (`[DNS-1123 subdomain/]name`, name at
/// most 63 of alphanumerics, '-', '_', '.'), values at most 63 of the same or empty; a bad
/// one is 422 at `metadata.labels`, for every kind, the Service included.
#[test]
fn labels_are_refused_as_kube_apiserver_refuses_them() {
    let bed = Bed::new();
    let create = |path: &str, labels: Value| {
        as_admin(
            &bed,
            reqwest::Method::POST,
            path,
            Some(json!({
                "metadata": {"name": "labelled", "labels": labels},
                "spec": {"ports": [{"name": "rpc", "port": 6123}]},
                "data": {},
            })),
        )
    };
    let good = json!({
        "app.kubernetes.io/name": "flink",
        "helm.sh/chart": "flink-ha-0.1.0",
        "Empty_OK.1": "",
        "v": "A-b_c.9",
    });
    let (code, body) = create("/api/v1/namespaces/flink/configmaps", good.clone());
    assert_eq!(code, 201, "{body}");
    let (code, body) = create("/api/v1/namespaces/flink/services", good);
    assert_eq!(code, 201, "{body}");

    let too_long = "a".repeat(64);
    let bad = [
        (
            json!({"-app": "x"}),
            "\"-app\": name part must consist of alphanumeric",
        ),
        (
            json!({"a/b/c": "x"}),
            "\"a/b/c\": a qualified name must consist of",
        ),
        (
            json!({"Example.com/x": "x"}),
            "\"Example.com/x\": prefix part a lowercase RFC 1123 subdomain",
        ),
        (json!({"/x": "x"}), "\"/x\": prefix part must be non-empty"),
        (json!({"x/": "x"}), "\"x/\": name part must be non-empty"),
        (
            json!({ too_long.clone(): "x" }),
            "name part must be no more than 63 characters",
        ),
        (json!({"x": too_long}), "must be no more than 63 characters"),
        (
            json!({"x": "a b"}),
            "\"a b\": a valid label must be an empty string or consist of",
        ),
        (
            json!({"x": "-a"}),
            "\"-a\": a valid label must be an empty string",
        ),
    ];
    for (labels, expected) in bad {
        for path in [
            "/api/v1/namespaces/flink/configmaps",
            "/api/v1/namespaces/flink/services",
        ] {
            let (code, body) = create(path, labels.clone());
            assert_eq!(code, 422, "{labels} at {path}: {body}");
            assert_status(&body, 422, "Invalid");
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains("metadata.labels: Invalid value: ") && message.contains(expected),
                "{labels} at {path}: {message}"
            );
            assert_eq!(body["details"]["causes"][0]["field"], "metadata.labels");
        }
    }
}
