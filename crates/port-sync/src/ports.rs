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

/// The port each mapped Service port name should have, as the JobManager reports it.
/// Ordered by name so that logs, metrics and patches come out the same every time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredPorts(BTreeMap<String, u16>);

impl DesiredPorts {
    pub fn insert(&mut self, port_name: &str, port: u16) {
        self.0.insert(port_name.to_owned(), port);
    }

    pub fn get(&self, port_name: &str) -> Option<u16> {
        self.0.get(port_name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u16)> {
        self.0.iter().map(|(name, port)| (name.as_str(), *port))
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
    /// `blob=33533, rpc=44215`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, port) in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={port}")?;
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
}
