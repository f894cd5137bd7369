//! [`LiveError`]: the error every handler returns, and the codes of protocol.md section 3.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Error codes the protocol defines. Apps may use any other code too.
pub mod code {
    /// Bad path, args or frame.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// No such path.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// No user identity where one is required.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The user is known but not allowed.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// Input failed validation; see [`Issue`](super::Issue).
    pub const VALIDATION: &str = "VALIDATION";
    /// Too many calls.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The server is shedding load.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// Anything unexpected; the message never carries the underlying error text.
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
}

/// One validation problem: where (`path` into the args) and what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// Path into the input, e.g. `["title"]` or `[1]`.
    pub path: Vec<serde_json::Value>,
    /// Human readable message.
    pub message: String,
}

/// The error of an RPC, stream load, guard or action: a `code` the client can switch on and a
/// `message` for humans.
///
/// Any `std::error::Error` converts into an `INTERNAL_ERROR` (logged, never sent to the client),
/// so `?` works on database and I/O errors inside handlers:
///
/// ```
/// use liveroom::LiveError;
///
/// fn parse(n: &str) -> Result<u32, LiveError> {
///     if n.is_empty() {
///         return Err(LiveError::validation("n", "must not be empty"));
///     }
///     Ok(n.parse::<u32>()?) // ParseIntError becomes INTERNAL_ERROR
/// }
/// assert_eq!(parse("").unwrap_err().code(), "VALIDATION");
/// assert_eq!(parse("x").unwrap_err().code(), "INTERNAL_ERROR");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LiveError {
    code: Cow<'static, str>,
    message: String,
    issues: Vec<Issue>,
    /// For `RATE_LIMITED`: when to try again, in milliseconds (`retryAfter` on the wire).
    retry_after_ms: Option<u64>,
}

impl LiveError {
    /// An error with an app-defined or protocol code.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        LiveError {
            code: code.into(),
            message: message.into(),
            issues: Vec::new(),
            retry_after_ms: None,
        }
    }

    /// `INVALID_REQUEST`: the frame or the args are malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_REQUEST, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, message)
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(code::UNAUTHENTICATED, message)
    }

    /// `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(code::FORBIDDEN, message)
    }

    /// `VALIDATION` with one issue at `field`.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        LiveError {
            code: Cow::Borrowed(code::VALIDATION),
            issues: vec![Issue {
                path: vec![serde_json::Value::String(field.to_owned())],
                message: message.clone(),
            }],
            message,
            retry_after_ms: None,
        }
    }

    /// `RATE_LIMITED`, to be retried after `retry_after` (sent as `retryAfter`, in ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = liveroom::LiveError::rate_limited("slow down", Duration::from_millis(250));
    /// assert_eq!((e.code(), e.retry_after()), ("RATE_LIMITED", Some(Duration::from_millis(250))));
    /// ```
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        LiveError {
            retry_after_ms: Some(retry_after.as_millis().max(1) as u64),
            ..Self::new(code::RATE_LIMITED, message)
        }
    }

    /// `OVERLOADED`: the server sheds this call; the client may retry.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(code::OVERLOADED, message)
    }

    /// `INTERNAL_ERROR` with a generic message.
    pub fn internal() -> Self {
        Self::new(code::INTERNAL_ERROR, "Internal server error")
    }

    /// Adds a validation issue (the code is left as is).
    pub fn with_issue(mut self, path: Vec<serde_json::Value>, message: impl Into<String>) -> Self {
        self.issues.push(Issue {
            path,
            message: message.into(),
        });
        self
    }

    /// The code, e.g. `"FORBIDDEN"`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Validation issues (empty for other errors).
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// When a `RATE_LIMITED` call may be retried.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after_ms.map(Duration::from_millis)
    }
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

// `LiveError` deliberately does not implement `std::error::Error`: that is what lets this blanket
// conversion exist without overlapping `From<T> for T`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for LiveError {
    fn from(err: E) -> Self {
        tracing::error!(error = %err, "handler failed");
        LiveError::internal()
    }
}
