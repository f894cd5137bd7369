//! The wire protocol of protocol.md sections 1-4, in three parts that read like the spec:
//! - [`names`]: what a valid RPC path and a valid topic are;
//! - [`decode`](mod@decode): the frames a client sends, decoded strictly, with reasons;
//! - [`encode`]: the frames the server sends, written straight into bytes.

pub mod decode;
pub mod encode;
pub mod names;

pub use decode::{decode, Call, Frame, FrameError, MAX_BATCH, MAX_DEPTH, MAX_TOPICS};
pub use encode::{
    batch_reply, envelope, envelope_into, error_frame, put_array, reply, reply_body, subscribe_ack,
    truncated, truncated_into, welcome, StreamReply, NOOP, RESUMED, TRUNCATED,
};
pub use names::{valid_path, validate_topic, TopicError};
