//! The test app: one of every liveroom feature, kept in memory. The `liveroom-testserver`
//! binary serves it for the JS client suites, the cluster tests and the benchmark; the
//! library's integration tests start it in-process. One app, so every suite tests the same
//! server.
//!
//! - Identity: `?user=<id>&name=<name>` (or the `lr_user` / `lr_name` cookies) is a user,
//!   `?hidden=1` marks a user whose room presence is `null`, `?reject=401|403` is refused at the
//!   upgrade, anything else is a guest.
//! - `test/*`: RPCs (`echo`, `add`, `fail`, `validate`, `leak`, `publish`, `slow`, `log`,
//!   `whoami`; `slow` is concurrent, the others run in order) and streams of every merge mode (`items`, `recent`, `feed`, `value`, `topic`) and
//!   failure (`denied`, `broken`, `reserved`). Topics starting with `open:` may be subscribed
//!   from the wire.
//! - `collab/board`: the seed room. Topic `board:<id>`, its cards as initial data (the id
//!   `broken` fails to load), presence `{name}`, cursors, a guard that refuses guests and
//!   `mallory`, and the actions `addCard`, `addCardAfter` (a slow `addCard`), `editCard`,
//!   `deleteCard` and `fail`. `State::loads` counts the board's and `test/items`' loads.
//! - `collab/pair`: two room args (`pair:<a>:<b>`), presence, and a `note` action.
//! - `collab/lobby`: guests welcome, presence `{guest}` and cursors.
//! - `collab/vault`: a guard that fails with a plain error.

use liveroom::{
    App, Ctx, Cursors, LiveError, Merge, Reject, Room, RoomCtx, Stream, UpgradeRequest,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the test app.
#[derive(Debug, Clone)]
pub struct Options {
    /// Leave grace of every room.
    pub grace: Duration,
    /// Cursor throttle of the board.
    pub cursor_throttle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: liveroom::room::DEFAULT_GRACE,
            cursor_throttle: liveroom::Cursors::DEFAULT_THROTTLE,
        }
    }
}

/// The app's "database", and what its handlers and hooks recorded.
#[derive(Default)]
pub struct State {
    /// The `items` list behind `test/items` (kept in step by `test/publish`).
    pub items: Mutex<Vec<Value>>,
    /// Cards per board id.
    pub cards: Mutex<HashMap<String, Vec<Value>>>,
    /// Names logged by `test/log`, in completion order.
    pub log: Mutex<Vec<String>>,
    /// `on_join` calls of the board room, as `(topic, key)`.
    pub joins: Mutex<Vec<(String, String)>>,
    /// `on_leave` calls of the board room, as `(topic, key)`.
    pub leaves: Mutex<Vec<(String, String)>>,
    /// Calls of the loaders of `test/items` and of the board's data (a replay calls none).
    pub loads: AtomicU64,
    next: AtomicU64,
}

impl State {
    /// A fresh id (`"1"`, `"2"`, ...).
    fn id(&self) -> String {
        (self.next.fetch_add(1, Ordering::Relaxed) + 1).to_string()
    }

    /// How many times `key` joined the board room.
    pub fn joins_of(&self, key: &str) -> usize {
        count_key(&self.joins, key)
    }

    /// How many times `key` left the board room.
    pub fn leaves_of(&self, key: &str) -> usize {
        count_key(&self.leaves, key)
    }
}

/// Merges an event into a `crud` list keyed by `id`, as the client does (and as `test/publish`
/// keeps the `items` list, so its stream's init stays truthful).
pub fn crud_apply(list: &mut Vec<Value>, event: &str, data: &Value) {
    let at = list.iter().position(|i| i["id"] == data["id"]);
    match (event, at) {
        ("created" | "updated", Some(i)) => list[i] = data.clone(),
        ("created", None) => list.push(data.clone()),
        ("deleted", Some(i)) => {
            list.remove(i);
        }
        _ => {}
    }
}

fn count_key(log: &Mutex<Vec<(String, String)>>, key: &str) -> usize {
    log.lock().unwrap().iter().filter(|(_, k)| k == key).count()
}

/// The test app (see the crate docs) and its state.
pub fn app(options: &Options) -> (App, Arc<State>) {
    let state = Arc::new(State::default());
    let app = rpcs(with_auth(App::new()), &state);
    let app = streams(app, &state);
    let app = app
        .room("collab", "board", board(&state, options))
        .room("collab", "pair", pair(&state, options))
        .room("collab", "lobby", lobby(options))
        .room("collab", "vault", vault(options));
    (app, state)
}

/// Installs the test app's upgrade hook (see the crate docs) on `app`.
pub fn with_auth(app: App) -> App {
    app.authenticate(|req: UpgradeRequest| async move { user_of(&req) })
}

fn user_of(req: &UpgradeRequest) -> Result<Option<Value>, Reject> {
    match req.query("reject") {
        Some("401") => return Err(Reject::Unauthenticated),
        Some("403") => return Err(Reject::Forbidden),
        _ => {}
    }
    let id = req.query("user").or_else(|| req.cookie("lr_user"));
    let name = req.query("name").or_else(|| req.cookie("lr_name"));
    Ok(id.map(|id| {
        let mut user = json!({ "id": id, "name": name.unwrap_or(id) });
        if req.query("hidden").is_some() {
            user["hidden"] = true.into();
        }
        user
    }))
}

fn rpcs(app: App, state: &Arc<State>) -> App {
    let (publish, log) = (state.clone(), state.clone());
    app.rpc("test/echo", |_ctx: Ctx, args: Vec<Value>| async move {
        Ok(args)
    })
    .rpc("test/add", |_ctx: Ctx, (a, b): (i64, i64)| async move {
        Ok(a + b)
    })
    .rpc(
        "test/fail",
        |_ctx: Ctx, (code, message): (String, String)| async move {
            Err::<(), _>(LiveError::new(code, message))
        },
    )
    .rpc(
        "test/validate",
        |_ctx: Ctx, (title,): (String,)| async move {
            if title.is_empty() {
                return Err(LiveError::validation("title", "must not be empty"));
            }
            Ok(title)
        },
    )
    .rpc("test/leak", |_ctx: Ctx, (): ()| async move {
        Err::<(), _>(std::io::Error::other(
            "password=hunter2 on db.internal:5432",
        ))?;
        Ok(())
    })
    .rpc(
        "test/publish",
        move |ctx: Ctx, (topic, event, data): (String, String, Value)| {
            let state = publish.clone();
            async move {
                if topic == "items" {
                    crud_apply(&mut state.items.lock().unwrap(), &event, &data);
                }
                ctx.publish(&topic, &event, &data)
            }
        },
    )
    .rpc("test/slow", |_ctx: Ctx, (ms,): (u64,)| async move {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
        Ok(ms)
    })
    .rpc("test/log", move |_ctx: Ctx, (name, ms): (String, u64)| {
        let state = log.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
            state.log.lock().unwrap().push(name.clone());
            Ok(name)
        }
    })
    .rpc("test/whoami", |ctx: Ctx, (): ()| async move {
        Ok(json!({ "identity": ctx.identity(), "user": ctx.user(), "guest": ctx.is_guest() }))
    })
    // A slow query: it does not hold up the connection's other calls.
    .concurrent("test/slow")
}

fn streams(app: App, state: &Arc<State>) -> App {
    let items = state.clone();
    app.stream(
        "test/items",
        Stream::new("items").init(move |_ctx, ()| {
            items.loads.fetch_add(1, Ordering::Relaxed);
            let list = items.items.lock().unwrap().clone();
            async move { Ok::<_, LiveError>(list) }
        }),
    )
    .stream(
        "test/recent",
        Stream::new("recent").merge(Merge::crud("id").prepend().max(10)),
    )
    .stream("test/feed", Stream::new("feed").merge(Merge::latest(5)))
    .stream(
        "test/value",
        Stream::new("value")
            .init(|_ctx, ()| async { Ok::<_, LiveError>(json!({ "n": 0 })) })
            .merge(Merge::set()),
    )
    .stream(
        "test/topic",
        Stream::with_topic(|_ctx, (name,): &(String,)| format!("t:{name}")).args(["name"]),
    )
    .stream(
        "test/denied",
        Stream::new("denied").guard(|_ctx, ()| async { Err(LiveError::forbidden("never")) }),
    )
    .stream(
        "test/broken",
        Stream::new("broken").init(|_ctx, ()| async {
            Err::<(), _>(std::io::Error::other("database password=hunter2"))?;
            Ok(())
        }),
    )
    .stream("test/reserved", Stream::new("__sneaky"))
    .allow_subscribe(|_ctx, topic| topic.starts_with("open:"))
}

/// `{name}` of the user, for presence.
fn name_of(ctx: &Ctx) -> Value {
    json!({ "name": ctx.user().and_then(|u| u.get("name")).cloned() })
}

/// The seed room (see the crate docs).
fn board(state: &Arc<State>, options: &Options) -> Room<(String,)> {
    let (init, add, edit, delete) = (state.clone(), state.clone(), state.clone(), state.clone());
    let slow_add = state.clone();
    let (joins, leaves) = (state.clone(), state.clone());
    Room::new(|_ctx: &Ctx, (board,): &(String,)| format!("board:{board}"))
        .args(["boardId"])
        .init(move |_ctx, (board,): (String,)| {
            init.loads.fetch_add(1, Ordering::Relaxed);
            let cards = init.cards.lock().unwrap().get(&board).cloned();
            async move {
                if board == "broken" {
                    return Err(LiveError::from(std::io::Error::other("database is down")));
                }
                Ok(cards.unwrap_or_default())
            }
        })
        .presence(|ctx| match ctx.user() {
            Some(user) if user["hidden"] == true => Value::Null,
            _ => name_of(ctx),
        })
        .cursors(Cursors::throttle(options.cursor_throttle))
        .grace(options.grace)
        .guard(|ctx, _| async move {
            if ctx.is_guest() {
                return Err(LiveError::unauthenticated("Sign in first"));
            }
            if ctx.identity() == "mallory" {
                return Err(LiveError::forbidden("banned"));
            }
            Ok(())
        })
        .action(
            "addCard",
            move |ctx: RoomCtx, (board,): (String,), (title,): (String,)| {
                let state = add.clone();
                async move { add_card(&state, &ctx, board, title) }
            },
        )
        .action_args("addCard", ["title"])
        // `addCard` that first waits `ms` (a slow database): calls sent back to back still
        // take effect in order.
        .action(
            "addCardAfter",
            move |ctx: RoomCtx, (board,): (String,), (title, ms): (String, u64)| {
                let state = slow_add.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
                    add_card(&state, &ctx, board, title)
                }
            },
        )
        .action_args("addCardAfter", ["title", "ms"])
        .action(
            "editCard",
            move |ctx: RoomCtx, (board,): (String,), (id, title): (String, String)| {
                let state = edit.clone();
                async move {
                    let mut cards = state.cards.lock().unwrap();
                    let list = cards.entry(board).or_default();
                    let Some(card) = list.iter_mut().find(|c| c["id"] == id.as_str()) else {
                        return Err(LiveError::not_found("no such card"));
                    };
                    card["title"] = title.into();
                    let card = card.clone();
                    drop(cards);
                    ctx.publish("updated", &card)?;
                    Ok(card)
                }
            },
        )
        .action_args("editCard", ["id", "title"])
        .action(
            "deleteCard",
            move |ctx: RoomCtx, (board,): (String,), (id,): (String,)| {
                let state = delete.clone();
                async move {
                    let mut cards = state.cards.lock().unwrap();
                    cards
                        .entry(board)
                        .or_default()
                        .retain(|c| c["id"] != id.as_str());
                    drop(cards);
                    ctx.publish("deleted", &json!({ "id": id }))?;
                    Ok(json!({ "id": id }))
                }
            },
        )
        .action_args("deleteCard", ["id"])
        .action("fail", |_ctx: RoomCtx, _: (String,), (): ()| async move {
            Err::<(), _>(LiveError::new("BOOM", "the action failed on purpose"))
        })
        .on_join(move |e| record(&joins.joins, e))
        .on_leave(move |e| record(&leaves.leaves, e))
}

/// Stores a new card on `board` and publishes `created`.
fn add_card(
    state: &State,
    ctx: &RoomCtx,
    board: String,
    title: String,
) -> Result<Value, LiveError> {
    let card = json!({ "id": state.id(), "title": title, "by": ctx.identity() });
    let mut cards = state.cards.lock().unwrap();
    cards.entry(board).or_default().push(card.clone());
    drop(cards);
    ctx.publish("created", &card)?;
    Ok(card)
}

fn record(log: &Mutex<Vec<(String, String)>>, e: &liveroom::room::PresenceEvent) {
    log.lock()
        .unwrap()
        .push((e.topic.to_string(), e.key.to_string()));
}

/// Two room args; `note` echoes them with the room's topic.
fn pair(state: &Arc<State>, options: &Options) -> Room<(String, String)> {
    let state = state.clone();
    Room::new(|_ctx: &Ctx, (a, b): &(String, String)| format!("pair:{a}:{b}"))
        .args(["a", "b"])
        .presence(name_of)
        .grace(options.grace)
        .action(
            "note",
            move |ctx: RoomCtx, (a, b): (String, String), (text,): (String,)| {
                let id = state.id();
                async move {
                    let note =
                        json!({ "id": id, "a": a, "b": b, "text": text, "topic": ctx.topic() });
                    ctx.publish("created", &note)?;
                    Ok(note)
                }
            },
        )
        .action_args("note", ["text"])
}

fn lobby(options: &Options) -> Room<()> {
    Room::new(|_ctx: &Ctx, (): &()| "lobby".to_owned())
        .presence(|ctx| json!({ "guest": ctx.is_guest() }))
        .cursors(true)
        .grace(options.grace)
}

fn vault(options: &Options) -> Room<(String,)> {
    Room::new(|_ctx: &Ctx, (id,): &(String,)| format!("vault:{id}"))
        .grace(options.grace)
        .guard(|_ctx, (_id,): (String,)| async move {
            Err::<(), _>(std::io::Error::other("vault backend is down"))?;
            Ok(())
        })
        .action("open", |_ctx: RoomCtx, _: (String,), (): ()| async move {
            Ok("opened")
        })
}
