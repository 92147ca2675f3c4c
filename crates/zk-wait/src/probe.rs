//! The I/O edge: resolving a server's name and asking one address one four-letter word, each
//! step bounded in time and the answer bounded in size.

use crate::connect_string::{Host, Server};
use crate::four_letter::{Word, parse_reply};
use crate::state::{Exchange, Failure};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A ZooKeeper `srvr` answer is well under 1 KiB; anything near this cap is not ZooKeeper.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Resolves `server` afresh (a headless Service gains records as its pods become ready).
/// Returns the distinct addresses, or why there are none.
pub async fn resolve(server: &Server, limit: Duration) -> Result<Vec<SocketAddr>, String> {
    let name = match &server.host {
        Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(IpAddr::V4(*ip), server.port)]),
        Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(IpAddr::V6(*ip), server.port)]),
        Host::Name(name) => name,
    };
    let lookup = tokio::net::lookup_host((name.as_str(), server.port));
    let mut addresses: Vec<SocketAddr> = match timeout(limit, lookup).await {
        Err(_) => return Err(format!("no DNS answer within {limit:?}")),
        Ok(Err(error)) => return Err(resolver_message(&error)),
        Ok(Ok(found)) => found.collect(),
    };
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err("the name has no addresses".into());
    }
    Ok(addresses)
}

/// getaddrinfo's messages ("failed to lookup address information: Name or service not known")
/// are long; keep the part that says what happened.
fn resolver_message(error: &io::Error) -> String {
    let message = error.to_string();
    message
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&message)
        .to_owned()
}

/// Connects, sends `word`, and reads the answer to its end. ZooKeeper closes the connection
/// after answering, so the end of the stream is the end of the answer.
pub async fn ask(address: SocketAddr, word: Word, limit: Duration) -> Exchange {
    let mut stream = match timeout(limit, TcpStream::connect(address)).await {
        Err(_) => return Exchange::Failed(Failure::ConnectTimeout),
        Ok(Err(error)) => return Exchange::Failed(failure_from(&error)),
        Ok(Ok(stream)) => stream,
    };
    let exchange = async {
        stream.write_all(word.as_str().as_bytes()).await?;
        read_bounded(&mut stream).await
    };
    match timeout(limit, exchange).await {
        Err(_) => Exchange::Failed(Failure::AnswerTimeout),
        Ok(Err(error)) => Exchange::Failed(failure_from(&error)),
        Ok(Ok(None)) => Exchange::Failed(Failure::TooLarge {
            limit: MAX_ANSWER_BYTES,
        }),
        Ok(Ok(Some(answer))) => Exchange::Answered(parse_reply(word, &answer)),
    }
}

/// Reads to the end of the stream, or gives `None` as soon as the answer passes the cap.
async fn read_bounded(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut answer = Vec::with_capacity(1024);
    let mut bounded = stream.take(MAX_ANSWER_BYTES as u64 + 1);
    bounded.read_to_end(&mut answer).await?;
    Ok((answer.len() <= MAX_ANSWER_BYTES).then_some(answer))
}

fn failure_from(error: &io::Error) -> Failure {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Failure::Reset,
        io::ErrorKind::TimedOut => Failure::ConnectTimeout,
        _ => Failure::Other(error.to_string()),
    }
}
