//! The naming rules of protocol.md section 2: RPC paths and topics.

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
