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
//! use liveroom::{App, Ctx, JsonSchema, LiveError, Room, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Deserialize, JsonSchema)]
//! #[serde(rename_all = "camelCase")]
//! struct Board { board_id: String }           // room args: ["b1"]
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct AddCard { title: String }            // addCard("b1", "Buy milk")
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Card { id: String, title: String }
//!
//! # async fn run() -> std::io::Result<()> {
//! let board = Room::new(|_ctx: &Ctx, b: &Board| format!("board:{}", b.board_id))
//!     .init(|_ctx, _board| async move { Ok::<_, LiveError>(Vec::<Card>::new()) })
//!     .presence(|ctx| serde_json::json!({ "name": ctx.user().and_then(|u| u.get("name")) }))
//!     .cursors(true)
//!     .guard(|ctx, _board| async move {
//!         if ctx.is_guest() { return Err(LiveError::unauthenticated("Sign in first")); }
//!         Ok(())
//!     })
//!     .action("addCard", |ctx, Board { board_id }, AddCard { title }| async move {
//!         let card = Card { id: format!("{board_id}-{title}"), title };
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
//! Handlers share state through [`App::with_state`] and [`Ctx::state`]; args are named by their
//! type (a struct's fields, in order), and every type's JSON Schema goes into the
//! [manifest](Live::manifest), from which `liveroom codegen` writes typed TypeScript.
//!
//! ## Crate map
//! One file per concern, in layers: each module uses only the layers above it in this list
//! (CI checks the graph is acyclic with `scripts/check-module-cycles.py`).
//!
//! 1. **Wire.** [`error`]: [`LiveError`] and the protocol's error codes. [`close`]: the close
//!    codes. [`ws`]: the RFC 6455 codec. [`protocol`]: client frames decoded strictly, server
//!    frames encoded straight into bytes.
//! 2. **Delivery.** [`outbox`]: the per-connection queue, bounded in bytes, that one writer
//!    drains at a time. [`rate`]: token buckets ([`RateLimit`]). [`replay`]: sequence numbers
//!    and replay buffers ([`Replay`]). [`conn`]: the connection
//!    record and its [`Limits`]. [`hub`]: the
//!    sharded topic table and the [`Bus`](hub::Bus) seam to other replicas.
//!    [`presence_store`]: the [`PresenceStore`](presence_store::PresenceStore) seam and its
//!    in-memory implementation.
//! 3. **Handlers.** [`auth`]: what the upgrade hook sees. [`ctx`]: what handlers get.
//!    `args`: a handler's args named by their type, parsed with the path of what is wrong, and
//!    their schemas. `handler`: typed handlers erased (state in, result serialized once), and the
//!    gate every stream and room passes (guard, then topic). [`merge`] and [`stream`]: streams. [`room`]: rooms, whose data part is a stream,
//!    with their presence tracker and cursor tables.
//! 4. **Registry.** [`registry`]: the builder [`App`] and the built [`Live`]; [`manifest`]:
//!    its description for code generators.
//! 5. **Connections.** [`session`]: one connection's state machine (ordered calls, resume and
//!    replay included), and the
//!    [`Hooks`](session::Hooks) for running inside your own server. [`server`]: the accept loop and its caps, axum routes,
//!    the upgrade, one reader and one writer per socket, graceful shutdown. [`metrics`]: the
//!    Prometheus exporter.
//! 6. **Cluster.** [`cluster`]: Redis-backed event bus (with cluster-wide seqs and replay
//!    buffers) and presence for several replicas, plugged into the seams of layer 2; on a
//!    standalone Redis or a Redis Cluster (one room per hash slot, sharded pub/sub).

#![warn(missing_docs)]

mod args;
pub mod auth;
pub mod close;
pub mod cluster;
pub mod conn;
pub mod ctx;
pub mod error;
mod handler;
pub mod hub;
pub mod manifest;
pub mod merge;
pub mod metrics;
pub mod outbox;
pub mod presence_store;
pub mod protocol;
pub mod rate;
pub mod registry;
pub mod replay;
pub mod room;
pub mod server;
pub mod session;
pub mod stream;
pub mod ws;

pub use auth::{Reject, UpgradeRequest};
pub use conn::Limits;
pub use ctx::Ctx;
pub use error::{Issue, LiveError};
pub use merge::Merge;
pub use rate::RateLimit;
pub use registry::{App, Live};
pub use replay::Replay;
pub use room::{Cursors, Room, RoomCtx};
/// Derive it on args, results, data, presence and cursor types: their schemas go into the
/// manifest, and generated TypeScript follows them.
pub use schemars::JsonSchema;
pub use server::{Running, Server, ServerConfig};
pub use stream::Stream;

/// The README's examples are compiled as doctests, so they keep working as written.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
