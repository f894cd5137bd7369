//! [`Ctx`]: what every handler, loader and guard is given about the call.

use crate::conn::Conn;
use crate::error::LiveError;
use crate::hub::Hub;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// The context of one call: who is calling, on which connection, the app's shared state, and a
/// way to publish.
///
/// `S` is the state given to [`App::with_state`](crate::App::with_state) (`()` for
/// [`App::new`](crate::App::new)); [`Ctx::state`] hands it to handlers, so they need no clones of
/// their own. Cheap to clone (two `Arc`s and a clone of the state).
///
/// ```no_run
/// # use liveroom::{App, Ctx, LiveError};
/// App::new().rpc("chat/send", |ctx: Ctx, (text,): (String,)| async move {
///     let from = ctx.identity().to_string();
///     ctx.publish("chat", "created", &serde_json::json!({ "id": text.len(), "from": from, "text": text }))?;
///     Ok(())
/// });
/// ```
#[derive(Clone)]
pub struct Ctx<S = ()> {
    pub(crate) conn: Arc<Conn>,
    pub(crate) hub: Arc<Hub>,
    state: S,
}

impl<S> std::fmt::Debug for Ctx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("conn", &self.conn.id)
            .field("identity", &self.conn.identity)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The context of a call on `conn` (the erased layers carry no state).
    pub(crate) fn new(conn: Arc<Conn>, hub: Arc<Hub>) -> Self {
        Ctx {
            conn,
            hub,
            state: (),
        }
    }

    /// The same call, seen by a handler of an app with state `state`.
    pub(crate) fn with_state<S>(self, state: S) -> Ctx<S> {
        Ctx {
            conn: self.conn,
            hub: self.hub,
            state,
        }
    }
}

impl<S> Ctx<S> {
    /// The app's shared state ([`App::with_state`](crate::App::with_state)).
    ///
    /// ```
    /// use liveroom::{App, Ctx, LiveError};
    /// use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
    ///
    /// let app = App::with_state(Arc::new(AtomicU64::new(0)))
    ///     .rpc("hits/add", |ctx: Ctx<Arc<AtomicU64>>, ()| async move {
    ///         Ok::<_, LiveError>(ctx.state().fetch_add(1, Ordering::Relaxed) + 1)
    ///     });
    /// # let _ = app;
    /// ```
    pub fn state(&self) -> &S {
        &self.state
    }

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

    /// Replaces what others see of the caller in the room whose data topic is `room_topic`
    /// (its presence data): announced as a `join` upsert, kept for late joiners, on every
    /// replica. `Ok(false)` when the caller is not a member of that room on this server. In a
    /// room's actions, [`RoomCtx::set_presence`](crate::room::RoomCtx::set_presence) knows the
    /// topic.
    ///
    /// ```no_run
    /// # use liveroom::{App, Ctx, LiveError};
    /// App::new().rpc("me/away", |ctx: Ctx, (board,): (String,)| async move {
    ///     let me = serde_json::json!({ "name": ctx.identity(), "status": "away" });
    ///     ctx.set_presence(&format!("board:{board}"), &me).await
    /// });
    /// ```
    pub async fn set_presence(
        &self,
        room_topic: &str,
        data: &impl Serialize,
    ) -> Result<bool, LiveError> {
        let data = serde_json::to_value(data)?;
        let Some(members) = self.hub.members() else {
            return Ok(false);
        };
        Ok(members.set(room_topic, self.identity(), data).await)
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
