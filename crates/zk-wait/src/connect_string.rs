//! ZooKeeper's connect string, as Flink's `high-availability.zookeeper.quorum` and ZooKeeper
//! clients take it: `host[:port][,host[:port]...][/chroot]`. Pure: no resolution, no sockets.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// ZooKeeper's client port when a server names none.
pub const DEFAULT_PORT: u16 = 2181;

/// A host as written: a DNS name, or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ipv4(ip) => write!(f, "{ip}"),
            Host::Ipv6(ip) => write!(f, "[{ip}]"),
        }
    }
}

/// One server of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A parsed connect string: the distinct servers in the order given, and the chroot, which
/// zk-wait does not probe (it only names where Flink will keep its data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    pub servers: Vec<Server>,
    pub chroot: Option<String>,
}

/// What is wrong with a connect string; the message names the bad part and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectStringError {
    input: String,
    problem: String,
}

impl fmt::Display for ConnectStringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid ZooKeeper connect string {:?}: {}; expected host[:port] entries separated by commas, \
             with an optional /chroot, e.g. zk-0.zk-hs:2181,zk-1.zk-hs:2181,[fd00::1]:2181/flink",
            self.input, self.problem
        )
    }
}

impl std::error::Error for ConnectStringError {}

impl std::str::FromStr for ConnectString {
    type Err = ConnectStringError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        parse(input)
    }
}

/// Parses a connect string. Duplicate servers (same host, ignoring case, and port) count once.
pub fn parse(input: &str) -> Result<ConnectString, ConnectStringError> {
    let error = |problem: String| ConnectStringError {
        input: input.to_owned(),
        problem,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(error("it is empty".into()));
    }
    let (hosts, chroot) = match text.find('/') {
        Some(slash) => (
            &text[..slash],
            Some(parse_chroot(&text[slash..]).map_err(error)?),
        ),
        None => (text, None),
    };
    let mut servers: Vec<Server> = Vec::new();
    for (index, entry) in hosts.split(',').enumerate() {
        let server = parse_server(entry.trim()).map_err(|problem| {
            error(format!(
                "server #{} {:?}: {problem}",
                index + 1,
                entry.trim()
            ))
        })?;
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(ConnectString {
        servers,
        chroot: chroot.flatten(),
    })
}

/// `/` alone means no chroot, as in ZooKeeper.
fn parse_chroot(chroot: &str) -> Result<Option<String>, String> {
    if chroot == "/" {
        return Ok(None);
    }
    if chroot.ends_with('/') {
        return Err(format!("chroot {chroot:?} must not end with '/'"));
    }
    for segment in chroot[1..].split('/') {
        if segment.is_empty() {
            return Err(format!("chroot {chroot:?} has an empty path segment"));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "chroot {chroot:?} must not contain '.' or '..' segments"
            ));
        }
        if segment.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "chroot {chroot:?} contains whitespace or control characters"
            ));
        }
    }
    Ok(Some(chroot.to_owned()))
}

fn parse_server(entry: &str) -> Result<Server, String> {
    if entry.is_empty() {
        return Err("the entry is empty (a stray comma?)".into());
    }
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address opened with '[' must close with ']'")?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("after ']' only ':port' may follow")?,
            ),
        };
        (Host::Ipv6(ip), port)
    } else {
        let (host, port) = match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err("IPv6 addresses must be written in brackets, e.g. [fd00::1]:2181".into());
        }
        (parse_host(host)?, port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => parse_port(port)?,
    };
    Ok(Server { host, port })
}

fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ipv4(ip));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    // A trailing dot is a fully qualified name, as in DNS.
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "{host:?} is not a host name (letters, digits, '-' and '_' in dot-separated labels) \
             or an IP address"
        ));
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("the port after ':' is empty".into());
    }
    if !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    match port.parse::<u32>() {
        Ok(0) => Err("port 0 is not a port a server can listen on; use 1 to 65535".into()),
        Ok(n) if n <= u32::from(u16::MAX) => Ok(n as u16),
        _ => Err(format!("port {port} is out of range; use 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(input: &str) -> Vec<String> {
        parse(input)
            .unwrap()
            .servers
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn problem(input: &str) -> String {
        parse(input).unwrap_err().to_string()
    }

    #[test]
    fn reads_a_kubernetes_ensemble() {
        let parsed = parse("zk-0.zk-hs:2181,zk-1.zk-hs:2181,zk-2.zk-hs:2181").unwrap();
        assert_eq!(parsed.servers.len(), 3);
        assert_eq!(parsed.servers[1].host, Host::Name("zk-1.zk-hs".into()));
        assert_eq!(parsed.servers[1].port, 2181);
        assert_eq!(parsed.chroot, None);
    }

    #[test]
    fn defaults_the_port_and_keeps_the_chroot_apart() {
        let parsed = parse("zk-0,zk-1:2182/flink/prod").unwrap();
        assert_eq!(servers("zk-0,zk-1:2182/flink"), ["zk-0:2181", "zk-1:2182"]);
        assert_eq!(parsed.chroot.as_deref(), Some("/flink/prod"));
        assert_eq!(
            parse("zk:2181/").unwrap().chroot,
            None,
            "'/' alone is no chroot"
        );
        assert!(problem("zk/flink/").contains("chroot \"/flink/\" must not end with '/'"));
    }

    #[test]
    fn reads_ip_literals() {
        assert_eq!(
            servers("127.0.0.1:2181,[::1]:2182,[fd00::5],10.0.0.1"),
            [
                "127.0.0.1:2181",
                "[::1]:2182",
                "[fd00::5]:2181",
                "10.0.0.1:2181"
            ]
        );
        assert_eq!(
            parse("[::1]").unwrap().servers[0].host,
            Host::Ipv6(Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn counts_duplicates_once() {
        assert_eq!(
            servers("zk:2181,ZK,zk:2182, zk:2181 "),
            ["zk:2181", "zk:2182"]
        );
        assert_eq!(servers("[::1]:2181,[0:0:0:0:0:0:0:1]"), ["[::1]:2181"]);
    }

    #[test]
    fn names_each_bad_part() {
        assert!(problem("").contains("it is empty"));
        assert!(problem("   ").contains("it is empty"));
        assert!(problem("zk-0:0").contains("server #1 \"zk-0:0\": port 0 is not a port"));
        assert!(
            problem("zk-0,zk-1:70000")
                .contains("server #2 \"zk-1:70000\": port 70000 is out of range")
        );
        assert!(problem("zk-0:99999999999").contains("out of range"));
        assert!(problem("zk-0:http").contains("port \"http\" is not a number"));
        assert!(problem("zk-0:").contains("the port after ':' is empty"));
        assert!(problem("zk-0,,zk-1").contains("server #2 \"\": the entry is empty"));
        assert!(problem("zk-0,").contains("server #2"));
        assert!(problem(":2181").contains("the host is empty"));
        assert!(problem("::1").contains("IPv6 addresses must be written in brackets"));
        assert!(problem("[::1").contains("must close with ']'"));
        assert!(problem("[zk]:2181").contains("\"zk\" is not an IPv6 address"));
        assert!(problem("[::1]2181").contains("only ':port' may follow"));
        assert!(problem("zk 0:2181").contains("is not a host name"));
        assert!(problem("-zk:2181").contains("is not a host name"));
        assert!(problem("zk..local").contains("is not a host name"));
        assert!(problem("zk/flink//x").contains("empty path segment"));
        assert!(problem("zk/flink/../x").contains("'..'"));
        assert!(problem("zk/fl ink").contains("whitespace"));
    }

    #[test]
    fn every_message_shows_the_right_form() {
        assert!(problem("zk:0").contains("e.g. zk-0.zk-hs:2181,zk-1.zk-hs:2181"));
    }
}
