//! The listening socket and its connections: TLS, HTTP/1.1, and going down on request
//! (refusing connections and cutting the open ones, watches included) and back up on the
//! same port, as an API server restart looks to its clients.

use super::faults::ListenerCommand;
use super::http::{self, Shared};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

/// Binds with SO_REUSEADDR: after going down, the server closed its connections first, and
/// their TIME_WAIT must not keep it from listening on the same port again.
pub(crate) fn bind(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

pub(crate) struct Listening {
    pub listener: std::net::TcpListener,
    pub acceptor: TlsAcceptor,
    pub shared: Arc<Shared>,
    pub commands: mpsc::UnboundedReceiver<ListenerCommand>,
    pub shutdown: watch::Receiver<bool>,
}

/// Serves until shutdown; returns when asked to stop.
pub(crate) async fn serve(listening: Listening) -> io::Result<()> {
    let Listening {
        listener,
        acceptor,
        shared,
        mut commands,
        mut shutdown,
    } = listening;
    let address = listener.local_addr()?;
    let mut listener = TcpListener::from_std(listener)?;
    loop {
        // Every connection of this listening period watches `cut`.
        let (cut, _) = watch::channel(false);
        let command = loop {
            tokio::select! {
                accepted = listener.accept() => {
                    // A failed accept (say, out of descriptors) drops that one connection only.
                    if let Ok((stream, _)) = accepted {
                        tokio::spawn(connection(stream, acceptor.clone(), Arc::clone(&shared), cut.subscribe()));
                    }
                }
                command = commands.recv() => break command,
                _ = shutdown.changed() => break None,
            }
        };
        drop(listener);
        let _ = cut.send(true);
        let Some(ListenerCommand::Down { duration, ack }) = command else {
            return Ok(());
        };
        let _ = ack.send(());
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        listener = loop {
            match bind(address).and_then(TcpListener::from_std) {
                Ok(listener) => break listener,
                // Someone else may hold the port for a moment; try again shortly.
                Err(_) => tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = shutdown.changed() => return Ok(()),
                },
            }
        };
    }
}

async fn connection(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut cut: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let tls = tokio::select! {
        accepted = acceptor.accept(stream) => match accepted {
            Ok(tls) => tls,
            // A client that does not trust our CA ends here; nothing to answer.
            Err(_) => return,
        },
        _ = cut.wait_for(|cut| *cut) => return,
    };
    let service = service_fn(move |request| http::handle(request, Arc::clone(&shared)));
    let serving = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = serving => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}
