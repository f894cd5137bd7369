//! The accept loop, before any HTTP: the connection caps (in total and per remote address),
//! then hyper's HTTP/1 with a header-read timeout and a head-size limit, upgrades on, and the
//! graceful stop of connections that are still HTTP.

use super::shared::{stopped, Refused, Shared, Signal, Slot};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

impl Refused {
    /// The whole answer: nothing of the request was read, and the socket closes after it.
    fn response(self) -> &'static [u8] {
        match self {
            Refused::Total => b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            Refused::PerAddress => b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 5\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_address",
        }
    }
}

/// Accepts until `stop`, then lets the HTTP connections finish (those that became WebSockets
/// are closed by their own tasks).
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Signal>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => match Slot::admit(&shared, remote.ip()) {
                    Ok(slot) => {
                        conns.spawn(serve_http(tcp, remote, slot, router.clone(), stop.clone()));
                    }
                    Err(refused) => refuse(tcp, refused),
                },
                Err(e) => {
                    // Out of file descriptors, typically: let some close instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

fn refuse(tcp: TcpStream, refused: Refused) {
    metrics::counter!("liveroom_refused_connections_total", "reason" => refused.label())
        .increment(1);
    // Best effort and never waiting: a full socket buffer just gets the close.
    let _ = tcp.try_write(refused.response());
}

async fn serve_http(
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Arc<Slot>,
    router: Router,
    mut stop: watch::Receiver<Signal>,
) {
    let config = &slot.shared.config;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .max_buf_size(config.max_head_bytes as usize)
        .header_read_timeout(
            (config.header_timeout_ms > 0).then(|| Duration::from_millis(config.header_timeout_ms)),
        );
    let service = {
        let slot = slot.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            req.extensions_mut().insert(slot.clone());
            router.clone().oneshot(req.map(Body::new))
        })
    };
    let conn = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    drop(slot);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                metrics::counter!("liveroom_http_errors_total").increment(1);
                tracing::debug!(error = %e, %remote, "HTTP connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
