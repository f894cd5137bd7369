//! Server frames: every function returns a complete JSON text frame payload, written straight
//! into bytes, so a published event is serialized exactly once and then shared by every
//! subscriber.

use crate::error::LiveError;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

fn put_json_str(buf: &mut BytesMut, s: &str) {
    // Writing a &str with serde_json cannot fail.
    let _ = serde_json::to_writer((&mut *buf).writer(), s);
}

fn put_json(buf: &mut BytesMut, v: &impl serde::Serialize) {
    if serde_json::to_writer((&mut *buf).writer(), v).is_err() {
        buf.put_slice(b"null");
    }
}

/// `{"topic":..,"event":..,"data":..}` with `data` already serialized, and no `seq`.
pub fn envelope(topic: &str, event: &str, data: &RawValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + topic.len() + event.len() + data.get().len());
    envelope_into(&mut buf, topic, event, data);
    buf.put_u8(b'}');
    buf.freeze()
}

/// Writes an envelope without its closing brace, so a `,"seq":N` can follow.
pub fn envelope_into(buf: &mut BytesMut, topic: &str, event: &str, data: &RawValue) {
    buf.put_slice(b"{\"topic\":");
    put_json_str(buf, topic);
    buf.put_slice(b",\"event\":");
    put_json_str(buf, event);
    buf.put_slice(b",\"data\":");
    buf.put_slice(data.get().as_bytes());
}

/// `{"type":"welcome","sessionId":..}`, the first frame of every connection: the id a client
/// sends back in `resume` after a reconnect.
pub fn welcome(session: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(40 + session.len());
    buf.put_slice(b"{\"type\":\"welcome\",\"sessionId\":");
    put_json_str(&mut buf, session);
    buf.put_u8(b'}');
    buf.freeze()
}

/// The topic of the server's health events. Every connection gets them without subscribing
/// (the svelte-realtime client's `health` store listens to it).
pub const HEALTH_TOPIC: &str = "__realtime";

/// `{"topic":"__realtime","event":"degraded","data":{"at":<ms>}}` while events from other
/// replicas may be missing (the cluster's Redis is unreachable), `"recovered"` once they flow
/// again; `at` is the server's clock in Unix milliseconds.
///
/// ```
/// let f = liveroom::protocol::health(true);
/// assert!(f.starts_with(br#"{"topic":"__realtime","event":"degraded","data":{"at":"#));
/// ```
pub fn health(degraded: bool) -> Bytes {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let event = if degraded { "degraded" } else { "recovered" };
    Bytes::from(format!(
        r#"{{"topic":"{HEALTH_TOPIC}","event":"{event}","data":{{"at":{at}}}}}"#
    ))
}

/// `{"type":"resumed"}`: the events a `resume` asked for have all been queued.
pub const RESUMED: &[u8] = b"{\"type\":\"resumed\"}";

/// The data of the reload marker: a stream that receives it drops its seq and subscribes
/// again from scratch (the svelte-realtime client's `truncated` replay marker).
pub const TRUNCATED: &str = r#"{"reqId":"liveroom","truncated":true}"#;

/// The reload marker's envelope for `topic` (event `truncated`), without its closing brace.
pub fn truncated_into(buf: &mut BytesMut, topic: &str) {
    buf.put_slice(b"{\"topic\":");
    put_json_str(buf, topic);
    buf.put_slice(b",\"event\":\"truncated\",\"data\":");
    buf.put_slice(TRUNCATED.as_bytes());
}

/// The reload marker's envelope for `topic`, without a seq.
pub fn truncated(topic: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(80 + topic.len());
    truncated_into(&mut buf, topic);
    buf.put_u8(b'}');
    buf.freeze()
}

/// Stream options echoed in a stream reply.
#[derive(Debug, Clone, Default)]
pub struct StreamReply<'a> {
    /// Resolved topic.
    pub topic: &'a str,
    /// Merge mode name.
    pub merge: &'a str,
    /// Key field for keyed merges.
    pub key: Option<&'a str>,
    /// Cap on the list length.
    pub max: Option<usize>,
    /// New items go first.
    pub prepend: bool,
    /// The topic's seq the data is current to (0: none).
    pub seq: u64,
    /// `Some(true)`: `data` is the list of missed envelopes (`{event, data, seq}`), applied in
    /// order; `Some(false)`: the client asked for a replay and got a full load.
    pub replay: Option<bool>,
}

/// The body of one RPC reply (`{"id":..,"ok":..}`), used alone or inside a batch reply.
pub fn reply_body(
    buf: &mut BytesMut,
    id: &Value,
    result: &Result<Box<RawValue>, LiveError>,
    stream: Option<&StreamReply<'_>>,
) {
    buf.put_slice(b"{\"id\":");
    put_json(buf, id);
    match result {
        Ok(data) => {
            buf.put_slice(b",\"ok\":true,\"data\":");
            buf.put_slice(data.get().as_bytes());
            if let Some(s) = stream {
                buf.put_slice(b",\"topic\":");
                put_json_str(buf, s.topic);
                buf.put_slice(b",\"merge\":");
                put_json_str(buf, s.merge);
                if let Some(key) = s.key {
                    buf.put_slice(b",\"key\":");
                    put_json_str(buf, key);
                }
                if let Some(max) = s.max {
                    buf.put_slice(format!(",\"max\":{max}").as_bytes());
                }
                if s.prepend {
                    buf.put_slice(b",\"prepend\":true");
                }
                if s.seq > 0 {
                    buf.put_slice(format!(",\"seq\":{}", s.seq).as_bytes());
                }
                if let Some(replay) = s.replay {
                    buf.put_slice(if replay {
                        b",\"replay\":true".as_slice()
                    } else {
                        b",\"replay\":false".as_slice()
                    });
                }
            }
        }
        Err(e) => {
            buf.put_slice(b",\"ok\":false,\"code\":");
            put_json_str(buf, e.code());
            buf.put_slice(b",\"error\":");
            put_json_str(buf, e.message());
            if !e.issues().is_empty() {
                buf.put_slice(b",\"issues\":");
                put_json(buf, &e.issues());
            }
            if let Some(wait) = e.retry_after() {
                buf.put_slice(format!(",\"retryAfter\":{}", wait.as_millis()).as_bytes());
            }
        }
    }
    buf.put_u8(b'}');
}

/// A complete reply frame on `__rpc` for one call.
pub fn reply(
    id: &Value,
    result: &Result<Box<RawValue>, LiveError>,
    stream: Option<&StreamReply<'_>>,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(128);
    buf.put_slice(b"{\"topic\":\"__rpc\",\"event\":");
    match id {
        Value::String(s) => put_json_str(&mut buf, s),
        other => put_json_str(&mut buf, &other.to_string()),
    }
    buf.put_slice(b",\"data\":");
    reply_body(&mut buf, id, result, stream);
    buf.put_u8(b'}');
    buf.freeze()
}

/// The single reply to a `{"batch":[...]}` frame, from already encoded bodies.
pub fn batch_reply(bodies: &[BytesMut]) -> Bytes {
    let len: usize = bodies.iter().map(|b| b.len() + 1).sum();
    let mut buf = BytesMut::with_capacity(64 + len);
    buf.put_slice(b"{\"topic\":\"__rpc\",\"event\":\"__batch\",\"data\":{\"batch\":");
    put_array(&mut buf, bodies.iter().map(|b| &b[..]));
    buf.put_slice(b"}}");
    buf.freeze()
}

/// Writes `[item,item,...]` from already encoded JSON items.
pub fn put_array<'a>(buf: &mut BytesMut, items: impl IntoIterator<Item = &'a [u8]>) {
    buf.put_u8(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(item);
    }
    buf.put_u8(b']');
}

/// `{"type":"subscribed","topic":..,"ref":..}` or `subscribe-denied` with a reason.
pub fn subscribe_ack(topic: &str, r#ref: Option<&Value>, denied: Option<&str>) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + topic.len());
    buf.put_slice(if denied.is_some() {
        b"{\"type\":\"subscribe-denied\",\"topic\":".as_slice()
    } else {
        b"{\"type\":\"subscribed\",\"topic\":".as_slice()
    });
    put_json_str(&mut buf, topic);
    if let Some(r) = r#ref {
        buf.put_slice(b",\"ref\":");
        put_json(&mut buf, r);
    }
    if let Some(reason) = denied {
        buf.put_slice(b",\"reason\":");
        put_json_str(&mut buf, reason);
    }
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"type":"error","code":..,"message":..}`: liveroom's answer to a frame that cannot be
/// answered as an RPC reply (no call id). Clients that do not know it ignore it.
pub fn error_frame(code_: &str, message: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + message.len());
    buf.put_slice(b"{\"type\":\"error\",\"code\":");
    put_json_str(&mut buf, code_);
    buf.put_slice(b",\"message\":");
    put_json_str(&mut buf, message);
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"type":"noop"}`, the keep-alive the client ignores.
pub const NOOP: &[u8] = b"{\"type\":\"noop\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_replies() {
        let data = serde_json::value::to_raw_value(&[1, 2]).unwrap();
        let r = reply(&Value::from("7"), &Ok(data), None);
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            r#"{"topic":"__rpc","event":"7","data":{"id":"7","ok":true,"data":[1,2]}}"#
        );
        let r = reply(&Value::from("8"), &Err(LiveError::forbidden("no")), None);
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            r#"{"topic":"__rpc","event":"8","data":{"id":"8","ok":false,"code":"FORBIDDEN","error":"no"}}"#
        );
    }
}
