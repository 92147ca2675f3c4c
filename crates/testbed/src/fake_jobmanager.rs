//! A stand-in for a Flink JobManager's REST API that answers `GET /jobmanager/config` however
//! a test says: the real answer's shape with chosen ports, or something broken (a missing key,
//! a port that is not a number, an HTML error page, a huge body, no answer at all). Real Flink
//! is used wherever a test can use it; this is for the answers real Flink never gives on cue.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the fake answers to every request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(String),
    /// This status with this body and content type.
    Status {
        code: u16,
        content_type: &'static str,
        body: String,
    },
    /// 200 with a body of this many bytes (a JSON array that never ends in time).
    Huge(usize),
    /// Reads the request and never answers.
    Silent,
}

impl Answer {
    /// The real answer's shape, as Flink 2.3 gives it, with these ports.
    pub fn ports(rpc: u16, blob: u16) -> Answer {
        Answer::Json(config_json(&[
            ("jobmanager.rpc.port", &rpc.to_string()),
            ("blob.server.port", &blob.to_string()),
        ]))
    }
}

/// A `/jobmanager/config` body with these keys, plus a few real keys around them.
pub fn config_json(entries: &[(&str, &str)]) -> String {
    let mut items: Vec<String> = vec![
        r#"{"key":"high-availability.type","value":"zookeeper"}"#.into(),
        r#"{"key":"jobmanager.rpc.address","value":"flink-jobmanager"}"#.into(),
    ];
    for (key, value) in entries {
        items.push(format!(r#"{{"key":"{key}","value":"{value}"}}"#));
    }
    items.push(r#"{"key":"rest.port","value":"8081"}"#.into());
    format!("[{}]", items.join(","))
}

pub struct FakeJobManager {
    address: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeJobManager {
    pub fn start(answer: Answer) -> FakeJobManager {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 works");
        listener
            .set_nonblocking(true)
            .expect("a listener can be made non-blocking");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answer, requests, stop) = (answer.clone(), requests.clone(), stop.clone());
            thread::spawn(move || serve(&listener, &answer, &requests, &stop))
        };
        FakeJobManager {
            address,
            answer,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }

    /// Requests answered or held so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeJobManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: &TcpListener,
    answer: &Mutex<Answer>,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut stream, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(2));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        if !read_request_head(&stream) {
            continue;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let current = answer.lock().map(|a| a.clone()).unwrap_or(Answer::Silent);
        match current {
            Answer::Silent => held.push(stream),
            Answer::Json(body) => respond(&mut stream, 200, "application/json", body.as_bytes()),
            Answer::Status {
                code,
                content_type,
                body,
            } => respond(&mut stream, code, content_type, body.as_bytes()),
            Answer::Huge(size) => {
                let mut body = vec![b' '; size];
                body[0] = b'[';
                respond(&mut stream, 200, "application/json", &body);
            }
        }
    }
}

/// Reads up to the blank line that ends the request head; false if the client went away.
fn read_request_head(stream: &TcpStream) -> bool {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line == "\r\n" || line == "\n" => return true,
            Ok(_) => {}
        }
    }
}

fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {code} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}
