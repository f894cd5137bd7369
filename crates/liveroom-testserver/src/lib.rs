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
    App, Ctx, Cursors, JsonSchema, LiveError, Merge, Reject, Room, RoomCtx, Stream, UpgradeRequest,
};
use serde::{Deserialize, Serialize};
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
    /// Cursor positions per second each observer of a board gets at most.
    pub cursor_budget: u32,
    /// Listed members of a board at most.
    pub presence_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: liveroom::room::DEFAULT_GRACE,
            cursor_throttle: liveroom::Cursors::DEFAULT_THROTTLE,
            cursor_budget: liveroom::Cursors::DEFAULT_BUDGET,
            presence_limit: liveroom::room::presence::DEFAULT_LISTED_LIMIT,
        }
    }
}

/// What a board member may share of its own (awareness): the card it edits, whether it types.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)] // only checked, never read
struct Awareness {
    editing: Option<String>,
    typing: Option<bool>,
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
    /// Calls of the board lobby's metadata function (once per room opening).
    pub lobby_opens: AtomicU64,
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
pub fn app(options: &Options) -> (App<Arc<State>>, Arc<State>) {
    let state = Arc::new(State::default());
    let app = streams(rpcs(with_auth(App::with_state(state.clone()))));
    let app = app
        .room("collab", "board", board(options))
        .room("collab", "pair", pair(options))
        .room("collab", "lobby", lobby(options))
        .room("collab", "vault", vault(options));
    (app, state)
}

/// Installs the test app's upgrade hook (see the crate docs) on `app`.
pub fn with_auth<S: Clone + Send + Sync + 'static>(app: App<S>) -> App<S> {
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

/// The test app's context: its handlers share one [`State`].
type TestCtx = Ctx<Arc<State>>;

/// `test/add`'s args: `[a, b]`.
#[derive(Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

/// `test/publish`'s args: `[topic, event, data]`.
#[derive(Deserialize, JsonSchema)]
struct Publish {
    topic: String,
    event: String,
    data: Value,
}

/// `test/log`'s args: `[name, ms]`.
#[derive(Deserialize, JsonSchema)]
struct Log {
    name: String,
    ms: u64,
}

fn rpcs(app: App<Arc<State>>) -> App<Arc<State>> {
    // `echo` takes any args (a `Vec` takes them all); `fail`, `validate` and `slow` keep tuple
    // args, named by position.
    app.rpc("test/echo", |_ctx: TestCtx, args: Vec<Value>| async move {
        Ok(args)
    })
    // A plain RPC changing the caller's presence in a board (server-side awareness).
    .rpc(
        "test/away",
        |ctx: TestCtx, (board,): (String,)| async move {
            let me = json!({ "name": ctx.identity(), "status": "away" });
            ctx.set_presence(&format!("board:{board}"), &me).await
        },
    )
    .rpc("test/add", |_ctx: TestCtx, Add { a, b }| async move {
        Ok(a + b)
    })
    .rpc(
        "test/fail",
        |_ctx: TestCtx, (code, message): (String, String)| async move {
            Err::<(), _>(LiveError::new(code, message))
        },
    )
    .rpc(
        "test/validate",
        |_ctx: TestCtx, (title,): (String,)| async move {
            if title.is_empty() {
                return Err(LiveError::validation("title", "must not be empty"));
            }
            Ok(title)
        },
    )
    .rpc("test/leak", |_ctx: TestCtx, (): ()| async move {
        Err::<(), _>(std::io::Error::other(
            "password=hunter2 on db.internal:5432",
        ))?;
        Ok(())
    })
    .rpc(
        "test/publish",
        |ctx: TestCtx, Publish { topic, event, data }| async move {
            if topic == "items" {
                crud_apply(&mut ctx.state().items.lock().unwrap(), &event, &data);
            }
            ctx.publish(&topic, &event, &data)
        },
    )
    .rpc("test/slow", |_ctx: TestCtx, (ms,): (u64,)| async move {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
        Ok(ms)
    })
    .rpc("test/log", |ctx: TestCtx, Log { name, ms }| async move {
        tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
        ctx.state().log.lock().unwrap().push(name.clone());
        Ok(name)
    })
    .rpc("test/whoami", |ctx: TestCtx, (): ()| async move {
        Ok(json!({ "identity": ctx.identity(), "user": ctx.user(), "guest": ctx.is_guest() }))
    })
    // A slow query: it does not hold up the connection's other calls.
    .concurrent("test/slow")
}

/// `test/topic`'s args: `[name]`.
#[derive(Clone, Deserialize, JsonSchema)]
struct TopicName {
    name: String,
}

fn streams(app: App<Arc<State>>) -> App<Arc<State>> {
    app.stream(
        "test/items",
        Stream::new("items").init(|ctx: TestCtx, ()| {
            ctx.state().loads.fetch_add(1, Ordering::Relaxed);
            let list = ctx.state().items.lock().unwrap().clone();
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
        Stream::with_topic(|_ctx, t: &TopicName| format!("t:{}", t.name)),
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

/// What others see of a member: `{name}`.
#[derive(Serialize, JsonSchema)]
struct Member {
    name: Option<Value>,
}

fn name_of<S>(ctx: &Ctx<S>) -> Member {
    Member {
        name: ctx.user().and_then(|u| u.get("name")).cloned(),
    }
}

/// The board room's args: `[boardId]`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Board {
    board_id: String,
}

/// `addCard`'s args.
#[derive(Deserialize, JsonSchema)]
struct AddCard {
    title: String,
}

/// `addCardAfter`'s args.
#[derive(Deserialize, JsonSchema)]
struct AddCardAfter {
    title: String,
    ms: u64,
}

/// `editCard`'s args.
#[derive(Deserialize, JsonSchema)]
struct EditCard {
    id: String,
    title: String,
}

/// `deleteCard`'s args.
#[derive(Deserialize, JsonSchema)]
struct DeleteCard {
    id: String,
}

/// The seed room (see the crate docs).
fn board(options: &Options) -> Room<Board, Arc<State>> {
    Room::new(|_ctx: &TestCtx, b: &Board| format!("board:{}", b.board_id))
        .init(|ctx, Board { board_id }| {
            let state = ctx.state();
            state.loads.fetch_add(1, Ordering::Relaxed);
            let cards = state.cards.lock().unwrap().get(&board_id).cloned();
            async move {
                if board_id == "broken" {
                    return Err(LiveError::from(std::io::Error::other("database is down")));
                }
                Ok(cards.unwrap_or_default())
            }
        })
        .presence(|ctx| match ctx.user() {
            Some(user) if user["hidden"] == true => None,
            _ => Some(name_of(ctx)),
        })
        .presence_limit(options.presence_limit)
        .awareness::<Awareness>()
        .cursors(Cursors::throttle(options.cursor_throttle).budget(options.cursor_budget))
        .grace(options.grace)
        .lobby_guard(|ctx| async move {
            if ctx.is_guest() {
                return Err(LiveError::unauthenticated("Sign in first"));
            }
            Ok(())
        })
        .lobby_meta(|ctx, Board { board_id }| async move {
            ctx.state().lobby_opens.fetch_add(1, Ordering::Relaxed);
            json!({ "title": format!("Board {board_id}") })
        })
        .action("setStatus", |ctx, _board, (status,): (String,)| async move {
            let me = json!({ "name": ctx.identity(), "status": status });
            ctx.set_presence(&me).await
        })
        .guard(|ctx, _| async move {
            if ctx.is_guest() {
                return Err(LiveError::unauthenticated("Sign in first"));
            }
            if ctx.identity() == "mallory" {
                return Err(LiveError::forbidden("banned"));
            }
            Ok(())
        })
        .action("addCard", |ctx, Board { board_id }, AddCard { title }| async move {
            add_card(&ctx, board_id, title)
        })
        // `addCard` that first waits `ms` (a slow database): calls sent back to back still
        // take effect in order.
        .action(
            "addCardAfter",
            |ctx, Board { board_id }, AddCardAfter { title, ms }| async move {
                tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
                add_card(&ctx, board_id, title)
            },
        )
        .action(
            "editCard",
            |ctx, Board { board_id }, EditCard { id, title }| async move {
                let mut cards = ctx.state().cards.lock().unwrap();
                let list = cards.entry(board_id).or_default();
                let Some(card) = list.iter_mut().find(|c| c["id"] == id.as_str()) else {
                    return Err(LiveError::not_found("no such card"));
                };
                card["title"] = title.into();
                let card = card.clone();
                drop(cards);
                ctx.publish("updated", &card)?;
                Ok(card)
            },
        )
        .action(
            "deleteCard",
            |ctx, Board { board_id }, DeleteCard { id }| async move {
                let mut cards = ctx.state().cards.lock().unwrap();
                cards
                    .entry(board_id)
                    .or_default()
                    .retain(|c| c["id"] != id.as_str());
                drop(cards);
                ctx.publish("deleted", &json!({ "id": id }))?;
                Ok(json!({ "id": id }))
            },
        )
        .action("fail", |_ctx, _, (): ()| async move {
            Err::<(), _>(LiveError::new("BOOM", "the action failed on purpose"))
        })
        .on_join(|state, e| record(&state.joins, e))
        .on_leave(|state, e| record(&state.leaves, e))
}

/// Stores a new card on `board` and publishes `created`.
fn add_card(ctx: &RoomCtx<Arc<State>>, board: String, title: String) -> Result<Value, LiveError> {
    let state = ctx.state();
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

/// The pair room's args: `[a, b]`.
#[derive(Clone, Deserialize, JsonSchema)]
struct Pair {
    a: String,
    b: String,
}

/// `note`'s args.
#[derive(Deserialize, JsonSchema)]
struct Note {
    text: String,
}

/// Two room args; `note` echoes them with the room's topic.
fn pair(options: &Options) -> Room<Pair, Arc<State>> {
    Room::new(|_ctx: &TestCtx, p: &Pair| format!("pair:{}:{}", p.a, p.b))
        .presence(name_of)
        .grace(options.grace)
        .action("note", |ctx, Pair { a, b }, Note { text }| async move {
            let id = ctx.state().id();
            let note = json!({ "id": id, "a": a, "b": b, "text": text, "topic": ctx.topic() });
            ctx.publish("created", &note)?;
            Ok(note)
        })
}

/// What others see of a lobby member.
#[derive(Serialize, JsonSchema)]
struct Visitor {
    guest: bool,
}

fn lobby(options: &Options) -> Room<(), Arc<State>> {
    Room::new(|_ctx, (): &()| "lobby".to_owned())
        .presence(|ctx| Visitor {
            guest: ctx.is_guest(),
        })
        .cursors(true)
        .grace(options.grace)
}

fn vault(options: &Options) -> Room<(String,), Arc<State>> {
    Room::new(|_ctx, (id,): &(String,)| format!("vault:{id}"))
        .grace(options.grace)
        .guard(|_ctx, _| async move {
            Err::<(), _>(std::io::Error::other("vault backend is down"))?;
            Ok(())
        })
        .action("open", |_ctx, _, (): ()| async move { Ok("opened") })
}
