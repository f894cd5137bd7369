//! The "raw limit" baseline server: no protocol, no JSON. Every published payload is framed
//! once into shared `Bytes` and handed to one coalescing writer per connection, which drains all
//! queued frames and writes them with a single syscall.
//!
//! An idle connection holds what liveroom's does and no more: its two tasks, an empty queue
//! (nothing allocated until a frame comes) and no read buffer while it waits (one is taken when
//! bytes arrive and dropped once they are decoded).
//!
//! Roles (query `role=`): `sub` (default) receives the broadcasts of its room (query `room=`,
//! default empty); `pub` and `idle` receive none. Client text frames: `P<room>|<payload>`
//! broadcasts `<payload>` to the room's subscribers and acks the sender with the frame `A`;
//! `E<payload>` echoes `<payload>` back to the sender; anything else is ignored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use liveroom::ws::{self, Message, Opcode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// A room's subscribers: connection id and queue.
type Subscribers = Vec<(u64, Arc<Queue>)>;

#[derive(Default)]
struct Hub {
    /// Subscribers by room.
    rooms: RwLock<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
}

/// A connection's outbound frames. Unlike a channel it allocates nothing until a frame is
/// queued (a tokio channel allocates a block of 32 slots, 1 KiB, when it is made).
#[derive(Default)]
struct Queue {
    /// The frames queued; an empty one ends the writer.
    frames: Mutex<Vec<Bytes>>,
    ready: Notify,
}

impl Queue {
    fn send(&self, frame: Bytes) {
        self.frames.lock().unwrap().push(frame);
        self.ready.notify_one();
    }

    /// Waits for frames and swaps them into `out` (empty on entry).
    async fn take(&self, out: &mut Vec<Bytes>) {
        loop {
            {
                let mut q = self.frames.lock().unwrap();
                if !q.is_empty() {
                    std::mem::swap(&mut *q, out);
                    return;
                }
            }
            self.ready.notified().await;
        }
    }
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
    let Some((accept, role_sub, room)) = handshake(&mut sock).await? else {
        return Ok(());
    };
    let tx = Arc::new(Queue::default());
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    // Registered before the handshake answer: once the client sees 101 it is subscribed.
    if role_sub {
        let mut rooms = hub.rooms.write().unwrap();
        rooms
            .entry(room.clone())
            .or_default()
            .push((id, tx.clone()));
    }
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let res = async {
        sock.write_all(resp.as_bytes()).await?;
        let (mut rd, wr) = sock.into_split();
        let writer = tokio::spawn(writer(wr, tx.clone()));
        let r = read_loop(&hub, &mut rd, &tx).await;
        tx.send(Bytes::new()); // ends the writer
        let _ = writer.await;
        r
    }
    .await;
    if role_sub {
        let mut rooms = hub.rooms.write().unwrap();
        if let Some(subs) = rooms.get_mut(&room) {
            subs.retain(|(i, _)| *i != id);
            if subs.is_empty() {
                rooms.remove(&room);
            }
        }
    }
    res
}

/// Reads the upgrade request: its accept key, whether it subscribes, and its room; `None` (after
/// answering 400 where there is someone to answer) if it is not a WebSocket upgrade. Clients
/// send nothing before the 101, so the head is all there is to read.
async fn handshake(sock: &mut TcpStream) -> Result<Option<(String, bool, String)>> {
    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 16 * 1024 || sock.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let Some(key) = header(&head, "sec-websocket-key") else {
        sock.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(None);
    };
    let role_sub = !(path.contains("role=pub") || path.contains("role=idle"));
    let room = query(path, "room").unwrap_or_default().to_string();
    Ok(Some((derive_accept_key(key.as_bytes()), role_sub, room)))
}

/// Coalescing writer: waits for at least one frame, takes everything queued, one write. An
/// empty frame is the end.
async fn writer(mut wr: OwnedWriteHalf, queue: Arc<Queue>) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut out = BytesMut::new();
    loop {
        queue.take(&mut batch).await;
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

async fn read_loop(hub: &Hub, rd: &mut tokio::net::tcp::OwnedReadHalf, tx: &Queue) -> Result<()> {
    // The same RFC 6455 decoder liveroom uses: the baseline differs only in what it does with
    // a message.
    let mut decoder = ws::Decoder::new(16 << 20);
    let mut buf = BytesMut::new();
    loop {
        // Wait for bytes without a buffer, as liveroom's reader does.
        rd.readable().await?;
        buf.reserve(4096);
        match rd.try_read_buf(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        while let Some(message) = decoder
            .decode(&mut buf)
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            match message {
                Message::Text(text) => command(hub, text.as_bytes(), tx),
                Message::Binary(data) => command(hub, &data, tx),
                Message::Ping(payload) => tx.send(frame(Opcode::Pong, &payload)),
                Message::Close(code) => {
                    let code = code.unwrap_or(liveroom::close::NORMAL);
                    tx.send(frame(Opcode::Close, &code.to_be_bytes()));
                    return Ok(());
                }
                Message::Pong => {}
            }
        }
        if buf.is_empty() {
            buf = BytesMut::new();
        }
    }
}

/// The value of `name` in the query of `path`.
fn query<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, q) = path.split_once('?')?;
    q.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

/// The ack frame `A`, framed once.
fn ack() -> Bytes {
    static ACK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    ACK.get_or_init(|| frame(Opcode::Text, b"A")).clone()
}

/// `P<room>|<payload>` broadcasts and acks, `E<payload>` echoes, anything else is ignored.
fn command(hub: &Hub, payload: &[u8], tx: &Queue) {
    match payload.first() {
        Some(b'P') => {
            let rest = &payload[1..];
            let (room, body) = match rest.iter().position(|b| *b == b'|') {
                Some(bar) => (&rest[..bar], &rest[bar + 1..]),
                None => (&b""[..], rest),
            };
            let f = frame(Opcode::Text, body);
            let rooms = hub.rooms.read().unwrap();
            let subs = std::str::from_utf8(room).ok().and_then(|r| rooms.get(r));
            for (_, s) in subs.into_iter().flatten() {
                s.send(f.clone());
            }
            tx.send(ack());
        }
        Some(b'E') => tx.send(frame(Opcode::Text, &payload[1..])),
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
        crate::fanout::assert_small_run_delivers(t).await;
    }

    #[tokio::test]
    async fn a_publication_reaches_its_room_only() {
        let t = start().await;
        let mut a = crate::ws::connect(t.addr, "/?room=x", None, false)
            .await
            .unwrap();
        let mut b = crate::ws::connect(t.addr, "/?room=y", None, false)
            .await
            .unwrap();
        let mut p = crate::ws::connect(t.addr, "/?role=pub", None, false)
            .await
            .unwrap();
        let wait = std::time::Duration::from_secs(5);
        for msg in ["Px|first", "Py|second"] {
            crate::ws::send_text(&mut p, msg.into()).await.unwrap();
            let ack = crate::ws::next_payload_timeout(&mut p, wait).await.unwrap();
            assert_eq!(&ack[..], b"A");
        }
        let got = crate::ws::next_payload_timeout(&mut a, wait).await.unwrap();
        assert_eq!(&got[..], b"first");
        // Room y's first frame is its own publication: room x's did not reach it.
        let got = crate::ws::next_payload_timeout(&mut b, wait).await.unwrap();
        assert_eq!(&got[..], b"second");
    }

    #[tokio::test]
    async fn rpc_against_raw_server_answers_every_call() {
        let t = start().await;
        crate::rpc::assert_small_run_answers(t).await;
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
