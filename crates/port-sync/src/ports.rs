//! The words every other module shares: which Service port follows which Flink config key,
//! and the port numbers the JobManager wants. Pure data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// `--port NAME=FLINK_KEY`: the Service port named `port_name` must equal the value the
/// JobManager reports for `flink_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub port_name: String,
    pub flink_key: String,
}

impl PortMapping {
    pub fn new(port_name: &str, flink_key: &str) -> Self {
        Self {
            port_name: port_name.to_owned(),
            flink_key: flink_key.to_owned(),
        }
    }
}

/// Flink's settings that make a server listen on another port than the one it advertises:
/// (advertised key, listened-on key). `jobmanager.rpc.bind-port` is Flink's setting for NAT and
/// port mapping (JobManagerOptions.RPC_BIND_PORT). The blob server has none: BlobServer opens one
/// socket from `blob.server.port` and ClusterEntrypoint writes that socket's local port back
/// into `blob.server.port`, so the port it reports is the port it listens on.
const BIND_PORT_KEYS: &[(&str, &str)] = &[("jobmanager.rpc.port", "jobmanager.rpc.bind-port")];

impl PortMapping {
    /// The Flink key naming the port the server listens on, when it may differ from the
    /// advertised `flink_key`: the source of the Service's `targetPort`.
    pub fn bind_key(&self) -> Option<&'static str> {
        BIND_PORT_KEYS
            .iter()
            .find(|(advertised, _)| *advertised == self.flink_key)
            .map(|(_, bind)| *bind)
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.port_name, self.flink_key)
    }
}

impl FromStr for PortMapping {
    type Err = String;

    /// Reads `NAME=FLINK_KEY`. NAME must be a valid Kubernetes port name (IANA_SVC_NAME:
    /// at most 15 of a-z, 0-9 and '-', with a letter, no '-' at either end or twice in a row),
    /// because a name the API server would refuse can never match a Service port.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((name, key)) = text.split_once('=') else {
            return Err(format!(
                "{text:?} has no '='; write SERVICE_PORT_NAME=FLINK_KEY, e.g. rpc=jobmanager.rpc.port"
            ));
        };
        check_port_name(name)?;
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '=') {
            return Err(format!(
                "the Flink key {key:?} in {text:?} must be a non-empty config key without spaces, \
                 e.g. blob.server.port"
            ));
        }
        Ok(Self::new(name, key))
    }
}

fn check_port_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("it is longer than 15 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("it may hold only a-z, 0-9 and '-'")
    } else if !name.chars().any(|c| c.is_ascii_lowercase()) {
        Some("it needs at least one letter")
    } else if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        Some("'-' may not start or end it, nor appear twice in a row")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!(
            "the Service port name {name:?} is not a valid Kubernetes port name: {problem} \
             (e.g. rpc, blob)"
        )),
        None => Ok(()),
    }
}

/// What one Service port should hold: `port`, what Flink advertises (TaskManagers dial
/// `<Service>:port`), and `target_port`, what the JobManager listens on (the Service forwards
/// there). They differ only when Flink is given a bind port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    pub port: u16,
    pub target_port: u16,
}

impl PortPair {
    /// A server that listens on the port it advertises.
    pub fn same(port: u16) -> Self {
        Self {
            port,
            target_port: port,
        }
    }
}

impl fmt::Display for PortPair {
    /// `44215`, or `46911 (targetPort 33221)` when they differ.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if self.target_port != self.port {
            write!(f, " (targetPort {})", self.target_port)?;
        }
        Ok(())
    }
}

/// The ports each mapped Service port name should have, as the JobManager reports them.
/// Ordered by name so that logs, metrics and patches come out the same every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredPorts(BTreeMap<String, PortPair>);

impl DesiredPorts {
    /// A port the server listens on as it advertises it.
    pub fn insert(&mut self, port_name: &str, port: u16) {
        self.insert_pair(port_name, PortPair::same(port));
    }

    pub fn insert_pair(&mut self, port_name: &str, pair: PortPair) {
        self.0.insert(port_name.to_owned(), pair);
    }

    /// The advertised port (the Service's `port`).
    pub fn get(&self, port_name: &str) -> Option<u16> {
        self.pair(port_name).map(|pair| pair.port)
    }

    pub fn pair(&self, port_name: &str) -> Option<PortPair> {
        self.0.get(port_name).copied()
    }

    /// Each name with its advertised port (the Service's `port`).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.pairs().map(|(name, pair)| (name, pair.port))
    }

    /// Each name with its port and targetPort.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, PortPair)> {
        self.0.iter().map(|(name, pair)| (name.as_str(), *pair))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[(&str, u16); N]> for DesiredPorts {
    fn from(pairs: [(&str, u16); N]) -> Self {
        let mut desired = Self::default();
        for (name, port) in pairs {
            desired.insert(name, port);
        }
        desired
    }
}

impl fmt::Display for DesiredPorts {
    /// `blob=33533, rpc=46911 (targetPort 33221)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, pair) in self.pairs() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={pair}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_equals_key() {
        assert_eq!(
            "blob=blob.server.port".parse(),
            Ok(PortMapping::new("blob", "blob.server.port"))
        );
    }

    #[test]
    fn refuses_bad_mappings_and_says_what_would_be_right() {
        for (text, said) in [
            ("rpc", "has no '='"),
            ("=jobmanager.rpc.port", "it is empty"),
            ("RPC=jobmanager.rpc.port", "only a-z, 0-9 and '-'"),
            ("a-very-long-port-name=k", "longer than 15"),
            ("123=k", "at least one letter"),
            ("-rpc=k", "'-' may not start"),
            ("rpc=", "non-empty config key"),
            ("rpc=a b", "without spaces"),
        ] {
            let message = text.parse::<PortMapping>().unwrap_err();
            assert!(message.contains(said), "{text}: {message}");
        }
    }

    #[test]
    fn desired_ports_show_in_name_order() {
        let desired = DesiredPorts::from([("rpc", 44215), ("blob", 33533)]);
        assert_eq!(desired.to_string(), "blob=33533, rpc=44215");
        assert_eq!(desired.get("rpc"), Some(44215));
        assert_eq!(desired.get("rest"), None);
    }

    #[test]
    fn a_bind_port_shows_as_the_target_port() {
        let mut desired = DesiredPorts::from([("blob", 33533)]);
        desired.insert_pair(
            "rpc",
            PortPair {
                port: 46911,
                target_port: 33221,
            },
        );
        assert_eq!(
            desired.to_string(),
            "blob=33533, rpc=46911 (targetPort 33221)"
        );
        assert_eq!(desired.get("rpc"), Some(46911));
    }

    #[test]
    fn only_the_rpc_port_has_a_bind_key() {
        let key = |flink_key: &str| PortMapping::new("p", flink_key).bind_key();
        assert_eq!(key("jobmanager.rpc.port"), Some("jobmanager.rpc.bind-port"));
        assert_eq!(key("blob.server.port"), None);
        assert_eq!(key("rest.port"), None);
    }
}
