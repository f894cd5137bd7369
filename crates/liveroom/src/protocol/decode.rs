//! Client frames (protocol.md sections 2-4): what a client may send, and the strict decoder.
//!
//! Decoding never panics: every malformed frame becomes a [`FrameError`] that names what is
//! wrong, with the call id when one could be read so the error can be answered as a reply.

use super::names::valid_path;
use crate::error::LiveError;
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
    /// `{"type":"resume","sessionId":..,"lastSeenSeqs":{topic: seq}}`, sent after a reconnect
    /// by a client that got a `welcome`. A malformed one is ignored, as before replay existed.
    Resume {
        /// The `welcome` id of the connection that was lost.
        session: String,
        /// The newest seq the client saw, per topic (at most [`MAX_TOPICS`]).
        last_seen: Vec<(String, u64)>,
    },
    /// A frame the protocol says to ignore (`reply`, unknown `type`).
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
    /// For a stream: the seq of the data the client holds (from an earlier reply), asking
    /// for the events since instead of a full load.
    pub seq: Option<u64>,
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
    /// The `INVALID_REQUEST` error that answers this frame.
    pub fn to_error(&self) -> LiveError {
        LiveError::invalid(self.message.clone())
    }

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
            "resume" => Ok(decode_resume(obj)),
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

/// A seq as a client sends it: a non-negative integer (JSON numbers may come as floats).
fn as_seq(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.007_199_254_740_992e15)
            .map(|f| f as u64)
    })
}

fn decode_resume(mut obj: serde_json::Map<String, Value>) -> Frame {
    let (Some(Value::String(session)), Some(Value::Object(seen))) =
        (obj.remove("sessionId"), obj.remove("lastSeenSeqs"))
    else {
        return Frame::Ignored;
    };
    let last_seen = seen
        .into_iter()
        .filter_map(|(topic, seq)| Some((topic, as_seq(&seq)?)))
        .take(MAX_TOPICS)
        .collect();
    Frame::Resume { session, last_seen }
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
    let seq = obj.get("seq").and_then(as_seq);
    Ok(Call {
        path,
        id,
        args,
        stream,
        seq,
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
}
