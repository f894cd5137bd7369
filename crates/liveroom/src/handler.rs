//! The plumbing between typed handlers and the wire: erasing a handler (its args parsed by
//! [`Params`], its result serialized once, the app's state handed in), and the [`Gate`] that
//! every stream and room call passes first (its guard, then its topic).
//!
//! Everything here is generic over the handler's types (and the app's state) at registration and
//! type-erased after, so the layers above deal only in `Vec<Value>` args and [`Reply`] bytes.

use crate::args::{schema_of, Params, SchemaFn};
use crate::ctx::Ctx;
use crate::error::{code, LiveError};
use crate::protocol::validate_topic;
use futures_util::future::BoxFuture;
use schemars::JsonSchema;
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

/// A typed loader of initial data, given the stream's topic; its result already serialized.
pub(crate) type InitFn<A, S> =
    Arc<dyn Fn(Ctx<S>, Arc<str>, A) -> BoxFuture<'static, Reply> + Send + Sync>;

type TopicFn<A, S> = Arc<dyn Fn(&Ctx<S>, &A) -> String + Send + Sync>;
type GuardFn<A, S> =
    Arc<dyn Fn(Ctx<S>, A) -> BoxFuture<'static, Result<(), LiveError>> + Send + Sync>;

/// Serializes a handler's result once, into the bytes that go on the wire.
pub(crate) fn to_raw<T: Serialize>(value: T) -> Reply {
    serde_json::value::to_raw_value(&value).map_err(|e| {
        tracing::error!(error = %e, "result does not serialize");
        LiveError::internal()
    })
}

/// An RPC handler, erased: its args, its result's schema and the call itself.
pub(crate) struct Erased {
    pub call: CallFn,
    pub params: Params,
    pub result: SchemaFn,
}

/// Erases a typed RPC handler of an app with state `state`: args parsed into `A` (a wrong arg
/// answers `VALIDATION` without calling it), result serialized once.
pub(crate) fn erase_call<S, A, R, F, Fut>(state: S, handler: F) -> Erased
where
    S: Clone + Send + Sync + 'static,
    A: DeserializeOwned + JsonSchema + Send + 'static,
    R: Serialize + JsonSchema,
    F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, LiveError>> + Send + 'static,
{
    let params = Params::of::<A>();
    let handler = Arc::new(handler);
    let p = params.clone();
    let call: CallFn = Arc::new(move |ctx, args| {
        let parsed = p.parse::<A>(args, 0);
        let ctx = ctx.with_state(state.clone());
        let handler = handler.clone();
        Box::pin(async move { to_raw(handler(ctx, parsed?).await?) })
    });
    Erased {
        call,
        params,
        result: schema_of::<R>,
    }
}

/// What a stream or room call passes before anything else happens: its guard (if any), then its
/// topic function. The topic function never sees a caller the guard refused.
pub(crate) struct Gate<A, S> {
    topic: TopicFn<A, S>,
    guard: Option<GuardFn<A, S>>,
}

impl<A: Clone + Send + 'static, S: Clone + Send + 'static> Gate<A, S> {
    pub(crate) fn new(topic: impl Fn(&Ctx<S>, &A) -> String + Send + Sync + 'static) -> Self {
        Gate {
            topic: Arc::new(topic),
            guard: None,
        }
    }

    pub(crate) fn set_guard<F, Fut>(&mut self, guard: F)
    where
        F: Fn(Ctx<S>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), LiveError>> + Send + 'static,
    {
        self.guard = Some(Arc::new(move |ctx, args| Box::pin(guard(ctx, args))));
    }

    /// Runs the guard, then the topic function. Resolves to the (validated) topic.
    pub(crate) async fn pass(&self, ctx: &Ctx<S>, args: &A) -> Result<Arc<str>, LiveError> {
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
fn guard_error<S>(ctx: &Ctx<S>, e: LiveError) -> LiveError {
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
