//! Running liveroom inside your own WebSocket server instead of [`liveroom::Server`].
//!
//! The transport here is tokio-tungstenite; all liveroom needs is the connection hooks:
//! `connect` after the upgrade, `message` for each text frame, `unsubscribe` if you route that
//! frame yourself, `close` when the socket ends, and a writer that waits on the session's
//! outbox (`outbox().next(&mut drain)`) and sends `drain.messages(batch)`.
//!
//! It serves the seed room only (`collab/board`, through `room_hooks`): other paths answer
//! `NOT_FOUND`.
//!
//! ```text
//! cargo run -p liveroom --example custom_server
//! # then connect a client to ws://127.0.0.1:3001/?user=alice
//! ```

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use liveroom::outbox::Drain;
use liveroom::session::Hooks;
use liveroom::{App, Ctx, JsonSchema, Live, LiveError, Room};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// The board's cards, shared by its handlers as the app's state.
#[derive(Default)]
pub struct Cards {
    by_board: Mutex<HashMap<String, Vec<Value>>>,
    next: AtomicU64,
}

/// The board room's args: `[boardId]`.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    board_id: String,
}

/// `addCard(boardId, title)`.
#[derive(Deserialize, JsonSchema)]
pub struct AddCard {
    title: String,
}

/// The seed room: a board with cards, presence, cursors, a guard requiring a user, and an
/// `addCard` action publishing `created`.
pub fn app(grace: Duration) -> App<Arc<Cards>> {
    let board = Room::new(|_ctx: &Ctx<Arc<Cards>>, b: &Board| format!("board:{}", b.board_id))
        .init(|ctx, Board { board_id }| {
            let list = ctx.state().by_board.lock().unwrap().get(&board_id).cloned();
            async move { Ok::<_, LiveError>(list.unwrap_or_default()) }
        })
        .presence(|ctx| json!({ "name": ctx.user().and_then(|u| u.get("name")) }))
        .cursors(true)
        .grace(grace)
        .guard(|ctx, _args| async move {
            if ctx.is_guest() {
                return Err(LiveError::unauthenticated("Sign in first"));
            }
            Ok(())
        })
        .action(
            "addCard",
            |ctx, Board { board_id }, AddCard { title }| async move {
                let id = ctx.state().next.fetch_add(1, Ordering::Relaxed) + 1;
                let card = json!({ "id": id, "title": title });
                let mut cards = ctx.state().by_board.lock().unwrap();
                cards.entry(board_id).or_default().push(card.clone());
                drop(cards);
                ctx.publish("created", &card)?;
                Ok(card)
            },
        );
    App::with_state(Arc::default()).room("collab", "board", board)
}

/// Accepts WebSocket connections on `listener` forever, serving the board room of `live`.
pub async fn serve(listener: TcpListener, live: Live) -> std::io::Result<()> {
    let hooks = live.room_hooks("collab", "board");
    loop {
        let (stream, _) = listener.accept().await?;
        let hooks = hooks.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(hooks, stream).await {
                eprintln!("connection ended: {e}");
            }
        });
    }
}

/// The user of a connection: `?user=<id>&name=<name>` (a real app checks a cookie or token).
fn user_of(query: Option<&str>) -> Option<Value> {
    let params: HashMap<&str, &str> = query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let id = params.get("user")?;
    Some(json!({ "id": id, "name": params.get("name").unwrap_or(id) }))
}

/// `Some(topic)` for a wire `{"type":"unsubscribe"}` frame.
fn unsubscribe_topic(text: &str) -> Option<String> {
    if !text.contains("\"unsubscribe\"") {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    (v["type"] == "unsubscribe").then(|| v["topic"].as_str().map(str::to_owned))?
}

// The upgrade callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn connection(hooks: Hooks, stream: TcpStream) -> Result<(), tungstenite::Error> {
    let mut user = None;
    let ws = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        user = user_of(req.uri().query());
        Ok(resp)
    })
    .await?;
    let (mut sink, mut frames) = ws.split();
    let mut session = hooks.connect(user);
    let mut drain = Drain::default();
    let result = loop {
        tokio::select! {
            frame = frames.next() => match frame {
                Some(Ok(Message::Text(text))) => match unsubscribe_topic(&text) {
                    // Routing a frame to a hook yourself (this one is what `message` would do
                    // with it anyway).
                    Some(topic) => hooks.unsubscribe(&mut session, &topic),
                    None => hooks.message(&mut session, &text).await,
                },
                Some(Ok(Message::Binary(_))) => session.binary(),
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {} // tungstenite answers pings itself
                Some(Err(e)) => break Err(e),
            },
            () = session.outbox().next(&mut drain) => {
                if let Err(e) = write(&mut sink, &drain, session.outbox().batch()).await {
                    break Err(e);
                }
                if drain.close.is_some() {
                    break Ok(());
                }
            }
        }
    };
    // Completes the close handshake (answers the client's close frame, if it sent one).
    let _ = sink.close().await;
    hooks.close(session);
    result
}

/// Sends what one drain of the outbox took, as one flush: replies first, then events (as one
/// `{"type":"batch"}` frame when the client sent `caps:["batch"]`), then the close frame if the
/// session asked for one (1013 for a slow consumer cut off, for instance).
async fn write(
    sink: &mut SplitSink<WebSocketStream<TcpStream>, Message>,
    drain: &Drain,
    batch: bool,
) -> Result<(), tungstenite::Error> {
    for text in drain.messages(batch) {
        let text = Utf8Bytes::try_from(text).expect("liveroom frames are UTF-8");
        sink.feed(Message::Text(text)).await?;
    }
    if let Some(code) = drain.close {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        sink.feed(Message::Close(Some(frame))).await?;
    }
    sink.flush().await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let live = app(Duration::from_secs(5)).build();
    let listener = TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on ws://{}/?user=alice", listener.local_addr()?);
    serve(listener, live).await
}
