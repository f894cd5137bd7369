//! An async Rust client for liveroom servers, speaking the svelte-realtime 0.5 wire protocol.
//!
//! It keeps the protocol visible: [`Client::call`] and [`Client::stream`] match replies by id,
//! and every other frame (events, acks, `{"type":"batch"}` frames, errors) arrives unchanged
//! through [`Client::next`], so tests and load generators see exactly what the server sent.
//!
//! ```no_run
//! # async fn run() -> Result<(), liveroom_client::Error> {
//! use liveroom_client::Client;
//! use serde_json::json;
//!
//! let mut client = Client::connect("ws://127.0.0.1:3000/ws").await?;
//! let sum = client.call("math/add", json!([1, 2])).await?;
//! let items = client.stream("test/items", json!([])).await?;
//! println!("{sum} then {} on {}", items.data, items.topic);
//! while let Some(frame) = client.next().await {
//!     println!("{frame}");
//! }
//! # Ok(()) }
//! ```

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server answered with an error.
    #[error("{code}: {message}")]
    Rpc {
        /// Error code, e.g. `FORBIDDEN`.
        code: String,
        /// Message.
        message: String,
        /// Validation issues, if any.
        issues: Option<Value>,
    },
    /// The connection closed before the reply arrived (with the close code if known).
    #[error("connection closed ({0:?})")]
    Closed(Option<u16>),
    /// No reply within the timeout.
    #[error("timed out")]
    Timeout,
}

impl Error {
    /// The RPC error code, if this is an RPC error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Rpc { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The reply to a stream subscription.
#[derive(Debug, Clone)]
pub struct StreamReply {
    /// Initial data.
    pub data: Value,
    /// The topic live events arrive on.
    pub topic: String,
    /// Merge mode.
    pub merge: String,
    /// The whole reply object (`key`, `max`, ...).
    pub raw: Value,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// What a client needs to resume after its connection is lost: the server's `welcome` id and
/// the newest seq seen per topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    /// The `welcome` session id of the lost connection.
    pub session: Option<String>,
    /// The newest seq seen per topic.
    pub last_seen: HashMap<String, u64>,
}

impl Resume {
    fn saw(&mut self, envelope: &Value) {
        if let (Some(topic), Some(seq)) = (envelope["topic"].as_str(), envelope["seq"].as_u64()) {
            let last = self.last_seen.entry(topic.to_owned()).or_default();
            *last = (*last).max(seq);
        }
    }

    /// The `resume` frame, if there is anything to resume.
    pub fn frame(&self) -> Option<Value> {
        let session = self.session.as_ref()?;
        (!self.last_seen.is_empty()).then(
            || json!({ "type": "resume", "sessionId": session, "lastSeenSeqs": self.last_seen }),
        )
    }
}

/// A connection to a liveroom server.
pub struct Client {
    out: mpsc::UnboundedSender<Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    /// Frames [`Client::event_on`] skipped over, handed out by [`Client::next`] first.
    backlog: std::collections::VecDeque<Value>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<Mutex<Option<Option<u16>>>>,
    resume: Arc<Mutex<Resume>>,
    degraded: Arc<AtomicBool>,
    timeout: Duration,
}

impl Client {
    /// Connects and sends `hello` with `caps:["batch"]`.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Self::connect_with(url, &[], true).await
    }

    /// Connects with extra request headers (e.g. `Cookie`, `Origin`); `batch` chooses the
    /// `caps` sent in `hello`.
    pub async fn connect_with(
        url: &str,
        headers: &[(&str, &str)],
        batch: bool,
    ) -> Result<Client, Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| {
                        Error::Ws(tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))
                    })?,
                v.parse().map_err(
                    |e: tokio_tungstenite::tungstenite::http::header::InvalidHeaderValue| {
                        Error::Ws(tokio_tungstenite::tungstenite::Error::HttpFormat(e.into()))
                    },
                )?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let closed: Arc<Mutex<Option<Option<u16>>>> = Arc::default();
        let resume: Arc<Mutex<Resume>> = Arc::default();
        let degraded: Arc<AtomicBool> = Arc::default();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        let (p, c, r, d) = (
            pending.clone(),
            closed.clone(),
            resume.clone(),
            degraded.clone(),
        );
        tokio::spawn(async move {
            let mut code = None;
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let Ok(v) = serde_json::from_str::<Value>(&t) else {
                            continue;
                        };
                        route(&p, &r, &d, &frames_tx, v);
                    }
                    Ok(Message::Close(f)) => {
                        code = f.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            *c.lock().unwrap() = Some(code);
            let _ = frames_tx.send(json!({ "type": "__closed", "code": code }));
            p.lock().unwrap().clear();
        });
        let client = Client {
            out,
            frames,
            backlog: Default::default(),
            pending,
            next_id: AtomicU64::new(1),
            closed,
            resume,
            degraded,
            timeout: Duration::from_secs(10),
        };
        client.send(
            &json!({ "type": "hello", "caps": if batch { json!(["batch"]) } else { json!([]) } }),
        );
        Ok(client)
    }

    /// Connects like [`connect_with`](Self::connect_with), then resumes what `lost` (the state of
    /// a connection that was lost, from [`resume_state`](Self::resume_state)) saw: the server
    /// replays the events missed since, which [`next`](Self::next) hands out in order before
    /// the `{"type":"resumed"}` frame. Without anything to resume this is a plain connect.
    ///
    /// ```no_run
    /// # async fn run(old: liveroom_client::Client) -> Result<(), liveroom_client::Error> {
    /// let lost = old.resume_state();
    /// let mut client = liveroom_client::Client::resume("ws://127.0.0.1:3000/ws", &[], &lost).await?;
    /// while let Some(frame) = client.next().await {
    ///     if frame["type"] == "resumed" { break; } // caught up
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn resume(
        url: &str,
        headers: &[(&str, &str)],
        lost: &Resume,
    ) -> Result<Client, Error> {
        let client = Self::connect_with(url, headers, true).await?;
        if let Some(frame) = lost.frame() {
            client.resume.lock().unwrap().last_seen = lost.last_seen.clone();
            client.send(&frame);
        }
        Ok(client)
    }

    /// The `welcome` id and the newest seq seen per topic so far, to [`resume`](Self::resume)
    /// with after this connection is lost.
    pub fn resume_state(&self) -> Resume {
        self.resume.lock().unwrap().clone()
    }

    /// Sets how long calls wait for their reply (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a JSON frame as text.
    pub fn send(&self, frame: &Value) {
        let _ = self.out.send(Message::text(frame.to_string()));
    }

    /// Sends raw text (for malformed-input tests).
    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(Message::text(text.to_owned()));
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, data: Vec<u8>) {
        let _ = self.out.send(Message::binary(data));
    }

    /// Closes the connection with `code`.
    pub fn close(&self, code: u16) {
        let _ = self.out.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })));
    }

    /// A fresh call id.
    pub fn id(&self) -> String {
        format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a waiter for the reply with `id` (a plain reply or `__batch`).
    pub fn expect_reply(&self, id: &str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id.to_owned(), tx);
        rx
    }

    /// Waits for a reply registered with [`expect_reply`](Self::expect_reply).
    pub async fn reply(&self, rx: oneshot::Receiver<Value>) -> Result<Value, Error> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(Error::Closed(self.closed.lock().unwrap().flatten())),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn request(&self, path: &str, args: Value, stream: bool) -> Result<Value, Error> {
        let id = self.id();
        let rx = self.expect_reply(&id);
        let mut frame = json!({ "rpc": path, "id": id, "args": args });
        if stream {
            frame["stream"] = true.into();
        }
        self.send(&frame);
        let reply = self.reply(rx).await?;
        into_result(reply)
    }

    /// Calls an RPC and returns its `data`.
    pub async fn call(&self, path: &str, args: Value) -> Result<Value, Error> {
        Ok(self.request(path, args, false).await?["data"].take())
    }

    /// Calls without an id (fire-and-forget).
    pub fn fire(&self, path: &str, args: Value) {
        self.send(&json!({ "rpc": path, "args": args }));
    }

    /// Subscribes to a stream.
    pub async fn stream(&self, path: &str, args: Value) -> Result<StreamReply, Error> {
        let raw = self.request(path, args, true).await?;
        Ok(StreamReply {
            data: raw["data"].clone(),
            topic: raw["topic"].as_str().unwrap_or_default().to_owned(),
            merge: raw["merge"].as_str().unwrap_or_default().to_owned(),
            raw,
        })
    }

    /// Subscribes to a stream whose data the caller holds up to `seq` (from an earlier reply):
    /// the reply is `replay:true` with the missed events as `data` when the server's buffer
    /// covers them, else a full load (`replay:false`).
    pub async fn stream_since(
        &self,
        path: &str,
        args: Value,
        seq: u64,
    ) -> Result<StreamReply, Error> {
        let id = self.id();
        let rx = self.expect_reply(&id);
        self.send(&json!({ "rpc": path, "id": id, "args": args, "stream": true, "seq": seq }));
        let raw = into_result(self.reply(rx).await?)?;
        Ok(StreamReply {
            data: raw["data"].clone(),
            topic: raw["topic"].as_str().unwrap_or_default().to_owned(),
            merge: raw["merge"].as_str().unwrap_or_default().to_owned(),
            raw,
        })
    }

    /// Sends `{"batch":calls}` (each call needs an `id`) and returns the `__batch` reply list.
    pub async fn batch(&self, calls: Vec<Value>) -> Result<Vec<Value>, Error> {
        let rx = self.expect_reply("__batch");
        self.send(&json!({ "batch": calls }));
        let reply = self.reply(rx).await?;
        Ok(reply["batch"].as_array().cloned().unwrap_or_default())
    }

    /// The next frame that is not a matched reply: events (`{"topic","event","data"}`),
    /// `{"type":"batch"}` frames, acks, errors. When the connection closes, one
    /// `{"type":"__closed","code":..}` frame, then `None`.
    pub async fn next(&mut self) -> Option<Value> {
        match self.backlog.pop_front() {
            Some(f) => Some(f),
            None => self.frames.recv().await,
        }
    }

    /// [`next`](Self::next) with a timeout.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.next())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the next event on `topic` (unpacking batch frames). Other frames are kept,
    /// in order, for [`next`](Self::next).
    pub async fn event_on(&mut self, topic: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = std::collections::VecDeque::new();
        let mut found = None;
        while found.is_none() {
            let frame = match self.backlog.pop_front() {
                Some(f) => f,
                None => match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                    Ok(Some(f)) => f,
                    _ => break,
                },
            };
            let events = if frame["type"] == "batch" {
                frame["events"].as_array().cloned().unwrap_or_default()
            } else {
                vec![frame]
            };
            for e in events {
                if found.is_none() && e["topic"] == topic {
                    found = Some(e);
                } else {
                    skipped.push_back(e);
                }
            }
        }
        // What was skipped goes back in front of what was not read yet.
        skipped.extend(self.backlog.drain(..));
        self.backlog = skipped;
        found
    }

    /// Whether the server said it may be missing other replicas' events (its Redis is
    /// unreachable): set by a `degraded` event on `__realtime`, cleared by `recovered`. The
    /// frames themselves are still handed out by [`next`](Self::next).
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The close code, once closed (`Some(None)`: closed without a code).
    pub fn closed(&self) -> Option<Option<u16>> {
        *self.closed.lock().unwrap()
    }
}

fn route(
    pending: &Pending,
    resume: &Mutex<Resume>,
    degraded: &AtomicBool,
    frames: &mpsc::UnboundedSender<Value>,
    v: Value,
) {
    if v["topic"] == "__realtime" {
        match v["event"].as_str() {
            Some("degraded") => degraded.store(true, Ordering::Relaxed),
            Some("recovered") => degraded.store(false, Ordering::Relaxed),
            _ => {}
        }
    }
    if v["type"] == "welcome" {
        resume.lock().unwrap().session = v["sessionId"].as_str().map(str::to_owned);
        return;
    }
    if v["type"] == "batch" {
        let mut r = resume.lock().unwrap();
        for e in v["events"].as_array().into_iter().flatten() {
            r.saw(e);
        }
    } else if v.get("seq").is_some() {
        resume.lock().unwrap().saw(&v);
    }
    if v["topic"] == "__rpc" {
        if let Some(event) = v["event"].as_str() {
            if let Some(tx) = pending.lock().unwrap().remove(event) {
                let mut v = v;
                let _ = tx.send(v["data"].take());
                return;
            }
        }
    }
    let _ = frames.send(v);
}

/// Turns a reply body into `Ok(body)` or the RPC error.
pub fn into_result(reply: Value) -> Result<Value, Error> {
    if reply["ok"] == true {
        Ok(reply)
    } else {
        Err(Error::Rpc {
            code: reply["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
            message: reply["error"].as_str().unwrap_or_default().to_owned(),
            issues: reply.get("issues").cloned(),
        })
    }
}
