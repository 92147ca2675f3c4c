//! TCP servers that misbehave on purpose, standing where a ZooKeeper server should: they accept
//! and never answer, answer garbage or megabytes, or reset the connection. Each serves on its
//! own thread until dropped.

use socket2::SockRef;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Accepts and holds the connection open without a byte.
    Silent,
    /// Reads the request, answers these bytes, and closes.
    Answer(Vec<u8>),
    /// Reads the 4-byte request and answers what the list gives for it (nothing if absent).
    AnswerByRequest(Vec<(Vec<u8>, Vec<u8>)>),
    /// Answers this many bytes of filler, as fast as the peer reads.
    Flood(usize),
    /// Accepts, then resets the connection (RST, no FIN).
    Reset,
}

pub struct FakePeer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FakePeer {
    pub fn start(behaviour: Behaviour) -> FakePeer {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 works");
        listener
            .set_nonblocking(true)
            .expect("a listener can be made non-blocking");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = stop.clone();
            let accepted = accepted.clone();
            thread::spawn(move || serve(listener, behaviour, &stop, &accepted))
        };
        FakePeer {
            address,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many connections it has accepted: proof a client really came.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, behaviour: Behaviour, stop: &AtomicBool, accepted: &AtomicUsize) {
    // Silent connections are held here until the peer is dropped.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nonblocking(false);
        match &behaviour {
            Behaviour::Silent => held.push(stream),
            Behaviour::Reset => {
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            }
            Behaviour::Answer(bytes) => {
                let bytes = bytes.clone();
                workers.push(thread::spawn(move || answer(stream, &bytes)));
            }
            Behaviour::AnswerByRequest(answers) => {
                let answers = answers.clone();
                workers.push(thread::spawn(move || answer_by_request(stream, &answers)));
            }
            Behaviour::Flood(size) => {
                let size = *size;
                workers.push(thread::spawn(move || flood(stream, size)));
            }
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
}

fn read_request(stream: &mut TcpStream) -> [u8; 4] {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = [0u8; 4];
    let _ = stream.read_exact(&mut request);
    request
}

fn answer_by_request(mut stream: TcpStream, answers: &[(Vec<u8>, Vec<u8>)]) {
    let request = read_request(&mut stream);
    if let Some((_, bytes)) = answers.iter().find(|(asked, _)| asked[..] == request[..]) {
        let _ = stream.write_all(bytes);
    }
}

fn answer(mut stream: TcpStream, bytes: &[u8]) {
    read_request(&mut stream);
    let _ = stream.write_all(bytes);
}

fn flood(mut stream: TcpStream, size: usize) {
    read_request(&mut stream);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let chunk = vec![b'z'; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            return;
        }
        sent += n;
    }
}
