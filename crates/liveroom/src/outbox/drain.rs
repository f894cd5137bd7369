//! [`Drain`]: what a writer takes from an outbox in one go, and the helpers that frame it
//! (plain messages for a custom server, one `{"type":"batch"}` frame built in place).

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// What the writer takes from the outbox in one go. Reuse it across calls: draining swaps the
/// queues, so a steady connection allocates nothing.
#[derive(Debug, Default)]
pub struct Drain {
    /// Payloads of pongs to send.
    pub pongs: Vec<Bytes>,
    /// Replies and acks, in order; they go before events.
    pub replies: Vec<Bytes>,
    /// Event envelopes, in order; may be sent as one `{"type":"batch"}` frame.
    pub events: Vec<Out>,
    /// Close the socket with this code after writing the rest.
    pub close: Option<u16>,
}

impl Drain {
    /// Nothing to write and no close.
    pub fn is_empty(&self) -> bool {
        self.pongs.is_empty()
            && self.replies.is_empty()
            && self.events.is_empty()
            && self.close.is_none()
    }

    pub(super) fn clear(&mut self) {
        self.pongs.clear();
        self.replies.clear();
        self.events.clear();
        self.close = None;
    }
}

/// One queued event item: a single envelope, or several published together (a cursor tick),
/// shared by every subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// One event envelope.
    One(Bytes),
    /// Several event envelopes, in order.
    Many(Arc<[Bytes]>),
}

impl Out {
    /// Payload bytes held.
    pub fn len(&self) -> usize {
        match self {
            Out::One(b) => b.len(),
            Out::Many(v) => v.iter().map(Bytes::len).sum(),
        }
    }

    /// Holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn each(&self, f: &mut impl FnMut(&Bytes)) {
        match self {
            Out::One(b) => f(b),
            Out::Many(v) => v.iter().for_each(f),
        }
    }
}

impl From<Bytes> for Out {
    fn from(b: Bytes) -> Self {
        Out::One(b)
    }
}

impl Drain {
    /// How many event envelopes were drained.
    pub fn event_count(&self) -> usize {
        self.events
            .iter()
            .map(|e| match e {
                Out::One(_) => 1,
                Out::Many(v) => v.len(),
            })
            .sum()
    }

    /// Whether the events go out as one `{"type":"batch"}` message: the client sent
    /// `caps:["batch"]` and there are two or more.
    pub fn batches(&self, batch: bool) -> bool {
        batch && self.event_count() >= 2
    }

    /// Every text message to send, in order: pongs are not included (see [`Drain::pongs`]).
    /// With `batch`, two or more events become one `{"type":"batch","events":[...]}` message.
    pub fn messages(&self, batch: bool) -> Vec<Bytes> {
        let mut out = self.replies.clone();
        if self.batches(batch) {
            let mut buf = BytesMut::with_capacity(self.batch_len());
            self.write_batch(&mut buf);
            out.push(buf.freeze());
        } else {
            self.each_event(|b| out.push(b.clone()));
        }
        out
    }

    /// Calls `f` with every event envelope, in order.
    pub fn each_event(&self, mut f: impl FnMut(&Bytes)) {
        self.events.iter().for_each(|e| e.each(&mut f));
    }

    /// The length of the `{"type":"batch"}` message [`write_batch`](Self::write_batch) writes.
    pub fn batch_len(&self) -> usize {
        let n = self.event_count();
        BATCH_OPEN.len()
            + BATCH_CLOSE.len()
            + n.saturating_sub(1)
            + self.events.iter().map(Out::len).sum::<usize>()
    }

    /// Appends every event as one `{"type":"batch","events":[...]}` message to `buf`, copying
    /// each shared envelope once.
    pub fn write_batch(&self, buf: &mut BytesMut) {
        buf.put_slice(BATCH_OPEN);
        let mut first = true;
        self.each_event(|b| {
            if !first {
                buf.put_u8(b',');
            }
            first = false;
            buf.put_slice(b);
        });
        buf.put_slice(BATCH_CLOSE);
    }
}

const BATCH_OPEN: &[u8] = b"{\"type\":\"batch\",\"events\":[";
const BATCH_CLOSE: &[u8] = b"]}";
