//! The liveroom demo board: a collaborative kanban board.
//!
//! - [`app`]: the registry: room `collab/board` (cards, presence, cursors, actions), stream
//!   `boards/list`, RPCs `boards/create`, `me/get`, `me/update`.
//! - [`db`]: boards and cards in SQLite or Postgres.
//! - [`identity`]: the `lr_user` / `lr_name` / `lr_color` cookies and the upgrade hook.
//! - [`web`]: the embedded Svelte front end.

pub mod app;
pub mod db;
pub mod identity;
pub mod web;

pub use app::{app, manifest, Options};
pub use db::Store;
