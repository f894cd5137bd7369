//! The "raw limit" baseline server: no protocol, no JSON. Every published payload is framed
//! once into shared `Bytes` and handed to one coalescing writer per connection, which drains all
//! queued frames and writes them with a single syscall.
//!
//! Roles (query `role=`): `sub` (default) receives every broadcast; `pub` and `idle` do not.
//! Client text frames: `P<payload>` broadcasts `<payload>` to all subscribers and acks the sender
//! with the frame `A`; `E<payload>` echoes `<payload>` back to the sender; anything else is ignored.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Result;
use bytes::{Buf, Bytes, BytesMut};
use liveroom::ws::{self, Message, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(Default)]
struct Hub {
    subs: RwLock<Vec<(u64, UnboundedSender<Bytes>)>>,
    next_id: AtomicU64,
}

/// One unmasked server frame around `payload`, in liveroom's codec.
pub fn frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 10);
    ws::encode(&mut b, opcode, payload);
    b.freeze()
}

pub async fn run(bind: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(bind).await?;
    println!("LISTENING http://{}", listener.local_addr()?);
    serve(listener).await
}

/// Serves connections from `listener` forever.
pub async fn serve(listener: TcpListener) -> Result<()> {
    let hub = Arc::new(Hub::default());
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have.
                eprintln!("raw-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = conn(hub, sock).await;
        });
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn conn(hub: Arc<Hub>, mut sock: TcpStream) -> Result<()> {
    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 16 * 1024 || sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.advance(head_end + 4);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let Some(key) = header(&head, "sec-websocket-key") else {
        sock.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let accept = derive_accept_key(key.as_bytes());
    let role_sub = !(path.contains("role=pub") || path.contains("role=idle"));

    let (tx, rx) = unbounded_channel::<Bytes>();
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    // Registered before the handshake answer: once the client sees 101 it is subscribed.
    if role_sub {
        hub.subs.write().unwrap().push((id, tx.clone()));
    }
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let res = async {
        sock.write_all(resp.as_bytes()).await?;
        let (mut rd, wr) = sock.into_split();
        let writer = tokio::spawn(writer(wr, rx));
        let ack = frame(Opcode::Text, b"A");
        let r = read_loop(&hub, &mut rd, &mut buf, &tx, &ack).await;
        drop(tx);
        let _ = writer.await;
        r
    }
    .await;
    if role_sub {
        hub.subs.write().unwrap().retain(|(i, _)| *i != id);
    }
    res
}

/// Coalescing writer: waits for at least one frame, drains everything queued, one write.
async fn writer(mut wr: OwnedWriteHalf, mut rx: UnboundedReceiver<Bytes>) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(64);
    let mut out = BytesMut::new();
    while rx.recv_many(&mut batch, 4096).await > 0 {
        let close = batch.iter().any(|b| b.is_empty());
        let res = if batch.len() == 1 {
            wr.write_all(&batch[0]).await
        } else {
            for b in batch.drain(..) {
                out.extend_from_slice(&b);
            }
            let r = wr.write_all(&out).await;
            out.clear();
            if out.capacity() > 1 << 20 {
                out = BytesMut::new();
            }
            r
        };
        batch.clear();
        if res.is_err() || close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(
    hub: &Hub,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    tx: &UnboundedSender<Bytes>,
    ack: &Bytes,
) -> Result<()> {
    // The same RFC 6455 decoder liveroom uses: the baseline differs only in what it does with
    // a message.
    let mut decoder = ws::Decoder::new(16 << 20);
    loop {
        while let Some(message) = decoder.decode(buf).map_err(|e| anyhow::anyhow!("{e}"))? {
            match message {
                Message::Text(text) => command(hub, text.as_bytes(), tx, ack),
                Message::Binary(data) => command(hub, &data, tx, ack),
                Message::Ping(payload) => {
                    let _ = tx.send(frame(Opcode::Pong, &payload));
                }
                Message::Close(code) => {
                    let code = code.unwrap_or(liveroom::close::NORMAL);
                    let _ = tx.send(frame(Opcode::Close, &code.to_be_bytes()));
                    let _ = tx.send(Bytes::new()); // close marker
                    return Ok(());
                }
                Message::Pong => {}
            }
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(());
        }
    }
}

/// `P<payload>` broadcasts and acks, `E<payload>` echoes, anything else is ignored.
fn command(hub: &Hub, payload: &[u8], tx: &UnboundedSender<Bytes>, ack: &Bytes) {
    match payload.first() {
        Some(b'P') => {
            let f = frame(Opcode::Text, &payload[1..]);
            for (_, s) in hub.subs.read().unwrap().iter() {
                let _ = s.send(f.clone());
            }
            let _ = tx.send(ack.clone());
        }
        Some(b'E') => {
            let _ = tx.send(frame(Opcode::Text, &payload[1..]));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::{Kind, Target};

    async fn start() -> Target {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve(l));
        Target {
            kind: Kind::Raw,
            addr,
            pid: None,
        }
    }

    #[tokio::test]
    async fn fanout_against_raw_server_delivers_everything() {
        let t = start().await;
        let o = crate::fanout::Opts {
            subs: 10,
            pubs: 2,
            duration: 0.3,
            warmup: 0.1,
            window: 8,
            via: crate::fanout::Via::Action,
            sources: 2,
            rooms: 1,
            watch: Vec::new(),
            watch_servers: Vec::new(),
        };
        let m = crate::fanout::run(&[t], &[t], &o).await.unwrap();
        assert!(m.get("delivered_per_s").unwrap() > 0.0);
        assert_eq!(m.get("lost"), Some(0.0));
        assert_eq!(m.get("errors"), Some(0.0));
    }

    #[tokio::test]
    async fn rpc_against_raw_server_answers_every_call() {
        let t = start().await;
        let o = crate::rpc::Opts {
            concurrency: 2,
            rate: 200,
            rate_conns: 2,
            duration: 0.3,
            warmup: 0.1,
        };
        let m = crate::rpc::run(t, &o).await.unwrap();
        assert!(m.get("closed_per_s").unwrap() > 0.0);
        assert_eq!(m.get("rate_missing"), Some(0.0));
    }

    #[tokio::test]
    async fn idle_needs_a_pid_and_refuses_non_loopback() {
        let t = start().await;
        assert!(crate::idle::run(t, &idle_opts()).await.is_err());
        let far: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert!(crate::ws::connect(far, "/", None, false).await.is_err());
    }

    fn idle_opts() -> crate::idle::Opts {
        crate::idle::Opts {
            conns: 1,
            batch: 1,
            sources: 1,
            settle: 0.0,
            subscribed: false,
        }
    }
}
