//! [`Ctx`]: what every handler, loader and guard is given about the call.

use crate::conn::Conn;
use crate::error::LiveError;
use crate::hub::Hub;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// The context of one call: who is calling, on which connection, and a way to publish.
///
/// Cheap to clone (two `Arc`s).
///
/// ```no_run
/// # use liveroom::{App, Ctx, LiveError};
/// App::new().rpc("chat/send", |ctx: Ctx, (text,): (String,)| async move {
///     let from = ctx.identity().to_string();
///     ctx.publish("chat", "created", &serde_json::json!({ "id": text.len(), "from": from, "text": text }))?;
///     Ok(())
/// });
/// ```
#[derive(Clone, Debug)]
pub struct Ctx {
    pub(crate) conn: Arc<Conn>,
    pub(crate) hub: Arc<Hub>,
}

impl Ctx {
    /// The user the upgrade hook returned, `None` for guests.
    pub fn user(&self) -> Option<&Value> {
        self.conn.user.as_ref()
    }

    /// The connection id, unique within this process.
    pub fn conn_id(&self) -> u64 {
        self.conn.id
    }

    /// The identity key (protocol.md section 5): `user.id`, `user_id`, `userId`, or a guest key.
    pub fn identity(&self) -> &str {
        &self.conn.identity
    }

    /// Whether the caller has no user identity (a `__guest_<n>` key).
    pub fn is_guest(&self) -> bool {
        self.conn.is_guest()
    }

    /// The plain denial: `UNAUTHENTICATED` for guests, `FORBIDDEN` otherwise. Guards that
    /// return it answer exactly like a call to a path that does not exist when
    /// [`Limits::mask_unknown_paths`](crate::Limits::mask_unknown_paths) is on, so probing
    /// cannot tell them apart.
    ///
    /// ```
    /// # use liveroom::{Ctx, LiveError, Room};
    /// Room::new(|_: &Ctx, (id,): &(String,)| format!("doc:{id}"))
    ///     .guard(|ctx, (id,)| async move {
    ///         if id.starts_with("private-") { return Err(ctx.deny()); }
    ///         Ok::<_, LiveError>(())
    ///     });
    /// ```
    pub fn deny(&self) -> LiveError {
        if self.is_guest() {
            LiveError::unauthenticated("Authentication required")
        } else {
            LiveError::forbidden("Access denied")
        }
    }

    /// Publishes `event` with `data` to every subscriber of `topic` (on every replica in
    /// cluster mode). `data` is serialized once.
    pub fn publish(
        &self,
        topic: &str,
        event: &str,
        data: &impl Serialize,
    ) -> Result<(), LiveError> {
        self.hub.publish_value(topic, event, data)
    }
}
