//! # liveroom
//!
//! Collaborative rooms over WebSocket, speaking the svelte-realtime 0.5 wire protocol: an
//! unmodified svelte-realtime client, liveroom's JS client and the Rust client all work.
//!
//! A [`Room`] bundles, under a topic computed from its args, a data stream (initial data, then
//! `created`/`updated`/`deleted`), presence (refcounted per user across tabs, with a leave
//! grace), cursors, a guard, and actions whose publishes go to the room.
//!
//! ```no_run
//! use liveroom::{App, Ctx, LiveError, Room, RoomCtx, Server};
//! use serde_json::{json, Value};
//!
//! # async fn run() -> std::io::Result<()> {
//! let board = Room::new(|_ctx: &Ctx, (board_id,): &(String,)| format!("board:{board_id}"))
//!     .init(|_ctx, (_board_id,): (String,)| async move { Ok::<_, LiveError>(Vec::<Value>::new()) })
//!     .presence(|ctx| json!({ "name": ctx.user().and_then(|u| u.get("name")) }))
//!     .cursors(true)
//!     .guard(|ctx, _args| async move {
//!         if ctx.is_guest() { return Err(LiveError::new("UNAUTHORIZED", "Sign in first")); }
//!         Ok(())
//!     })
//!     .action("addCard", |ctx: RoomCtx, (board_id,): (String,), (title,): (String,)| async move {
//!         let card = json!({ "id": format!("{board_id}-{title}"), "title": title });
//!         ctx.publish("created", &card)?;
//!         Ok(card)
//!     });
//!
//! Server::new(App::new().room("collab", "board", board))
//!     .bind("127.0.0.1:3000")
//!     .run()
//!     .await
//! # }
//! ```
//!
//! ## Crate map
//! One file per concern, in the order a frame flows through them:
//! - [`server`]: axum routes, the WebSocket upgrade, one reader and one writer per socket,
//!   graceful shutdown. [`ws`] is the RFC 6455 codec it uses.
//! - [`protocol`]: decoding client frames (strictly, with reasons) and encoding server frames.
//! - [`session`]: one connection's state machine: subscriptions, calls, batches, room
//!   membership; also the [`Hooks`](session::Hooks) for running inside your own server.
//! - [`app`]: the registry builder [`App`] and the built [`Live`]; [`stream`] and [`room`]
//!   are what it registers; [`ctx`] is what handlers get; [`error`] their error type.
//! - [`hub`]: the sharded topic table; [`outbox`]: the per-connection bounded queue that the
//!   writer drains in one go; [`conn`]: the connection record they share.
//! - [`cluster`]: Redis-backed event bus and presence for several replicas.
//! - [`metrics`]: the Prometheus exporter; [`auth`]: what the upgrade hook sees.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod cluster;
pub mod conn;
pub mod ctx;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod room;
pub mod server;
pub mod session;
pub mod stream;
pub mod ws;

pub use app::{App, Limits, Live};
pub use auth::{Reject, UpgradeRequest};
pub use ctx::Ctx;
pub use error::{Issue, LiveError};
pub use room::{Cursors, Room, RoomCtx};
pub use server::{Running, Server, ServerConfig};
pub use stream::{Merge, Stream};

/// The README's examples are compiled as doctests, so they keep working as written.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
