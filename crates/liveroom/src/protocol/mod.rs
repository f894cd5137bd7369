//! The wire protocol of protocol.md sections 1-4, in three parts that read like the spec:
//! - [`names`]: what a valid RPC path and a valid topic are;
//! - [`decode`](mod@decode): the frames a client sends, decoded strictly, with reasons;
//! - [`encode`]: the frames the server sends, written straight into bytes.

pub mod decode;
pub mod encode;
pub mod names;

pub use decode::{decode, Call, Frame, FrameError, MAX_BATCH, MAX_DEPTH, MAX_TOPICS};
pub use encode::{
    batch_reply, envelope, envelope_into, error_frame, health, put_array, reply, reply_body,
    subscribe_ack, truncated, truncated_into, welcome, StreamReply, HEALTH_TOPIC, NOOP, RESUMED,
    TRUNCATED,
};
pub use names::{valid_path, validate_topic, TopicError};

/// How many bytes `value` takes as JSON, without building the string.
pub(crate) fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
