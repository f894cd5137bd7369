//! WebSocket client plumbing shared by the scenarios: loopback-only connects with a chosen
//! source address, frame helpers and the liveroom (svelte-realtime) protocol calls.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Refuses anything but loopback: the generator must never load another host.
pub fn ensure_loopback(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("refusing to target {addr}: the benchmark only targets loopback addresses");
    }
    Ok(())
}

/// Source address number `i` of `n` (127.0.0.1, 127.0.0.2, ...), to get past the ~28k
/// ephemeral ports of one source/destination pair.
pub fn source_ip(i: usize, n: usize) -> IpAddr {
    let k = (i % n.max(1)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k))
}

fn config(small: bool) -> WebSocketConfig {
    let c = WebSocketConfig::default();
    if small {
        // Idle sockets: keep the generator's own memory down.
        c.read_buffer_size(4096).write_buffer_size(0)
    } else {
        c.write_buffer_size(0)
    }
}

/// Opens a WebSocket to `ws://addr<path>` from source `src`.
pub async fn connect(addr: SocketAddr, path: &str, src: Option<IpAddr>, small: bool) -> Result<Ws> {
    ensure_loopback(addr)?;
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = tokio::time::timeout(Duration::from_secs(15), sock.connect(addr))
        .await
        .context("connect timeout")??;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(15),
        tokio_tungstenite::client_async_with_config(url, tcp, Some(config(small))),
    )
    .await
    .context("handshake timeout")??;
    Ok(ws)
}

/// Next text/binary payload; `None` on close or error. Pings are answered by tungstenite.
pub async fn next_payload(ws: &mut Ws) -> Option<bytes::Bytes> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(bytes::Bytes::from(t)),
            Ok(Message::Binary(b)) => return Some(b),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// `next_payload` with a deadline.
pub async fn next_payload_timeout(ws: &mut Ws, d: Duration) -> Result<bytes::Bytes> {
    match tokio::time::timeout(d, next_payload(ws)).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => bail!("connection closed"),
        Err(_) => bail!("timed out after {d:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, s: String) -> Result<()> {
    ws.send(Message::text(s)).await?;
    Ok(())
}

/// Sends a close frame and waits briefly for the peer's close.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Splits a liveroom frame into its event envelopes (a `batch` frame holds several).
pub fn envelopes(frame: &[u8]) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(frame) else {
        return Vec::new();
    };
    if v.get("type").and_then(Value::as_str) == Some("batch") {
        if let Some(Value::Array(evs)) = v.get("events").cloned() {
            return evs;
        }
        return Vec::new();
    }
    vec![v]
}

/// Liveroom (svelte-realtime protocol) calls.
pub mod lr {
    use super::*;

    /// Connects as `user` (test-server auth via query) and sends the `hello` frame.
    pub async fn connect(
        addr: SocketAddr,
        user: Option<&str>,
        src: Option<IpAddr>,
        small: bool,
    ) -> Result<Ws> {
        let path = match user {
            Some(u) => format!("/ws?user={u}&name={u}"),
            None => "/ws".to_string(),
        };
        let mut ws = super::connect(addr, &path, src, small).await?;
        send_text(&mut ws, r#"{"type":"hello","caps":["batch"]}"#.to_string()).await?;
        Ok(ws)
    }

    pub fn call_frame(id: &str, path: &str, args: Value, stream: bool) -> String {
        let mut v = json!({"rpc": path, "id": id, "args": args});
        if stream {
            v["stream"] = Value::Bool(true);
        }
        v.to_string()
    }

    /// If `env` is the RPC reply for `id`, returns its `data` object (`{id, ok, data|code,...}`).
    pub fn reply_for<'a>(env: &'a Value, id: &str) -> Option<&'a Value> {
        if env.get("topic").and_then(Value::as_str) != Some("__rpc") {
            return None;
        }
        let ev = env.get("event").and_then(Value::as_str)?;
        if ev == id {
            return env.get("data");
        }
        if ev == "__batch" {
            let arr = env.get("data")?.get("batch")?.as_array()?;
            return arr
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(id));
        }
        None
    }

    /// Sends one call and waits for its reply, passing other envelopes to `other`.
    /// Returns the reply's `data`; an `ok:false` reply is an error.
    pub async fn call(
        ws: &mut Ws,
        id: &str,
        path: &str,
        args: Value,
        stream: bool,
        other: impl FnMut(&Value),
    ) -> Result<Value> {
        send_text(ws, call_frame(id, path, args, stream)).await?;
        reply(ws, id, path, other).await
    }

    /// Waits for the reply to call `id` (to `path`), passing other envelopes to `other`.
    /// Returns the reply's `data`; an `ok:false` reply is an error.
    pub async fn reply(
        ws: &mut Ws,
        id: &str,
        path: &str,
        mut other: impl FnMut(&Value),
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = next_payload_timeout(ws, left)
                .await
                .with_context(|| format!("waiting for the reply to {path}"))?;
            for env in envelopes(&frame) {
                if let Some(r) = reply_for(&env, id) {
                    return ok_data(r, path);
                }
                other(&env);
            }
        }
    }

    /// Subscribes to the stream at `path` and returns its initial data (other frames that
    /// arrive first are dropped).
    pub async fn stream(ws: &mut Ws, path: &str, args: Value) -> Result<Value> {
        call(ws, "s", path, args, true, |_| {}).await
    }

    /// Checks an RPC reply object and returns its `data`.
    pub fn ok_data(r: &Value, path: &str) -> Result<Value> {
        if r.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(r.get("data").cloned().unwrap_or(Value::Null))
        } else {
            bail!(
                "{path} failed: {} {}",
                r.get("code").and_then(Value::as_str).unwrap_or("?"),
                r.get("error").and_then(Value::as_str).unwrap_or("")
            )
        }
    }
}

/// Sockudo (Pusher protocol 7) client helpers.
pub mod pusher {
    use super::*;
    use hmac::{KeyInit, Mac};

    pub const APP_ID: &str = "app-id";
    pub const APP_KEY: &str = "app-key";
    pub const APP_SECRET: &str = "app-secret";

    pub fn hmac_hex(msg: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes())
            .expect("hmac accepts any key");
        mac.update(msg.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    pub fn hex(b: &[u8]) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(b.len() * 2);
        for x in b {
            s.push(H[(x >> 4) as usize] as char);
            s.push(H[(x & 15) as usize] as char);
        }
        s
    }

    /// Connects and returns the socket with its `socket_id`.
    pub async fn connect(
        addr: SocketAddr,
        src: Option<IpAddr>,
        small: bool,
    ) -> Result<(Ws, String)> {
        let path = format!("/app/{APP_KEY}?protocol=7&client=js&version=8.4.0");
        let mut ws = super::connect(addr, &path, src, small).await?;
        let first = next_payload_timeout(&mut ws, Duration::from_secs(15)).await?;
        let v: Value = serde_json::from_slice(&first)?;
        if v.get("event").and_then(Value::as_str) != Some("pusher:connection_established") {
            bail!(
                "unexpected first frame: {}",
                String::from_utf8_lossy(&first)
            );
        }
        let data: Value = serde_json::from_str(v["data"].as_str().unwrap_or("{}"))?;
        let sid = data["socket_id"]
            .as_str()
            .context("no socket_id")?
            .to_string();
        Ok((ws, sid))
    }

    pub fn subscribe_public(channel: &str) -> String {
        json!({"event":"pusher:subscribe","data":{"channel":channel}}).to_string()
    }

    pub fn subscribe_presence(sid: &str, channel: &str, user: &str) -> String {
        let channel_data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
        let auth = format!(
            "{APP_KEY}:{}",
            hmac_hex(&format!("{sid}:{channel}:{channel_data}"))
        );
        json!({"event":"pusher:subscribe","data":{"channel":channel,"channel_data":channel_data,"auth":auth}})
            .to_string()
    }

    /// Waits for `pusher_internal:subscription_succeeded` on `channel`, passing other frames on.
    pub async fn wait_subscribed(
        ws: &mut Ws,
        channel: &str,
        mut other: impl FnMut(&Value),
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = next_payload_timeout(ws, left)
                .await
                .context("waiting for subscription_succeeded")?;
            let v: Value = serde_json::from_slice(&f).unwrap_or(Value::Null);
            let ev = v.get("event").and_then(Value::as_str).unwrap_or("");
            if ev == "pusher_internal:subscription_succeeded"
                && v.get("channel").and_then(Value::as_str) == Some(channel)
            {
                return Ok(v);
            }
            if ev == "pusher:error" || ev == "pusher:subscription_error" {
                bail!("subscribe failed: {}", String::from_utf8_lossy(&f));
            }
            other(&v);
        }
    }

    /// Signed REST publish request (path with query, body) for `POST /apps/<id>/events`.
    pub fn signed_event(channel: &str, name: &str, data: &str) -> (String, String) {
        let body = json!({"name": name, "channel": channel, "data": data}).to_string();
        let md5 = format!("{:x}", md5::compute(body.as_bytes()));
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = format!("/apps/{APP_ID}/events");
        let query =
            format!("auth_key={APP_KEY}&auth_timestamp={ts}&auth_version=1.0&body_md5={md5}");
        let sig = hmac_hex(&format!("POST\n{path}\n{query}"));
        (format!("{path}?{query}&auth_signature={sig}"), body)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn hmac_matches_known_vector() {
            // Pusher docs example uses other keys; check our HMAC against a fixed value.
            let h = super::hmac_hex("1234.1234:private-foobar");
            assert_eq!(h.len(), 64);
            assert_eq!(super::hex(&[0, 15, 255]), "000fff");
        }
    }
}

/// Socket.IO 4 over its WebSocket transport (Engine.IO 4): `0{..}` open, `40` connect, `2`/`3`
/// ping/pong, `42<id>[name, args..]` events and `43<id>[..]` acknowledgements.
pub mod sio {
    use super::*;

    /// Connects and joins the default namespace.
    pub async fn connect(addr: SocketAddr, src: Option<IpAddr>, small: bool) -> Result<Ws> {
        let path = "/socket.io/?EIO=4&transport=websocket";
        let mut ws = super::connect(addr, path, src, small).await?;
        let open = next_payload_timeout(&mut ws, Duration::from_secs(15)).await?;
        if !open.starts_with(b"0{") {
            bail!(
                "unexpected Engine.IO open: {}",
                String::from_utf8_lossy(&open)
            );
        }
        send_text(&mut ws, "40".into()).await?;
        loop {
            let f = next_payload(&mut ws, Duration::from_secs(15)).await?;
            if f.starts_with(b"40") {
                return Ok(ws);
            }
            if f.starts_with(b"44") {
                bail!("namespace refused: {}", String::from_utf8_lossy(&f));
            }
        }
    }

    /// The event `name` with `args`, asking for acknowledgement `id`.
    pub fn emit(id: u64, name: &str, args: &[Value]) -> String {
        let mut all = vec![Value::from(name)];
        all.extend_from_slice(args);
        format!("42{id}{}", Value::Array(all))
    }

    /// Whether `f` is the acknowledgement `id` (`43<id>[..]`).
    pub fn is_ack(f: &[u8], id: u64) -> bool {
        f.strip_prefix(b"43")
            .and_then(|rest| rest.strip_prefix(id.to_string().as_bytes()))
            .is_some_and(|rest| rest.first() == Some(&b'['))
    }

    /// The next Socket.IO payload, answering Engine.IO pings on the way.
    pub async fn next_payload(ws: &mut Ws, d: Duration) -> Result<bytes::Bytes> {
        loop {
            let f = next_payload_timeout(ws, d).await?;
            if &f[..] == b"2" {
                send_text(ws, "3".into()).await?;
                continue;
            }
            return Ok(f);
        }
    }

    /// Emits `name(args)` and waits for its acknowledgement.
    pub async fn call(ws: &mut Ws, id: u64, name: &str, args: &[Value]) -> Result<()> {
        send_text(ws, emit(id, name, args)).await?;
        loop {
            let f = next_payload(ws, Duration::from_secs(30)).await?;
            if is_ack(&f, id) {
                return Ok(());
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        #[test]
        fn frames_events_and_reads_acks() {
            assert_eq!(
                super::emit(7, "join", &[json!("r1")]),
                r#"427["join","r1"]"#
            );
            assert!(super::is_ack(b"437[]", 7));
            assert!(!super::is_ack(b"4371[]", 7));
            assert!(!super::is_ack(b"42[\"created\"]", 7));
        }
    }
}

/// Runs `f(i)` for `i in 0..n` with at most `concurrency` in flight (connects in batches: the
/// listen backlog is 4096), collecting the results in order. Fails on the first error.
pub async fn connect_many<T, F, Fut>(n: usize, concurrency: usize, f: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    use futures_util::stream::{self, TryStreamExt};
    stream::iter((0..n).map(|i| {
        let fut = f(i);
        async move { fut.await.map(|t| (i, t)) }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect::<Vec<(usize, T)>>()
    .await
    .map(|mut v| {
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, t)| t).collect()
    })
}

/// A unique-enough tag for room and channel names of one run.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", (nanos as u64) ^ ((std::process::id() as u64) << 40))
}

/// A lean receive loop for high-rate subscribers: takes the TCP stream out of the WebSocket
/// (call it only when nothing is in flight, i.e. before the load starts), reads big chunks and
/// hands every complete text/binary payload to `on_payload` without allocating per frame.
/// Answers pings; returns on close or error.
pub async fn fast_read(ws: Ws, mut on_payload: impl FnMut(&[u8])) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = ws.into_inner();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    loop {
        let mut pos = 0;
        while buf.len() - pos >= 2 {
            let b = &buf[pos..];
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, hdr) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(a) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            let hdr = hdr + if masked { 4 } else { 0 };
            if b.len() < hdr + len {
                break;
            }
            let payload = &b[hdr..hdr + len];
            match opcode {
                0x0..=0x2 => on_payload(payload),
                0x8 => return,
                0x9 => {
                    // Pong with the same payload, masked with a zero key.
                    let mut f = vec![0x8a, 0x80 | len.min(125) as u8, 0, 0, 0, 0];
                    f.extend_from_slice(&payload[..len.min(125)]);
                    if tcp.write_all(&f).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
            pos += hdr + len;
        }
        bytes::Buf::advance(&mut buf, pos);
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match tcp.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
