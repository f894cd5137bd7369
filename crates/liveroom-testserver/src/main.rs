//! `liveroom-testserver`: a server with one of everything, kept in memory, for the JS client
//! suites, the cluster tests and the benchmark. It prints `LISTENING http://<addr>` once ready.

use clap::Parser;
use liveroom::{
    App, Ctx, LiveError, Merge, Reject, Room, RoomCtx, Server, ServerConfig, Stream, UpgradeRequest,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    server: ServerConfig,
    /// Leave grace of the rooms, in milliseconds.
    #[arg(long, env = "LIVEROOM_GRACE_MS", default_value_t = 5000)]
    grace_ms: u64,
    /// Cursor throttle of the rooms, in milliseconds.
    #[arg(long, env = "LIVEROOM_CURSOR_MS", default_value_t = 50)]
    cursor_ms: u64,
    /// Redis URL: switches on cluster mode.
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
}

/// The in-memory "database".
#[derive(Default)]
struct Db {
    items: Mutex<Vec<Value>>,
    cards: Mutex<HashMap<String, Vec<Value>>>,
    next: AtomicU64,
}

impl Db {
    fn id(&self) -> String {
        format!("{}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Applies a crud event to the `items` list, so its stream's init stays truthful.
    fn apply(&self, event: &str, data: &Value) {
        let mut items = self.items.lock().unwrap();
        let id = &data["id"];
        let at = items.iter().position(|i| &i["id"] == id);
        match (event, at) {
            ("created" | "updated", Some(i)) => items[i] = data.clone(),
            ("created", None) => items.push(data.clone()),
            ("deleted", Some(i)) => {
                items.remove(i);
            }
            _ => {}
        }
    }
}

fn user_of(req: &UpgradeRequest) -> Result<Option<Value>, Reject> {
    match req.query("reject") {
        Some("401") => return Err(Reject::Unauthenticated),
        Some("403") => return Err(Reject::Forbidden),
        _ => {}
    }
    let id = req.query("user").or_else(|| req.cookie("lr_user"));
    let name = req.query("name").or_else(|| req.cookie("lr_name"));
    Ok(id.map(|id| json!({ "id": id, "name": name.unwrap_or(id) })))
}

fn app(db: Arc<Db>, grace: Duration, cursor: Duration) -> App {
    let board = {
        let (init_db, add_db, edit_db, del_db) = (db.clone(), db.clone(), db.clone(), db.clone());
        Room::new(|_ctx: &Ctx, (board,): &(String,)| format!("board:{board}"))
            .args(["boardId"])
            .init(move |_ctx, (board,): (String,)| {
                let cards = init_db
                    .cards
                    .lock()
                    .unwrap()
                    .get(&board)
                    .cloned()
                    .unwrap_or_default();
                async move { Ok::<_, LiveError>(cards) }
            })
            .presence(|ctx| json!({ "name": ctx.user().and_then(|u| u.get("name")).cloned() }))
            .cursors(liveroom::Cursors::throttle(cursor))
            .grace(grace)
            .guard(|ctx, _| async move {
                if ctx.is_guest() {
                    return Err(LiveError::unauthenticated("Sign in to open boards"));
                }
                Ok(())
            })
            .action(
                "addCard",
                move |ctx: RoomCtx, (board,): (String,), (title,): (String,)| {
                    let db = add_db.clone();
                    async move {
                        let card = json!({ "id": db.id(), "title": title });
                        db.cards
                            .lock()
                            .unwrap()
                            .entry(board)
                            .or_default()
                            .push(card.clone());
                        ctx.publish("created", &card)?;
                        Ok(card)
                    }
                },
            )
            .action_args("addCard", ["title"])
            .action(
                "editCard",
                move |ctx: RoomCtx, (board,): (String,), (id, title): (String, String)| {
                    let db = edit_db.clone();
                    async move {
                        let card = json!({ "id": id, "title": title });
                        let mut cards = db.cards.lock().unwrap();
                        let list = cards.entry(board).or_default();
                        let Some(slot) = list.iter_mut().find(|c| c["id"] == card["id"]) else {
                            return Err(LiveError::not_found("no such card"));
                        };
                        *slot = card.clone();
                        drop(cards);
                        ctx.publish("updated", &card)?;
                        Ok(card)
                    }
                },
            )
            .action(
                "deleteCard",
                move |ctx: RoomCtx, (board,): (String,), (id,): (String,)| {
                    let db = del_db.clone();
                    async move {
                        db.cards
                            .lock()
                            .unwrap()
                            .entry(board)
                            .or_default()
                            .retain(|c| c["id"] != id.as_str());
                        ctx.publish("deleted", &json!({ "id": id }))?;
                        Ok(json!({ "id": id }))
                    }
                },
            )
            .action("fail", |_ctx: RoomCtx, _: (String,), (): ()| async move {
                Err::<(), _>(LiveError::new("BOOM", "the action failed on purpose"))
            })
    };
    let pair = {
        let db = db.clone();
        Room::new(|_ctx: &Ctx, (a, b): &(String, String)| format!("pair:{a}:{b}"))
            .args(["a", "b"])
            .presence(|ctx| json!({ "name": ctx.user().and_then(|u| u.get("name")).cloned() }))
            .grace(grace)
            .action(
                "note",
                move |ctx: RoomCtx, (a, b): (String, String), (text,): (String,)| {
                    let id = db.id();
                    async move {
                        let note = json!({ "id": id, "text": text, "a": a, "b": b });
                        ctx.publish("created", &note)?;
                        Ok(note)
                    }
                },
            )
    };
    let (pub_db, items_db) = (db.clone(), db.clone());
    App::new()
        .authenticate(|req: UpgradeRequest| async move { user_of(&req) })
        .rpc("test/echo", |_ctx: Ctx, args: Vec<Value>| async move {
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
            "test/publish",
            move |ctx: Ctx, (topic, event, data): (String, String, Value)| {
                let db = pub_db.clone();
                async move {
                    if topic == "items" {
                        db.apply(&event, &data);
                    }
                    ctx.publish(&topic, &event, &data)?;
                    Ok(())
                }
            },
        )
        .rpc("test/slow", |_ctx: Ctx, (ms,): (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
            Ok(ms)
        })
        .rpc("test/whoami", |ctx: Ctx, (): ()| async move {
            Ok(json!({ "identity": ctx.identity(), "user": ctx.user() }))
        })
        .stream(
            "test/items",
            Stream::new("items")
                .init(move |_ctx, ()| {
                    let items = items_db.items.lock().unwrap().clone();
                    async move { Ok::<_, LiveError>(items) }
                })
                .merge(Merge::crud("id")),
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
            Stream::with_topic(|_ctx, (t,): &(String,)| format!("t:{t}")).args(["name"]),
        )
        .stream(
            "test/denied",
            Stream::new("denied").guard(|_ctx, ()| async { Err(LiveError::forbidden("never")) }),
        )
        .stream(
            "test/broken",
            Stream::new("broken").init(|_ctx, ()| async {
                Err::<(), _>(std::io::Error::other("database is down"))?;
                Ok(())
            }),
        )
        .room("collab", "board", board)
        .room("collab", "pair", pair)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut app = app(
        Arc::new(Db::default()),
        Duration::from_millis(args.grace_ms),
        Duration::from_millis(args.cursor_ms),
    );
    if let Some(url) = &args.redis_url {
        app = liveroom::cluster::enable(app, url)
            .await
            .map_err(std::io::Error::other)?;
    }
    let running = Server::new(app).config(args.server).start().await?;
    println!("LISTENING http://{}", running.addr());
    // Make sure the line reaches a parent reading our stdout through a pipe.
    use std::io::Write;
    std::io::stdout().flush()?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        Ok::<_, std::io::Error>(())
    };
    stop.await?;
    running.shutdown().await
}
