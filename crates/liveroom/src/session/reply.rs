//! Phase 2 of a call: what it resolves to ([`Done`]), and how replies are queued so that a
//! stream's held events follow its reply.

use crate::conn::{Conn, InFlight};
use crate::error::LiveError;
use crate::handler::Reply;
use crate::merge::Merge;
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
    pub stream: Option<(Arc<str>, Merge)>,
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

    /// A stream call: its initial load, then the reply that releases `topic`'s held events.
    pub fn stream(
        id: Option<Value>,
        topic: Arc<str>,
        merge: Merge,
        load: BoxFuture<'static, Reply>,
    ) -> Pending {
        Box::pin(async move {
            Done {
                id,
                result: load.await,
                stream: Some((topic, merge)),
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
    if let (Some((topic, _)), Err(_)) = (&stream, &result) {
        conn.stream_failed(topic.clone());
    }
    let Some(id) = id else {
        if let Some((topic, _)) = stream {
            conn.outbox.release(&[topic], None);
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "fire-and-forget call failed");
        }
        return;
    };
    let reply = match &stream {
        Some((topic, merge)) if result.is_ok() => {
            protocol::reply(&id, &result, Some(&merge.reply(topic)))
        }
        _ => protocol::reply(&id, &result, None),
    };
    match stream {
        Some((topic, _)) => conn.outbox.release(&[topic], Some(reply)),
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
            Some((topic, merge)) if d.result.is_ok() => Some(merge.reply(topic)),
            _ => None,
        };
        protocol::reply_body(&mut body, id, &d.result, stream.as_ref());
        bodies.push(body);
    }
    for d in done {
        if let Some((topic, _)) = d.stream {
            if d.result.is_err() {
                conn.stream_failed(topic.clone());
            }
            topics.push(topic);
        }
    }
    conn.outbox
        .release(&topics, Some(protocol::batch_reply(&bodies)));
}
