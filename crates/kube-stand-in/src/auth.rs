//! Bearer-token authentication. Tokens are issued per identity with an expiry, like the
//! bound service-account tokens kubelet projects into a pod: a rotated-out token stays valid
//! until its own expiry, and an expired or unknown one is refused with 401. The server checks
//! the token on every request, so a client that caches a token past its expiry is caught.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Who a request comes from: the user name and the groups the real authenticators add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// The user of the admin token: the name kubeadm gives its admin, in the superuser group.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// Members of this group may do everything, as on a real cluster.
pub const SUPERUSER_GROUP: &str = "system:masters";

impl Identity {
    /// An identity with the groups a real cluster derives from the user name:
    /// `system:serviceaccount:<ns>:<name>` is in `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>`; everyone is in `system:authenticated`.
    pub fn from_user(user: &str) -> Self {
        let mut groups = Vec::new();
        if let Some(rest) = user.strip_prefix("system:serviceaccount:")
            && let Some((namespace, _)) = rest.split_once(':')
        {
            groups.push("system:serviceaccounts".to_owned());
            groups.push(format!("system:serviceaccounts:{namespace}"));
        }
        groups.push("system:authenticated".to_owned());
        Identity {
            user: user.to_owned(),
            groups,
        }
    }

    pub(crate) fn admin() -> Self {
        Identity {
            user: ADMIN_USER.to_owned(),
            groups: vec![
                SUPERUSER_GROUP.to_owned(),
                "system:authenticated".to_owned(),
            ],
        }
    }

    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity::from_user(&format!("system:serviceaccount:{namespace}:{name}"))
    }
}

struct IssuedToken {
    identity: Identity,
    expires_at: Instant,
}

#[derive(Default)]
pub(crate) struct TokenRegistry {
    tokens: HashMap<String, IssuedToken>,
}

/// 43 random URL-safe characters, about as long as a real bound token's signature part;
/// tokens only need to be unguessable by accident, not by an attacker.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..43)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

impl TokenRegistry {
    pub(crate) fn issue(&mut self, identity: Identity, valid_for: Duration) -> String {
        let token = random_token();
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                identity,
                expires_at: Instant::now() + valid_for,
            },
        );
        token
    }

    /// The identity behind an `Authorization` header, or `None` (answered with 401) when
    /// the header is missing, not a bearer token, unknown or expired.
    pub(crate) fn authenticate(&self, authorization: Option<&str>) -> Option<Identity> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let issued = self.tokens.get(token)?;
        (Instant::now() < issued.expires_at).then(|| issued.identity.clone())
    }
}

/// Writes `token` to `path` the way kubelet swaps a projected token: into a temporary file
/// in the same folder, then renamed over the old one, so a reader never sees half a token.
pub fn write_token_file(path: &Path, token: &str) -> io::Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    let folder = folder.unwrap_or_else(|| Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(folder)?;
    temporary.write_all(token.as_bytes())?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(())
}
