//! The wire protocol (protocol.md sections 1-4): decoding client frames and encoding server frames.
//!
//! Decoding is strict and never panics: every malformed frame becomes a [`FrameError`] that names
//! what is wrong. Encoding writes JSON straight into a byte buffer, so a published event is
//! serialized exactly once and then shared by every subscriber.

use crate::error::{code, LiveError};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

/// Deepest JSON nesting accepted in a client frame.
pub const MAX_DEPTH: usize = 64;
/// Most calls accepted in one `{"batch":[...]}` frame.
pub const MAX_BATCH: usize = 64;
/// Most topics accepted in one `subscribe-batch` frame.
pub const MAX_TOPICS: usize = 256;

/// A decoded client frame.
#[derive(Debug)]
pub enum Frame {
    /// `{"type":"hello","caps":[...]}`.
    Hello {
        /// The client accepts `{"type":"batch"}` frames.
        batch: bool,
    },
    /// `{"type":"subscribe","topic":..,"ref":..}`.
    Subscribe {
        /// The topic.
        topic: String,
        /// Echoed in the ack.
        r#ref: Option<Value>,
    },
    /// `{"type":"subscribe-batch","topics":[..],"ref":..}`.
    SubscribeBatch {
        /// The topics.
        topics: Vec<String>,
        /// Echoed in the acks.
        r#ref: Option<Value>,
    },
    /// `{"type":"unsubscribe","topic":..}`.
    Unsubscribe {
        /// The topic.
        topic: String,
    },
    /// An RPC or stream call.
    Call(Call),
    /// `{"batch":[...]}`: each entry decoded on its own, so one bad entry fails alone.
    Batch {
        /// The entries, each decoded or failed on its own.
        calls: Vec<Result<Call, FrameError>>,
        /// Run one after another instead of in parallel.
        sequential: bool,
    },
    /// A frame the protocol says to ignore (`resume`, `reply`, unknown `type`).
    Ignored,
}

/// One RPC call, `{"rpc":path,"id":..,"args":[..],"stream":bool}`.
#[derive(Debug, Clone)]
pub struct Call {
    /// The RPC path, already validated.
    pub path: String,
    /// Correlation id; `None` for fire-and-forget.
    pub id: Option<Value>,
    /// The arguments.
    pub args: Vec<Value>,
    /// A stream subscription rather than a plain call.
    pub stream: bool,
}

/// A frame that could not be decoded. `id` is set when the frame carried a usable call id, so
/// the error can be answered as an RPC reply.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The call id, if one could be read.
    pub id: Option<Value>,
    /// What is wrong, for the client.
    pub message: String,
}

impl FrameError {
    fn new(id: Option<Value>, message: impl Into<String>) -> Self {
        FrameError {
            id,
            message: message.into(),
        }
    }
}

/// Decodes one text frame.
pub fn decode(text: &str) -> Result<Frame, FrameError> {
    check_depth(text.as_bytes())?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(None, format!("invalid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(FrameError::new(None, "frame must be a JSON object"));
    };
    if let Some(ty) = obj.get("type") {
        let Some(ty) = ty.as_str() else {
            return Err(FrameError::new(None, "field `type` must be a string"));
        };
        return match ty {
            "hello" => {
                let batch = match obj.get("caps") {
                    None => false,
                    Some(Value::Array(caps)) => caps.iter().any(|c| c == "batch"),
                    Some(_) => return Err(FrameError::new(None, "field `caps` must be an array")),
                };
                Ok(Frame::Hello { batch })
            }
            "subscribe" => Ok(Frame::Subscribe {
                topic: take_string(&mut obj, "topic")?,
                r#ref: obj.remove("ref"),
            }),
            "unsubscribe" => Ok(Frame::Unsubscribe {
                topic: take_string(&mut obj, "topic")?,
            }),
            "subscribe-batch" => {
                let Some(Value::Array(list)) = obj.remove("topics") else {
                    return Err(FrameError::new(None, "field `topics` must be an array"));
                };
                if list.len() > MAX_TOPICS {
                    return Err(FrameError::new(
                        None,
                        format!("too many topics in subscribe-batch (max {MAX_TOPICS})"),
                    ));
                }
                let topics = list
                    .into_iter()
                    .map(|t| match t {
                        Value::String(s) => Ok(s),
                        _ => Err(FrameError::new(None, "`topics` entries must be strings")),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Frame::SubscribeBatch {
                    topics,
                    r#ref: obj.remove("ref"),
                })
            }
            _ => Ok(Frame::Ignored),
        };
    }
    if let Some(batch) = obj.remove("batch") {
        let Value::Array(entries) = batch else {
            return Err(FrameError::new(None, "field `batch` must be an array"));
        };
        if entries.len() > MAX_BATCH {
            return Err(FrameError::new(
                None,
                format!(
                    "batch of {} calls is too large (max {MAX_BATCH})",
                    entries.len()
                ),
            ));
        }
        let sequential = obj.get("sequential").and_then(Value::as_bool) == Some(true);
        let calls = entries
            .into_iter()
            .map(|e| match e {
                Value::Object(o) => decode_call(o),
                _ => Err(FrameError::new(None, "batch entries must be objects")),
            })
            .collect();
        return Ok(Frame::Batch { calls, sequential });
    }
    if obj.contains_key("rpc") {
        return decode_call(obj).map(Frame::Call);
    }
    Err(FrameError::new(
        None,
        "unknown frame: expected `type`, `rpc` or `batch`",
    ))
}

fn take_string(
    obj: &mut serde_json::Map<String, Value>,
    field: &str,
) -> Result<String, FrameError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FrameError::new(
            None,
            format!("field `{field}` must be a string"),
        )),
        None => Err(FrameError::new(None, format!("missing field `{field}`"))),
    }
}

fn decode_call(mut obj: serde_json::Map<String, Value>) -> Result<Call, FrameError> {
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => {
            return Err(FrameError::new(
                None,
                "field `id` must be a string or number",
            ))
        }
    };
    let path = match obj.remove("rpc") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(FrameError::new(id, "field `rpc` must be a string")),
        None => return Err(FrameError::new(id, "missing field `rpc`")),
    };
    if !valid_path(&path) {
        return Err(FrameError::new(
            id,
            format!("invalid rpc path `{}`", truncate(&path, 80)),
        ));
    }
    let args = match obj.remove("args") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(FrameError::new(id, "field `args` must be an array")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(FrameError::new(id, "field `stream` must be a boolean")),
    };
    Ok(Call {
        path,
        id,
        args,
        stream,
    })
}

/// Rejects nesting deeper than [`MAX_DEPTH`] before the JSON parser recurses into it.
fn check_depth(bytes: &[u8]) -> Result<(), FrameError> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(FrameError::new(
                        None,
                        format!("JSON nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An RPC path: segments of `[A-Za-z0-9_-]+` separated by `/`, at least two segments.
pub fn valid_path(path: &str) -> bool {
    path.len() <= 256
        && path.split('/').count() >= 2
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Why a topic is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty or longer than 256 characters.
    #[error("topic must be 1 to 256 characters")]
    Length,
    /// A character outside printable ASCII, or `"` or `\`.
    #[error("topic may only contain printable ASCII without `\"` and `\\`")]
    Character,
    /// Starts with the reserved `__` prefix.
    #[error("topics starting with `__` are reserved")]
    Reserved,
}

/// Checks a topic against protocol.md section 2.
///
/// ```
/// use liveroom::protocol::{validate_topic, TopicError};
/// assert!(validate_topic("board:42").is_ok());
/// assert_eq!(validate_topic("__rpc"), Err(TopicError::Reserved));
/// assert_eq!(validate_topic(""), Err(TopicError::Length));
/// ```
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() || topic.len() > 256 {
        return Err(TopicError::Length);
    }
    if !topic
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(TopicError::Character);
    }
    if topic.starts_with("__") {
        return Err(TopicError::Reserved);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding. Every function returns a complete JSON text frame payload.

fn put_json_str(buf: &mut BytesMut, s: &str) {
    // Writing a &str with serde_json cannot fail.
    let _ = serde_json::to_writer((&mut *buf).writer(), s);
}

fn put_json(buf: &mut BytesMut, v: &impl serde::Serialize) {
    if serde_json::to_writer((&mut *buf).writer(), v).is_err() {
        buf.put_slice(b"null");
    }
}

/// `{"topic":..,"event":..,"data":..}` with `data` already serialized.
pub fn envelope(topic: &str, event: &str, data: &RawValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + topic.len() + event.len() + data.get().len());
    buf.put_slice(b"{\"topic\":");
    put_json_str(&mut buf, topic);
    buf.put_slice(b",\"event\":");
    put_json_str(&mut buf, event);
    buf.put_slice(b",\"data\":");
    buf.put_slice(data.get().as_bytes());
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
    buf.put_slice(b"{\"topic\":\"__rpc\",\"event\":\"__batch\",\"data\":{\"batch\":[");
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(body);
    }
    buf.put_slice(b"]}}");
    buf.freeze()
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

/// `{"type":"welcome","sessionId":..}`.
pub fn welcome(session_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(48);
    buf.put_slice(b"{\"type\":\"welcome\",\"sessionId\":");
    put_json_str(&mut buf, session_id);
    buf.put_u8(b'}');
    buf.freeze()
}

/// `{"type":"noop"}`, the keep-alive the client ignores.
pub const NOOP: &[u8] = b"{\"type\":\"noop\"}";

/// Maps a [`FrameError`] to the error sent back.
pub fn frame_error(e: &FrameError) -> LiveError {
    LiveError::new(code::INVALID_REQUEST, e.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_calls_and_batches() {
        let Frame::Call(c) = decode(r#"{"rpc":"chat/send","id":"1","args":[1,"a"]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.path, "chat/send");
        assert_eq!(c.args.len(), 2);
        let Frame::Batch { calls, sequential } =
            decode(r#"{"batch":[{"rpc":"a/b","id":1},{"rpc":"bad","id":2}]}"#).unwrap()
        else {
            panic!()
        };
        assert!(!sequential);
        assert!(calls[0].is_ok());
        assert_eq!(calls[1].as_ref().unwrap_err().id, Some(Value::from(2)));
    }

    #[test]
    fn rejects_bad_frames_with_reasons() {
        let e = decode(r#"{"rpc":"a/b","id":"x","args":{}}"#).unwrap_err();
        assert_eq!(e.id, Some(Value::from("x")));
        assert!(e.message.contains("args"));
        assert!(decode("[1]").is_err());
        assert!(decode("{").unwrap_err().message.contains("invalid JSON"));
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(decode(&deep).unwrap_err().message.contains("deeper"));
        assert!(matches!(
            decode(r#"{"type":"resume"}"#).unwrap(),
            Frame::Ignored
        ));
    }

    #[test]
    fn depth_check_ignores_brackets_in_strings() {
        let s = format!(r#"{{"rpc":"a/b","args":["{}"]}}"#, "[".repeat(100));
        assert!(decode(&s).is_ok());
    }

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
