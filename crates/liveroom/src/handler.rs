//! The plumbing between typed handlers and the wire: deserializing a call's `args` into the
//! handler's argument type, serializing its result once, and the [`Gate`] that every stream and
//! room call passes first (its guard, then its topic).
//!
//! Everything here is generic over the handler's types at registration and type-erased after,
//! so the layers above deal only in `Vec<Value>` args and [`Reply`] bytes.

use crate::ctx::Ctx;
use crate::error::{code, LiveError};
use crate::protocol::validate_topic;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// A handler's result, already serialized for the wire.
pub(crate) type Reply = Result<Box<RawValue>, LiveError>;

/// A type-erased handler of one call.
pub(crate) type CallFn = Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<'static, Reply> + Send + Sync>;

/// A typed loader of initial data, its result already serialized.
pub(crate) type InitFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<'static, Reply> + Send + Sync>;

type TopicFn<A> = Arc<dyn Fn(&Ctx, &A) -> String + Send + Sync>;
type GuardFn<A> = Arc<dyn Fn(Ctx, A) -> BoxFuture<'static, Result<(), LiveError>> + Send + Sync>;

/// Deserializes a call's `args` array into the handler's argument type.
pub(crate) fn args_from<A: DeserializeOwned>(args: Vec<Value>) -> Result<A, LiveError> {
    // serde reads `()` from `null`, not from `[]`: an empty args list means "no args".
    if args.is_empty() {
        if let Ok(a) = serde_json::from_value(Value::Null) {
            return Ok(a);
        }
    }
    serde_json::from_value(Value::Array(args))
        .map_err(|e| LiveError::invalid(format!("invalid args: {e}")))
}

/// Serializes a handler's result once, into the bytes that go on the wire.
pub(crate) fn to_raw<T: Serialize>(value: T) -> Reply {
    serde_json::value::to_raw_value(&value).map_err(|e| {
        tracing::error!(error = %e, "result does not serialize");
        LiveError::internal()
    })
}

/// Erases a typed RPC handler: args parsed into `A` (wrong arity or types answer
/// `INVALID_REQUEST` without calling it), result serialized once.
pub(crate) fn erase_call<A, R, F, Fut>(handler: F) -> CallFn
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize,
    F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx, args| {
        let parsed = args_from::<A>(args);
        let handler = handler.clone();
        Box::pin(async move { to_raw(handler(ctx, parsed?).await?) })
    })
}

/// Erases the result type of an initial-data loader.
pub(crate) fn erase_init<A, F, Fut, T>(init: F) -> InitFn<A>
where
    F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, LiveError>> + Send + 'static,
    T: Serialize,
{
    Arc::new(move |ctx, args| {
        let fut = init(ctx, args);
        Box::pin(async move { to_raw(fut.await?) })
    })
}

/// What a stream or room call passes before anything else happens: its guard (if any), then its
/// topic function. The topic function never sees a caller the guard refused.
pub(crate) struct Gate<A> {
    topic: TopicFn<A>,
    guard: Option<GuardFn<A>>,
}

impl<A: Clone + Send + 'static> Gate<A> {
    pub(crate) fn new(topic: impl Fn(&Ctx, &A) -> String + Send + Sync + 'static) -> Self {
        Gate {
            topic: Arc::new(topic),
            guard: None,
        }
    }

    pub(crate) fn set_guard<F, Fut>(&mut self, guard: F)
    where
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.guard = Some(Arc::new(move |ctx, args| Box::pin(guard(ctx, args))));
    }

    /// Runs the guard, then the topic function. Resolves to the (validated) topic.
    pub(crate) async fn pass(&self, ctx: &Ctx, args: &A) -> Result<Arc<str>, LiveError> {
        if let Some(guard) = &self.guard {
            guard(ctx.clone(), args.clone())
                .await
                .map_err(|e| guard_error(ctx, e))?;
        }
        checked_topic((self.topic)(ctx, args))
    }
}

/// A guard that failed with a plain (non-`LiveError`) error: `UNAUTHENTICATED` without a user
/// identity, else `FORBIDDEN` (protocol.md section 3).
fn guard_error(ctx: &Ctx, e: LiveError) -> LiveError {
    if e.code() != code::INTERNAL_ERROR {
        return e;
    }
    if ctx.is_guest() {
        LiveError::unauthenticated("Sign in required")
    } else {
        LiveError::forbidden("Forbidden")
    }
}

/// A topic produced by app code must follow the same rules as a client's.
fn checked_topic(topic: String) -> Result<Arc<str>, LiveError> {
    match validate_topic(&topic) {
        Ok(()) => Ok(topic.into()),
        Err(e) => {
            tracing::error!(topic, error = %e, "topic function produced an invalid topic");
            Err(LiveError::internal())
        }
    }
}
