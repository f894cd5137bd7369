//! [`Merge`]: how a client folds a stream's live events into its value (protocol.md section 4).

use crate::protocol::StreamReply;
use serde_json::Value;

/// How the client merges live events into a stream's value.
///
/// ```
/// use liveroom::Merge;
/// let newest_first = Merge::crud("id").prepend().max(100);
/// let chat = Merge::latest(50);
/// # let _ = (newest_first, chat);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// Keyed list: `created` upserts, `updated` replaces, `deleted` removes.
    Crud {
        /// Key field of the items.
        key: String,
        /// New items go first.
        prepend: bool,
        /// Cap on the list length.
        max: Option<usize>,
    },
    /// Every event appends; keeps the last `max`.
    Latest {
        /// How many to keep.
        max: usize,
    },
    /// Every event replaces the value.
    Set,
    /// Presence roster: `join` upserts by `.key`, `leave` removes.
    Presence,
    /// Cursor positions: `update` upserts by `.key`, `remove` removes.
    Cursor,
}

impl Merge {
    /// `crud` keyed by `key`.
    pub fn crud(key: impl Into<String>) -> Self {
        Merge::Crud {
            key: key.into(),
            prepend: false,
            max: None,
        }
    }

    /// `latest`, keeping the last `max` events.
    pub fn latest(max: usize) -> Self {
        Merge::Latest { max }
    }

    /// `set`.
    pub fn set() -> Self {
        Merge::Set
    }

    /// For `crud`: new items go first. No effect on other modes.
    pub fn prepend(mut self) -> Self {
        if let Merge::Crud { prepend, .. } = &mut self {
            *prepend = true;
        }
        self
    }

    /// For `crud` and `latest`: cap the length.
    pub fn max(mut self, n: usize) -> Self {
        match &mut self {
            Merge::Crud { max, .. } => *max = Some(n),
            Merge::Latest { max } => *max = n,
            _ => {}
        }
        self
    }

    /// The wire name of the mode.
    pub fn name(&self) -> &'static str {
        match self {
            Merge::Crud { .. } => "crud",
            Merge::Latest { .. } => "latest",
            Merge::Set => "set",
            Merge::Presence => "presence",
            Merge::Cursor => "cursor",
        }
    }

    /// The options echoed in a stream reply.
    pub(crate) fn reply<'a>(&'a self, topic: &'a str) -> StreamReply<'a> {
        let (key, max, prepend) = match self {
            Merge::Crud { key, prepend, max } => (Some(key.as_str()), *max, *prepend),
            Merge::Latest { max } => (None, Some(*max), false),
            _ => (None, None, false),
        };
        StreamReply {
            topic,
            merge: self.name(),
            key,
            max,
            prepend,
            seq: 0,
            replay: None,
        }
    }

    /// The manifest description of the mode.
    pub(crate) fn describe(&self) -> Value {
        let r = self.reply("");
        let mut v = serde_json::json!({ "merge": r.merge });
        if let Some(k) = r.key {
            v["key"] = k.into();
        }
        if let Some(m) = r.max {
            v["max"] = m.into();
        }
        if r.prepend {
            v["prepend"] = true.into();
        }
        v
    }

    /// Initial value when a stream has no loader.
    pub(crate) fn empty(&self) -> Value {
        match self {
            Merge::Set => Value::Null,
            _ => Value::Array(Vec::new()),
        }
    }
}
