//! The Kubernetes API server stand-in, the one part of the test bed that is not the real thing:
//! no kube-apiserver can run on these machines, so this serves the part of the API that
//! port-sync and the chart's objects use, behaving as the real server does: HTTPS with its own
//! CA, bearer tokens with expiry, RBAC from the project's own `rbac/` manifests, core/v1
//! Services with get/list/watch/create/update/patch/delete, resourceVersion, validation,
//! Status bodies, and fault injection. [`service_bed`] holds the JobManager Service as the
//! chart creates it, with a kubeconfig carrying port-sync's own token.
//!
//! This crate's README.md is its conformance table: each behaviour copied from kube-apiserver,
//! the source file that shows it, and the test that checks it. It must not grow behaviour that
//! no test, drill or chart check relies on, nor anything kube-apiserver would not do: a
//! behaviour only this stand-in accepts is a defect found by the first real cluster.
//!
//! It runs on its own thread with its own tokio runtime, so synchronous code can use it;
//! dropping the [`ApiServer`] stops it.

mod auth;
mod faults;
mod http;
mod patch;
mod rbac;
mod resources;
mod selectors;
mod server;
mod status;
mod store;
mod tls;
mod validate;
mod watch;

pub mod service_bed;

pub use auth::{ADMIN_USER, Identity, write_token_file};
pub use faults::{Fault, FaultOn, Faults, RequestKind, RequestRecord};
pub use rbac::{PolicyRule, RbacConfig, RoleCopy};
pub use status::{
    ApiError, FieldError, FieldProblem, SERVER_RETRY_AFTER_SECS, TOO_MANY_REQUESTS_BODY,
};

use base64::Engine as _;
use serde_json::{Value, json};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch as signal};

/// The admin token lives this long: longer than any test, benchmark or demo.
const ADMIN_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Where it listens; its certificate names this address too. 127.0.0.1 unless containers
    /// on a network of their own must reach it (they find it as a pod finds its API server,
    /// through `KUBERNETES_SERVICE_HOST`, at an address of the host on that network).
    pub address: IpAddr,
    /// `None`: a free port.
    pub port: Option<u16>,
    pub rbac: RbacConfig,
    /// How many change events watches can replay from; older versions get 410 Gone.
    pub watch_history: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            rbac: RbacConfig::default(),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

impl ApiServerConfig {
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Listens on `address` instead of 127.0.0.1 (see [`ApiServerConfig::address`]).
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = address;
        self
    }

    /// Takes `verb` out of every rule of the Role, e.g. "patch" or "watch".
    pub fn without_verb(mut self, verb: &str) -> Self {
        self.rbac.without_verbs.push(verb.to_owned());
        self
    }

    /// Adds a rule to the Role.
    pub fn with_rule(mut self, rule: PolicyRule) -> Self {
        self.rbac.extra_rules.push(rule);
        self
    }

    /// Adds a copy of the Role and RoleBinding naming `service`, bound to `service_account`
    /// (another Flink cluster's, as another release of the chart creates).
    pub fn with_role_copy(mut self, service: &str, service_account: &str) -> Self {
        self.rbac.copies.push(RoleCopy {
            service: service.to_owned(),
            service_account: service_account.to_owned(),
        });
        self
    }

    /// Puts the Role and RoleBinding (and the bound service account) in `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.rbac.namespace = Some(namespace.to_owned());
        self
    }

    pub fn watch_history(mut self, events: usize) -> Self {
        self.watch_history = events;
        self
    }

    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }
}

pub struct ApiServer {
    shared: Arc<http::Shared>,
    address: SocketAddr,
    ca_pem: String,
    admin_token: String,
    shutdown: signal::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Makes the CA and certificate, loads the RBAC manifests, binds the configured address and
    /// starts serving on a thread of its own. Fails if the manifests are missing or invalid.
    pub fn start(config: ApiServerConfig) -> io::Result<ApiServer> {
        let authorizer = rbac::Authorizer::load(&config.rbac)?;
        let server_tls = tls::make_server_tls(config.address)?;
        let listener = server::bind(SocketAddr::from((config.address, config.port.unwrap_or(0))))?;
        let address = listener.local_addr()?;
        let (commands_sender, commands) = mpsc::unbounded_channel();
        let (shutdown, shutdown_receiver) = signal::channel(false);
        let mut tokens = auth::TokenRegistry::default();
        let admin_token = tokens.issue(Identity::admin(), ADMIN_TOKEN_LIFETIME);
        let shared = Arc::new(http::Shared {
            store: Mutex::new(store::Store::new(config.watch_history)),
            tokens: Mutex::new(tokens),
            authorizer,
            faults: Faults::new(commands_sender),
            bookmark_interval: config.bookmark_interval,
            address: address.to_string(),
        });
        // One thread is plenty for a test server and leaves the two cores to the code under test.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listening = server::Listening {
            listener,
            acceptor: server_tls.acceptor,
            shared: Arc::clone(&shared),
            commands,
            shutdown: shutdown_receiver,
        };
        let thread = std::thread::Builder::new()
            .name(format!("kube-api-{}", address.port()))
            .spawn(move || {
                if let Err(error) = runtime.block_on(server::serve(listening)) {
                    eprintln!("kube-api stand-in stopped: {error}");
                }
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(ApiServer {
            shared,
            address,
            ca_pem: server_tls.ca_pem,
            admin_token,
            shutdown,
            thread: Some(thread),
        })
    }

    /// `https://<address>:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The CA that signed the server's certificate, in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A token of `kubernetes-admin` (group system:masters): every verb on everything.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A new token for `user` (e.g. `system:serviceaccount:flink:port-sync`), valid for `valid_for`.
    pub fn issue_token(&self, user: &str, valid_for: Duration) -> String {
        self.shared
            .tokens()
            .issue(Identity::from_user(user), valid_for)
    }

    /// Issues a token for `user` and writes it to `path` atomically; returns the token.
    /// Used both for the first token and for a rotation: earlier tokens stay valid until
    /// their own expiry, as projected service-account tokens do.
    pub fn rotate_token(&self, path: &Path, user: &str, valid_for: Duration) -> io::Result<String> {
        let token = self.issue_token(user, valid_for);
        write_token_file(path, &token)?;
        Ok(token)
    }

    /// A kubeconfig for this server as YAML text: the CA and `token` inline, `namespace` as the
    /// context's. For clients that take the kubeconfig as a string (the Helm library), so that
    /// nothing on disk (a discovery cache keyed by the file) outlives this server.
    pub fn kubeconfig_yaml(&self, token: &str, namespace: &str) -> io::Result<String> {
        self.kubeconfig_text(json!({ "token": token }), namespace)
    }

    /// Writes a kubeconfig for this server: the CA inline, and a user whose token is read
    /// from `token_file` (kube and client-go re-read it, so rotation reaches them).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        token_file: &Path,
        namespace: &str,
    ) -> io::Result<()> {
        let text = self.kubeconfig_text(json!({ "tokenFile": token_file }), namespace)?;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        let mut file = tempfile::NamedTempFile::new_in(folder.unwrap_or_else(|| Path::new(".")))?;
        io::Write::write_all(&mut file, text.as_bytes())?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// A kubeconfig as YAML: one cluster (this server, its CA inline), one user with these
    /// credentials, one context with `namespace`.
    fn kubeconfig_text(&self, user: serde_json::Value, namespace: &str) -> io::Result<String> {
        let ca_data = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "testbed",
                "cluster": { "server": self.url(), "certificate-authority-data": ca_data }
            }],
            "users": [{ "name": "testbed-user", "user": user }],
            "contexts": [{
                "name": "testbed",
                "context": { "cluster": "testbed", "user": "testbed-user", "namespace": namespace }
            }],
            "current-context": "testbed",
            "preferences": {}
        });
        serde_saphyr::to_string(&kubeconfig).map_err(io::Error::other)
    }

    /// Fault injection, `down_for` and the request log.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.faults.requests()
    }

    /// Stops listening and cuts every connection for `duration`, then listens again on the
    /// same port. Returns once down.
    pub fn down_for(&self, duration: Duration) {
        self.shared.faults.down_for(duration);
    }

    /// The newest resourceVersion (every change raises it).
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Creates a Service as an outside party would (validated, defaulted); returns it stored.
    pub fn create_service(&self, namespace: &str, service: Value) -> Result<Value, ApiError> {
        self.shared
            .store()
            .create(&resources::SERVICES, namespace, service)
    }

    pub fn get_service(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(&resources::SERVICES, namespace, name)
            .ok()
    }

    /// Replaces a Service (a PUT): 409 if `metadata.resourceVersion` is set and stale.
    pub fn replace_service(&self, namespace: &str, service: Value) -> Result<Value, ApiError> {
        let name = service
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.shared
            .store()
            .update(&resources::SERVICES, namespace, &name, |_| Ok(service))
    }

    /// Changes a Service in place, as `kubectl edit` or `helm upgrade` would: a real change
    /// raises the resourceVersion and reaches watchers; an edit that changes nothing does not.
    pub fn edit_service(
        &self,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        self.shared
            .store()
            .update(&resources::SERVICES, namespace, name, |current| {
                let mut edited = current.clone();
                edit(&mut edited);
                Ok(edited)
            })
    }

    /// An object of any served kind, e.g. `("apps/v1", "Deployment", "flink", "jm")`.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let resource = resources::by_kind(api_version, kind)?;
        self.shared.store().get(resource, namespace, name).ok()
    }

    /// Every object in `namespace`, of every kind (each with its apiVersion and kind).
    pub fn objects(&self, namespace: &str) -> Vec<Value> {
        self.shared.store().everything(namespace)
    }

    pub fn delete_service(&self, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared
            .store()
            .delete(&resources::SERVICES, namespace, name)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
