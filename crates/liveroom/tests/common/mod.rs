//! Shared helpers of the integration tests: an in-process server on 127.0.0.1:0, peers that
//! connect as a user, and ways to wait for (or rule out) frames with bounded timeouts.
//!
//! Every test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use bytes::{Buf, BufMut, BytesMut};
use liveroom::{App, Running, Server, ServerConfig};
use liveroom_client::Client;
#[allow(unused_imports)] // not every test binary builds its own app
pub use liveroom_testserver::{crud_apply, with_auth, Options, State};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test watches for something that should not happen (short, no grace involved).
pub const QUIET: Duration = Duration::from_millis(250);

/// A server configuration bound to a free port.
pub fn config() -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".into(),
        shutdown_timeout_ms: 2_000,
        ..ServerConfig::default()
    }
}

/// Starts `app` with [`config`].
pub async fn start<S: Clone + Send + Sync + 'static>(app: App<S>) -> Running {
    start_with(app, config()).await
}

/// Starts `app` with `config`.
pub async fn start_with<S: Clone + Send + Sync + 'static>(
    app: App<S>,
    config: ServerConfig,
) -> Running {
    Server::new(app)
        .config(config)
        .start()
        .await
        .expect("server starts")
}

/// `ws://<addr>/ws?<query>`.
pub fn url(server: &Running, query: &str) -> String {
    if query.is_empty() {
        format!("ws://{}/ws", server.addr())
    } else {
        format!("ws://{}/ws?{query}", server.addr())
    }
}

/// A connected client plus a buffer of the frames it received, so that waiting for one event
/// never loses the others. Batch frames (`{"type":"batch"}`) are flattened into their events.
///
/// Presence `count` events are kept aside (most tests are about joins and leaves): read them
/// with [`Peer::count`].
pub struct Peer {
    pub client: Client,
    buf: VecDeque<Value>,
    /// The newest `count` data per presence topic.
    counts: std::collections::HashMap<String, Value>,
    closed: Option<Option<u16>>,
}

impl std::ops::Deref for Peer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Peer {
    /// Connects with `caps:["batch"]`.
    pub async fn connect(server: &Running, query: &str) -> Peer {
        Self::connect_with(server, query, &[], true).await
    }

    /// Connects as the user `id` (named after it).
    pub async fn user(server: &Running, id: &str) -> Peer {
        Self::connect(server, &format!("user={id}")).await
    }

    /// Connects as a guest.
    pub async fn guest(server: &Running) -> Peer {
        Self::connect(server, "").await
    }

    /// Connects with extra headers and a choice of `caps`.
    pub async fn connect_with(
        server: &Running,
        query: &str,
        headers: &[(&str, &str)],
        batch: bool,
    ) -> Peer {
        let client = Client::connect_with(&url(server, query), headers, batch)
            .await
            .expect("connects");
        Peer::from(client)
    }

    /// Pulls one frame off the socket into the buffer. `false` on timeout or once closed.
    async fn pull(&mut self, deadline: Instant) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.client.next()).await else {
            return false;
        };
        if frame["type"] == "batch" {
            let events = frame["events"].as_array().expect("batch has events");
            assert!(events.len() >= 2, "a batch frame holds 2+ events: {frame}");
            for e in events {
                self.keep(e.clone());
            }
        } else if frame["type"] == "__closed" {
            self.closed = Some(frame["code"].as_u64().map(|c| c as u16));
        } else {
            self.keep(frame);
        }
        true
    }

    fn keep(&mut self, frame: Value) {
        if frame["event"] == "count" {
            if let Some(topic) = frame["topic"].as_str().filter(|t| t.ends_with(":presence")) {
                let newer = self
                    .counts
                    .get(topic)
                    .is_none_or(|c| c["version"].as_u64() <= frame["data"]["version"].as_u64());
                if newer {
                    self.counts.insert(topic.to_owned(), frame["data"].clone());
                }
                return;
            }
        }
        self.buf.push_back(frame);
    }

    /// Waits until the newest `count` of presence topic `topic` says `total`; panics with the
    /// last one seen after `timeout`.
    pub async fn count(&mut self, topic: &str, total: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.counts.get(topic).and_then(|c| c["total"].as_u64()) == Some(total) {
                return;
            }
            if !self.pull(deadline).await {
                panic!(
                    "count of `{topic}` is {:?}, not {total}, after {timeout:?}",
                    self.counts.get(topic)
                );
            }
        }
    }

    /// The next frame exactly as received (batch frames intact), or `None` on timeout.
    /// Use before any of the buffered helpers.
    pub async fn raw_frame(&mut self, timeout: Duration) -> Option<Value> {
        assert!(self.buf.is_empty(), "raw_frame with buffered frames");
        tokio::time::timeout(timeout, self.client.next())
            .await
            .ok()
            .flatten()
    }

    /// The first buffered or incoming frame matching `pred`, removed from the buffer.
    pub async fn find(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf.iter().skip(scanned).position(&pred) {
                return self.buf.remove(scanned + i).expect("index in range");
            }
            scanned = self.buf.len();
            if !self.pull(deadline).await {
                panic!(
                    "no {what} within {timeout:?} (closed: {:?}); other frames: {:?}",
                    self.closed, self.buf
                );
            }
        }
    }

    /// Waits for the event `event` on `topic` and returns its `data`.
    pub async fn event(&mut self, topic: &str, event: &str) -> Value {
        let what = format!("`{event}` on `{topic}`");
        let mut f = self
            .find(&what, WAIT, |f| f["topic"] == topic && f["event"] == event)
            .await;
        f["data"].take()
    }

    /// Waits (up to [`WAIT`]) until `n` frames on `topic` arrived and returns them in order.
    /// Follow with [`Peer::quiet`] to rule out more.
    pub async fn take(&mut self, topic: &str, n: usize) -> Vec<Value> {
        self.take_where(&format!("frame on `{topic}`"), n, |f| f["topic"] == topic)
            .await
    }

    /// Waits (up to [`WAIT`]) until `n` frames matching `pred` arrived and returns them in
    /// order; other frames stay buffered.
    pub async fn take_where(
        &mut self,
        what: &str,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("{what} ({} of {n})", got.len() + 1);
            got.push(self.find(&what, left, &pred).await);
        }
        got
    }

    /// Waits for a frame with `"type": ty` (acks, errors).
    pub async fn typed(&mut self, ty: &str) -> Value {
        self.find(&format!("`{ty}` frame"), WAIT, |f| f["type"] == ty)
            .await
    }

    /// Everything received on `topic` during `window` (including what was already buffered),
    /// in order. Other frames stay buffered.
    pub async fn collect(&mut self, topic: &str, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        while self.pull(deadline).await {}
        let (mine, rest): (Vec<Value>, Vec<Value>) =
            self.buf.drain(..).partition(|f| f["topic"] == topic);
        self.buf = rest.into();
        mine
    }

    /// Everything received during `window`, in order (the buffer is emptied).
    pub async fn collect_all(&mut self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        while self.pull(deadline).await {}
        self.buf.drain(..).collect()
    }

    /// Asserts nothing arrives on `topic` during `window`.
    pub async fn quiet(&mut self, topic: &str, window: Duration) {
        let got = self.collect(topic, window).await;
        assert!(got.is_empty(), "expected nothing on `{topic}`, got {got:?}");
    }

    /// Waits for the connection to close and returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        while self.closed.is_none() {
            if !self.pull(deadline).await && self.closed.is_none() {
                panic!("connection still open after {WAIT:?}");
            }
        }
        self.closed.flatten()
    }

    /// Closes the socket like a browser tab does (close 1001) and waits until the server
    /// answered, so the server has seen the close. (Dropping a `Client` does not close it.)
    pub async fn leave(mut self) {
        self.client.close(1001);
        self.close_code().await;
    }

    /// A good call still works on this connection.
    pub async fn assert_alive(&self) {
        let v = self
            .call("test/add", json!([2, 3]))
            .await
            .expect("connection still answers");
        assert_eq!(v, json!(5));
    }

    /// Sends a call with a fresh id and returns the raw reply body (`{"id","ok",...}`).
    pub async fn reply_to(&self, mut frame: Value) -> Value {
        let id = self.id();
        frame["id"] = id.clone().into();
        let rx = self.expect_reply(&id);
        self.send(&frame);
        self.reply(rx).await.expect("a reply")
    }

    /// Sends raw text that carries call id `id` and returns the reply body.
    pub async fn reply_to_text(&self, id: &str, text: &str) -> Value {
        let rx = self.expect_reply(id);
        self.send_text(text);
        self.reply(rx).await.expect("a reply")
    }
}

impl From<Client> for Peer {
    fn from(client: Client) -> Self {
        Peer {
            client,
            buf: VecDeque::new(),
            counts: std::collections::HashMap::new(),
            closed: None,
        }
    }
}

/// The sum of the samples of the process-wide metric series whose line starts with `series`
/// (a name, or a name with the start of its labels: `liveroom_rpc_total{path="test/add"`).
/// Every test binary is its own process; a binary that reads these runs its tests serially.
pub fn metric(series: &str) -> u64 {
    liveroom::metrics::handle()
        .render()
        .lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The code of an RPC error.
pub fn code_of(r: Result<Value, liveroom_client::Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.code().map(str::to_owned).unwrap_or_else(|| e.to_string()),
    }
}

/// A stream call frame.
pub fn stream_call(path: &str, args: Value) -> Value {
    json!({ "rpc": path, "args": args, "stream": true })
}

/// The loopback address clients use unless a test says otherwise.
pub const LOCALHOST: [u8; 4] = [127, 0, 0, 1];

/// A TCP connection to `server` from the loopback address `ip`: the whole 127.0.0.0/8 is
/// local on Linux, so tests can play several remote addresses.
pub async fn tcp_from(server: &Running, ip: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((ip, 0)))
        .expect("binds the loopback address");
    socket.connect(server.addr()).await.expect("connects")
}

/// One plain HTTP/1.1 GET: `(status, body)`.
pub async fn http_get(server: &Running, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(server.addr()).await.expect("connects");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.addr()
    );
    s.write_all(req.as_bytes()).await.expect("writes");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("reads");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A hand-rolled WebSocket client over a plain `TcpStream`: it reads only when asked to, and
/// can send frames no well-behaved client would.
pub struct RawWs {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// One server frame as [`RawWs`] reads it.
#[derive(Debug, PartialEq)]
pub enum RawFrame {
    Text(String),
    Close(Option<u16>),
    Other(u8),
}

impl RawWs {
    /// Opens `/ws` with `query` and completes the handshake (reading exactly the response head).
    pub async fn connect(server: &Running, query: &str) -> RawWs {
        Self::connect_from(server, query, LOCALHOST).await
    }

    /// [`RawWs::connect`] from the loopback address `ip` (`127.0.0.x`).
    pub async fn connect_from(server: &Running, query: &str, ip: [u8; 4]) -> RawWs {
        match Self::try_connect(tcp_from(server, ip).await, server, query).await {
            Ok(ws) => ws,
            Err(head) => panic!("handshake: {head}"),
        }
    }

    /// Sends the upgrade request on `stream`; the socket if it was upgraded (101), else the
    /// response head.
    pub async fn try_connect(
        mut stream: TcpStream,
        server: &Running,
        query: &str,
    ) -> Result<RawWs, String> {
        let path = if query.is_empty() {
            "/ws".to_owned()
        } else {
            format!("/ws?{query}")
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr()
        );
        stream.write_all(req.as_bytes()).await.expect("writes");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(WAIT, stream.read(&mut b))
                .await
                .expect("handshake in time")
                .unwrap_or(0);
            if n == 0 {
                return Err(String::from_utf8_lossy(&head).into_owned());
            }
            head.push(b[0]);
        }
        let head = String::from_utf8(head).expect("ascii head");
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key: {head}"
        );
        Ok(RawWs {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Sends one masked frame with the given first byte (FIN + opcode) and payload.
    pub async fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        out.put_u8(b0);
        let len = payload.len();
        if len < 126 {
            out.put_u8(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            out.put_u8(0x80 | 126);
            out.put_u16(len as u16);
        } else {
            out.put_u8(0x80 | 127);
            out.put_u64(len as u64);
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        out.put_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.stream.write_all(&out).await.expect("writes");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes()).await;
    }

    /// Reads the next frame, or `None` on EOF/reset or timeout.
    /// The server's `welcome` (the first frame of every connection) is skipped.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.parse() {
                Some(RawFrame::Text(t)) if t.starts_with(r#"{"type":"welcome""#) => continue,
                Some(f) => return Some(f),
                None => {}
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    fn parse(&mut self) -> Option<RawFrame> {
        if self.buf.len() < 2 {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, header) = match b1 & 0x7f {
            126 if self.buf.len() >= 4 => {
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 if self.buf.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if self.buf.len() < header + len {
            return None;
        }
        self.buf.advance(header);
        let payload = self.buf.split_to(len);
        Some(match b0 & 0x0f {
            1 => RawFrame::Text(String::from_utf8(payload.to_vec()).expect("utf-8 text")),
            8 => RawFrame::Close((len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            op => RawFrame::Other(op),
        })
    }

    /// Reads frames until a close frame and returns its code; `None` if the connection ended
    /// (or the time ran out) without one. Text frames read on the way are counted.
    pub async fn until_close(&mut self, timeout: Duration) -> (Option<u16>, usize) {
        let deadline = Instant::now() + timeout;
        let mut texts = 0;
        loop {
            match self.read_frame(deadline - Instant::now()).await {
                Some(RawFrame::Close(code)) => return (code, texts),
                Some(RawFrame::Text(_)) => texts += 1,
                Some(RawFrame::Other(_)) => {}
                None => return (None, texts),
            }
        }
    }
}

/// The shared test app (`liveroom-testserver`'s) with the default 5 s leave grace.
pub fn test_app() -> (App<Arc<State>>, Arc<State>) {
    test_app_with(Duration::from_secs(5))
}

/// The shared test app with a leave grace of `grace`.
pub fn test_app_with(grace: Duration) -> (App<Arc<State>>, Arc<State>) {
    liveroom_testserver::app(&Options {
        grace,
        ..Options::default()
    })
}

/// Starts the shared test app (5 s leave grace).
pub async fn serve() -> (Running, Arc<State>) {
    serve_with(Duration::from_secs(5)).await
}

/// Starts the shared test app with a leave grace of `grace`.
pub async fn serve_with(grace: Duration) -> (Running, Arc<State>) {
    let (app, state) = test_app_with(grace);
    (start(app).await, state)
}

/// [`config`] with an outbox limit of `bytes`.
pub fn config_with_outbox(bytes: usize) -> ServerConfig {
    ServerConfig {
        limits: liveroom::Limits {
            outbox_bytes: bytes,
            ..liveroom::Limits::default()
        },
        ..config()
    }
}

/// The three stream replies of a room page.
#[derive(Debug)]
pub struct Entered {
    pub data: Value,
    pub presence: Value,
    pub cursors: Value,
}

impl Entered {
    /// The keys in the presence roster, sorted.
    pub fn roster_keys(&self) -> Vec<String> {
        keys(&self.presence["data"])
    }
}

/// The `key`s of a roster or cursor list, sorted.
pub fn keys(list: &Value) -> Vec<String> {
    let mut k: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|e| e["key"].as_str().expect("a key").to_owned())
        .collect();
    k.sort();
    k
}

/// Opens a board page as the client does: one batch with `__data`, `__presence` and
/// `__cursors` for `board`. Panics unless all three succeed.
pub async fn enter_board(p: &Peer, board: &str) -> Entered {
    let replies = try_enter(p, "collab/board", json!([board])).await;
    for r in &replies {
        assert_eq!(r["ok"], true, "entering {board}: {r}");
    }
    let mut it = replies.into_iter();
    Entered {
        data: it.next().unwrap(),
        presence: it.next().unwrap(),
        cursors: it.next().unwrap(),
    }
}

/// The batch of a room page for `room` (`module/name`) with `args`; the three reply bodies in
/// the order data, presence, cursors (entries for parts the room lacks are errors).
pub async fn try_enter(p: &Peer, room: &str, args: Value) -> Vec<Value> {
    let ids = [p.id(), p.id(), p.id()];
    let calls = ["__data", "__presence", "__cursors"]
        .iter()
        .zip(&ids)
        .map(|(part, id)| json!({"rpc": format!("{room}/{part}"), "id": id, "args": args, "stream": true}))
        .collect();
    let replies = p.batch(calls).await.expect("batch reply");
    ids.iter()
        .map(|id| {
            replies
                .iter()
                .find(|r| r["id"] == *id)
                .cloned()
                .expect("an entry per call")
        })
        .collect()
}

/// A presence-only subscriber of a board (an observer, not a member).
pub async fn observe_board(server: &Running, board: &str) -> Peer {
    let p = Peer::user(server, "observer").await;
    let r = p
        .stream("collab/board/__presence", json!([board]))
        .await
        .expect("observer subscribes");
    assert_eq!(r.topic, format!("board:{board}:presence"));
    p
}
