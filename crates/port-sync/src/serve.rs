//! /healthz, /readyz and /metrics on `--listen`: a tiny HTTP/1.1 responder on tokio, enough
//! for kubelet probes and a Prometheus scraper, with no HTTP server crate to carry. Each
//! connection gets one answer and is closed; requests are bounded in size and time.

use crate::metrics::SharedMetrics;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// A probe's or scraper's request head is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer: status line, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The whole response; `head_only` for HEAD requests.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Answers a request head (everything up to the blank line). Pure.
pub fn answer(head: &[u8], metrics: &SharedMetrics) -> Answer {
    let head = String::from_utf8_lossy(head);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Answer::text(
            400,
            "Bad Request",
            "expected a request line: GET /path HTTP/1.1\n",
        );
    };
    if !version.starts_with("HTTP/1.") {
        return Answer::text(400, "Bad Request", "only HTTP/1.x is spoken here\n");
    }
    if method != "GET" && method != "HEAD" {
        return Answer::text(405, "Method Not Allowed", "use GET\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/healthz" => Answer::text(200, "OK", "ok\n"),
        "/readyz" => {
            if metrics.lock().in_sync {
                Answer::text(200, "OK", "in sync\n")
            } else {
                Answer::text(
                    503,
                    "Service Unavailable",
                    "not in sync: the Service did not match the JobManager at the last check\n",
                )
            }
        }
        "/metrics" => Answer {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.lock().render(),
        },
        _ => Answer::text(404, "Not Found", "try /healthz, /readyz or /metrics\n"),
    }
}

/// A failed accept (out of file descriptors, say) repeats every 100 ms while it lasts: say
/// so at once, then at most once a minute with how many failed meanwhile.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// When to warn about failed accepts. Pure: the caller gives the time.
#[derive(Debug, Default)]
struct AcceptWarnings {
    last_warned: Option<Instant>,
    unreported: u64,
}

impl AcceptWarnings {
    /// Counts a failure at `now`; `Some(n)`: warn now, `n` failures since the last warning
    /// (this one included).
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_WARNING_EVERY);
        if !due {
            return None;
        }
        self.last_warned = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: SharedMetrics) {
    let mut accept_warnings = AcceptWarnings::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Probes cannot reach us while this lasts: kubelet may restart the container.
                if let Some(failures) = accept_warnings.failed(Instant::now()) {
                    warn!(
                        %error,
                        failures,
                        "cannot accept connections on --listen (health probes and metrics \
                         scrapes fail meanwhile); retrying every 100 ms"
                    );
                }
                // Pause rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            {
                debug!(%peer, %error, "an HTTP request went unanswered");
            }
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &SharedMetrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            // The peer closed before a full head: answer what there is (a bare request line).
            break;
        }
        head.extend_from_slice(&buffer[..read]);
        if head.len() > MAX_REQUEST_BYTES {
            let too_large = Answer::text(431, "Request Header Fields Too Large", "");
            return stream.write_all(&too_large.to_bytes(false)).await;
        }
    }
    let head_only = head.starts_with(b"HEAD ");
    stream
        .write_all(&answer(&head, metrics).to_bytes(head_only))
        .await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(request: &str, metrics: &SharedMetrics) -> Answer {
        answer(request.as_bytes(), metrics)
    }

    #[test]
    fn healthz_is_always_ok() {
        let answer = ask(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            &SharedMetrics::default(),
        );
        assert_eq!(answer.status, 200);
    }

    #[test]
    fn readyz_follows_the_last_check() {
        let metrics = SharedMetrics::default();
        assert_eq!(ask("GET /readyz HTTP/1.1\r\n\r\n", &metrics).status, 503);
        metrics.lock().in_sync = true;
        assert_eq!(ask("GET /readyz HTTP/1.1\r\n\r\n", &metrics).status, 200);
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let answer = ask(
            "GET /metrics?x=1 HTTP/1.0\r\n\r\n",
            &SharedMetrics::default(),
        );
        assert_eq!(answer.status, 200);
        assert!(answer.content_type.contains("version=0.0.4"));
        assert!(answer.body.contains("port_sync_patches_total 0"));
    }

    #[test]
    fn other_requests_are_refused_politely() {
        let metrics = SharedMetrics::default();
        assert_eq!(ask("POST /metrics HTTP/1.1\r\n\r\n", &metrics).status, 405);
        assert_eq!(ask("GET / HTTP/1.1\r\n\r\n", &metrics).status, 404);
        assert_eq!(ask("hello\r\n\r\n", &metrics).status, 400);
        assert_eq!(ask("GET /healthz SPDY/3\r\n\r\n", &metrics).status, 400);
    }

    #[test]
    fn head_gets_no_body_but_the_length() {
        let bytes = Answer::text(200, "OK", "ok\n").to_bytes(true);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("content-length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accept_failures_warn_at_once_then_once_a_minute_with_the_count() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let mut warnings = AcceptWarnings::default();
        assert_eq!(warnings.failed(at(0)), Some(1));
        // Ten a second for a minute: silent, then one warning counting them all.
        for tick in 1..600 {
            assert_eq!(warnings.failed(at(tick * 100)), None, "tick {tick}");
        }
        assert_eq!(warnings.failed(at(60_000)), Some(600));
        assert_eq!(warnings.failed(at(60_100)), None);
    }

    #[tokio::test]
    async fn answers_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, SharedMetrics::default()));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
        server.abort();
    }

    async fn answer_over_socket(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }

    /// A head past 8 KiB (a header flood) gets 431 and the connection closed, as hyper's
    /// `max_buf_size(8 KiB)` would refuse it.
    #[tokio::test]
    async fn an_oversized_head_is_refused_with_431() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, SharedMetrics::default()));
        let mut request = b"GET /healthz HTTP/1.1\r\n".to_vec();
        while request.len() <= MAX_REQUEST_BYTES {
            request
                .extend_from_slice(b"x-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let response = answer_over_socket(address, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{response}"
        );
        server.abort();
    }

    /// Slowloris: many connections that send half a head and then nothing. Each is its own
    /// task, cut after REQUEST_TIMEOUT (hyper's `header_read_timeout`), so a probe that
    /// comes meanwhile is answered at once, and the slow ones are closed unanswered.
    #[tokio::test]
    async fn slow_clients_neither_block_a_probe_nor_stay_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, SharedMetrics::default()));
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
                .await
                .unwrap();
            slow.push(stream);
        }
        let probe = answer_over_socket(address, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(probe.starts_with("HTTP/1.1 200 OK\r\n"), "{probe}");
        tokio::time::pause();
        for mut stream in slow {
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "a half-sent head got an answer");
        }
        server.abort();
    }
}
