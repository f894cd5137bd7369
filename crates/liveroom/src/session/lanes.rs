//! Ordered calls (docs/protocol.md, "Order"): a connection's RPCs run one after another in the
//! order they arrived, and so do its actions in each room. A lane is the tail of a chain: each
//! call waits for the one queued before it in its lane to finish, then runs. Calls in other
//! lanes, stream loads and cursor moves do not wait.

use super::reply::Pending;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Lanes kept before finished ones are forgotten.
const KEEP: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Lanes {
    /// Per lane, the signal that its newest call finished (its sender is dropped then).
    /// Boxed on first use: every idle connection holds one of these, and an empty `HashMap` is
    /// six words in the connection's task where `None` is one.
    #[allow(clippy::box_collection)]
    tails: Option<Box<HashMap<String, oneshot::Receiver<()>>>>,
}

impl Lanes {
    /// Queues `call` in lane `key`: it starts once the call queued before it there finished.
    pub fn queue(&mut self, key: String, call: Pending) -> Pending {
        let tails = self.tails.get_or_insert_with(Default::default);
        if tails.len() >= KEEP {
            tails.retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        }
        let (done, tail) = oneshot::channel::<()>();
        let before = tails.insert(key, tail);
        Box::pin(async move {
            if let Some(before) = before {
                let _ = before.await; // resolves (as an error) when that call finished
            }
            let result = call.await;
            drop(done);
            result
        })
    }
}
