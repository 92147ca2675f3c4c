//! Just enough HTTP to read Flink's REST API in tests: one blocking GET per connection with
//! the standard library, so the test bed needs no HTTP client. Flink's REST server answers
//! with a `content-length`, which is all this reads.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Flink's answers here are a few KB; a bigger one is not what a test expects.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `address`, within `limit` for connecting and for each read and write.
pub fn get(address: SocketAddr, path: &str, limit: Duration) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&address, limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            break end;
        }
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            return Err(bad_answer(
                address,
                path,
                "the connection closed before the headers ended",
            ));
        }
        received.extend_from_slice(&chunk[..count]);
        if received.len() > MAX_RESPONSE_BYTES {
            return Err(bad_answer(address, path, "headers over 16 MB"));
        }
    };
    let head = String::from_utf8_lossy(&received[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad_answer(address, path, &format!("no HTTP status line: {head:?}")))?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                content_length = value.trim().parse::<usize>().ok();
            } else if name == "transfer-encoding" && !value.trim().eq_ignore_ascii_case("identity")
            {
                return Err(bad_answer(
                    address,
                    path,
                    "a chunked answer (not supported here)",
                ));
            }
        }
    }
    let mut body = received.split_off(header_end + 4);
    match content_length {
        Some(length) if length > MAX_RESPONSE_BYTES => {
            return Err(bad_answer(address, path, "a body over 16 MB"));
        }
        Some(length) => {
            while body.len() < length {
                let count = stream.read(&mut chunk)?;
                if count == 0 {
                    return Err(bad_answer(address, path, "the body ended early"));
                }
                body.extend_from_slice(&chunk[..count]);
            }
            body.truncate(length);
        }
        None => {
            (&mut stream)
                .take((MAX_RESPONSE_BYTES - body.len()) as u64)
                .read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `/jobmanager/config` and `/taskmanagers/<id>/config` answer `[{"key": .., "value": ..}]`.
pub fn parse_config_entries(body: &str) -> io::Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        value: String,
    }
    let entries: Vec<Entry> = serde_json::from_str(body).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a Flink config listing ({error}): {body}"),
        )
    })?;
    Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn bad_answer(address: SocketAddr, path: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("GET http://{address}{path}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            // Byte by byte, so the reader must put the pieces together.
            for byte in answer {
                let _ = stream.write_all(&[*byte]);
            }
            // Keep-alive like Flink: the body's length, not the close, ends the answer.
            thread::sleep(Duration::from_secs(5));
        });
        address
    }

    #[test]
    fn reads_a_keep_alive_answer_by_its_content_length() {
        let address = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n\
              content-length: 19\r\n\r\n{\"taskmanagers\":[]}",
        );
        let response = get(address, "/taskmanagers", Duration::from_secs(2)).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"taskmanagers\":[]}");
    }

    #[test]
    fn config_entries_become_a_map() {
        let map = parse_config_entries(
            r#"[{"key":"blob.server.port","value":"33533"},{"key":"jobmanager.rpc.port","value":"44215"}]"#,
        )
        .unwrap();
        assert_eq!(map["blob.server.port"], "33533");
        assert_eq!(map["jobmanager.rpc.port"], "44215");
        assert!(parse_config_entries("<html>503</html>").is_err());
    }
}
