//! Phase 2 of a call: what it resolves to ([`Done`]), and how replies are queued so that a
//! stream's held events follow its reply.

use crate::conn::{Conn, InFlight};
use crate::error::LiveError;
use crate::handler::Reply;
use crate::merge::Merge;
use crate::outbox::Release;
use crate::protocol;
use bytes::BytesMut;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// Phase 2 of a call: the reply body and, for streams, the topic to release.
pub(super) type Pending = BoxFuture<'static, Done>;

pub(super) struct Done {
    pub id: Option<Value>,
    pub result: Reply,
    pub stream: Option<Streamed>,
}

/// What a stream reply says besides its data, and which held events it releases.
pub(super) struct Streamed {
    pub topic: Arc<str>,
    pub merge: Merge,
    /// The topic's seq the data is current to (0: none).
    pub seq: u64,
    /// `Some(true)`: the data is the missed events; `Some(false)`: a replay was asked for and
    /// a full load answered.
    pub replay: Option<bool>,
    /// Held events at or below this seq are in the data already.
    pub through: u64,
}

impl Streamed {
    fn release(&self) -> Release {
        Release {
            topic: self.topic.clone(),
            replay: Vec::new(),
            through: self.through,
        }
    }

    fn reply(&self) -> protocol::StreamReply<'_> {
        let mut r = self.merge.reply(&self.topic);
        r.seq = self.seq;
        r.replay = self.replay;
        r
    }
}

impl Done {
    /// A call answered at once (an error, or a fire-and-forget `__cursor`).
    pub fn now(id: Option<Value>, result: Reply) -> Pending {
        Box::pin(async move {
            Done {
                id,
                result,
                stream: None,
            }
        })
    }

    /// A plain call: its handler's result.
    pub fn call(id: Option<Value>, fut: BoxFuture<'static, Reply>) -> Pending {
        Box::pin(async move {
            Done {
                id,
                result: fut.await,
                stream: None,
            }
        })
    }

    /// A stream call: its initial load (or its replay), then the reply that releases the
    /// topic's held events.
    pub fn stream(id: Option<Value>, stream: Streamed, load: BoxFuture<'static, Reply>) -> Pending {
        Box::pin(async move {
            Done {
                id,
                result: load.await,
                stream: Some(stream),
            }
        })
    }
}

/// Wraps phase 2 with the call's metrics (`label` is the path, or `unknown`); `running`
/// counts it in the connection's calls in flight until it is done.
pub(super) fn timed(label: String, pending: Pending, running: Option<InFlight>) -> Pending {
    let started = Instant::now();
    Box::pin(async move {
        let done = pending.await;
        drop(running);
        metrics::counter!("liveroom_rpc_total", "path" => label.clone()).increment(1);
        metrics::histogram!("liveroom_rpc_duration_seconds", "path" => label.clone())
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &done.result {
            let code = e.code().to_owned();
            metrics::counter!("liveroom_rpc_errors_total", "path" => label, "code" => code)
                .increment(1);
        }
        done
    })
}

/// A call refused before it ran (rate limited, overloaded): counted, but kept out of the
/// duration histogram, whose samples a flood would otherwise pile up.
pub(super) fn refused(label: String, id: Option<Value>, error: LiveError) -> Pending {
    metrics::counter!("liveroom_rpc_total", "path" => label.clone()).increment(1);
    let code = error.code().to_owned();
    metrics::counter!("liveroom_rpc_errors_total", "path" => label, "code" => code).increment(1);
    Done::now(id, Err(error))
}

/// Queues the reply of one call (releasing its stream's held events).
pub(super) fn finish(conn: &Conn, done: Done) {
    let Done { id, result, stream } = done;
    if let (Some(s), Err(_)) = (&stream, &result) {
        conn.stream_failed(s.topic.clone());
    }
    let Some(id) = id else {
        if let Some(s) = stream {
            conn.outbox.release(&[s.release()], None);
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "fire-and-forget call failed");
        }
        return;
    };
    let reply = match &stream {
        Some(s) if result.is_ok() => protocol::reply(&id, &result, Some(&s.reply())),
        _ => protocol::reply(&id, &result, None),
    };
    match stream {
        Some(s) => conn.outbox.release(&[s.release()], Some(reply)),
        None => conn.outbox.reply(reply),
    }
}

/// Queues the single reply of a batch, after which the held events of its streams follow.
pub(super) fn finish_batch(conn: &Conn, done: Vec<Done>) {
    let mut bodies = Vec::with_capacity(done.len());
    let mut topics = Vec::new();
    for d in &done {
        let Some(id) = &d.id else {
            continue;
        };
        let mut body = BytesMut::with_capacity(64);
        let stream = match &d.stream {
            Some(s) if d.result.is_ok() => Some(s.reply()),
            _ => None,
        };
        protocol::reply_body(&mut body, id, &d.result, stream.as_ref());
        bodies.push(body);
    }
    for d in done {
        if let Some(s) = d.stream {
            if d.result.is_err() {
                conn.stream_failed(s.topic.clone());
            }
            topics.push(s.release());
        }
    }
    conn.outbox
        .release(&topics, Some(protocol::batch_reply(&bodies)));
}
