//! A TCP proxy on a free loopback port that a test can cut and restore, to partition one replica
//! from Redis while the others keep their connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwards both ways.
    Open,
    /// An asymmetric partition: requests still reach the server, its answers are dropped (the
    /// client times out on commands that did run).
    RepliesLost,
    /// Every connection is closed, and new ones are closed at once.
    Cut,
}

/// The proxy; it stops (closing everything) on drop.
pub struct Proxy {
    pub port: u16,
    link: Arc<watch::Sender<Link>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Proxies 127.0.0.1:`port` (a free one) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let link = Arc::new(watch::channel(Link::Open).0);
        let rx = link.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *rx.borrow() == Link::Cut {
                    continue; // dropped: closed at once
                }
                let rx = rx.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(server)) =
                        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream))
                            .await
                    {
                        splice(client, server, rx).await;
                    }
                });
            }
        });
        Proxy { port, link, task }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Switches what the proxy does from now on.
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.link.send_replace(Link::Cut);
    }
}

/// Forwards between `client` and `server` until either side closes or the link is cut.
async fn splice(client: TcpStream, server: TcpStream, link: watch::Receiver<Link>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, link.clone(), false);
    let down = pump(sr, cw, link, true);
    tokio::select! { _ = up => {}, _ = down => {} }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
    replies: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match *link.borrow() {
                    Link::Cut => return,
                    Link::RepliesLost if replies => continue,
                    _ => {}
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = link.changed() => {
                if changed.is_err() || *link.borrow() == Link::Cut {
                    return;
                }
            }
        }
    }
}
