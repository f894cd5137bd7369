//! The board server end to end over its WebSocket: the real binary, on a free port, with a
//! temporary SQLite file.

use liveroom_client::{Client, Error};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// A temporary directory (removed on drop) and the database of one test: a SQLite file in
/// it, or, with `BOARD_TEST_POSTGRES=postgres://user@host:port/db`, a fresh Postgres database
/// created on that server.
struct TempDir(PathBuf, String);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let unique = format!(
            "{tag}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let dir = std::env::temp_dir().join(format!("board-test-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = match std::env::var("BOARD_TEST_POSTGRES") {
            Ok(admin) => postgres_database(&admin, &format!("board_test_{unique}")),
            Err(_) => format!("sqlite://{}", dir.join("b.db").display()),
        };
        TempDir(dir, url)
    }

    fn db_url(&self) -> String {
        self.1.clone()
    }
}

/// Creates database `name` on the server of `admin` and returns its URL.
fn postgres_database(admin: &str, name: &str) -> String {
    use sqlx::Connection;
    let (admin_url, sql) = (admin.to_owned(), format!("CREATE DATABASE {name}"));
    // Its own thread and runtime: the tests call this from inside theirs.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        });
    })
    .join()
    .expect("the Postgres database is created");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database path");
    format!("{base}/{name}")
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `board` binary, killed on drop.
struct Board {
    child: Child,
    addr: String,
}

impl Board {
    fn start(dir: &TempDir) -> Board {
        let mut child = Command::new(env!("CARGO_BIN_EXE_board"))
            .args(["--bind", "127.0.0.1:0", "--database-url", &dir.db_url()])
            .args(["--grace-ms", "300"])
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("BIND")
            .env_remove("LIVEROOM_BIND")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the board binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_owned();
        assert!(
            line.contains("(single process, presence in memory)"),
            "{line}"
        );
        Board { child, addr }
    }

    async fn connect(&self, user: Option<(&str, &str)>) -> Client {
        let url = format!("ws://{}/ws", self.addr);
        let cookie = user.map(|(id, name)| {
            format!(
                "lr_user={id}; lr_name={}; lr_color=%23e11d48",
                name.replace(' ', "%20")
            )
        });
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        Client::connect_with(&url, &headers, true).await.unwrap()
    }

    /// A plain HTTP/1.1 GET: status line + headers, and the body.
    fn get(&self, path: &str, cookie: Option<&str>) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{cookie}Connection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&raw[..split]).into_owned(),
            raw[split + 4..].to_vec(),
        )
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of the first issue of a `VALIDATION` error.
fn issue_path(r: Result<Value, Error>) -> Value {
    match r {
        Err(Error::Rpc { code, issues, .. }) if code == "VALIDATION" => {
            issues.map(|i| i[0]["path"].clone()).unwrap_or_default()
        }
        other => panic!("expected VALIDATION, got {other:?}"),
    }
}

fn code(r: Result<Value, Error>) -> String {
    match r {
        Err(e) => e.code().unwrap_or("not an RPC error").to_owned(),
        Ok(v) => panic!("expected an error, got {v}"),
    }
}

async fn event(c: &mut Client, topic: &str) -> Value {
    c.event_on(topic, WAIT)
        .await
        .unwrap_or_else(|| panic!("no event on {topic}"))
}

const ANN: Option<(&str, &str)> = Some(("ann", "Ann Otter"));
const BOB: Option<(&str, &str)> = Some(("bob", "Bob Badger"));

/// Creates board `id` (the only way a board id comes to exist, besides `boards/create`).
async fn new_board(c: &Client, id: &str) {
    let b = c.call("boards/createWithId", json!([id])).await.unwrap();
    assert_eq!(b["id"], id);
}

#[tokio::test]
async fn guests_are_refused_by_the_guard() {
    let dir = TempDir::new("guard");
    let board = Board::start(&dir);
    let guest = board.connect(None).await;
    for part in ["__data", "__presence", "__cursors"] {
        let r = guest
            .stream(&format!("collab/board/{part}"), json!(["b1"]))
            .await;
        assert_eq!(code(r.map(|s| s.data)), "UNAUTHENTICATED", "{part}");
    }
    let r = guest
        .call("collab/board/__action/addCard", json!(["b1", "hi"]))
        .await;
    assert_eq!(code(r), "UNAUTHENTICATED");
    assert_eq!(guest.call("me/get", json!([])).await.unwrap(), Value::Null);
    let r = guest.call("boards/create", json!(["x"])).await;
    assert_eq!(code(r), "UNAUTHENTICATED");

    // A user is let in; a malformed board id is a validation error, not a crash.
    let ann = board.connect(ANN).await;
    new_board(&ann, "b1").await;
    let s = ann
        .stream("collab/board/__data", json!(["b1"]))
        .await
        .unwrap();
    assert_eq!(s.topic, "board:b1");
    assert_eq!(s.data, json!([]));
    for bad in ["a:b", "", "x y", &"x".repeat(65)] {
        let r = ann.stream("collab/board/__data", json!([bad])).await;
        assert_eq!(code(r.map(|s| s.data)), "VALIDATION", "{bad:?}");
    }
}

#[tokio::test]
async fn validation_and_not_found() {
    let dir = TempDir::new("validation");
    let board = Board::start(&dir);
    let ann = board.connect(ANN).await;
    new_board(&ann, "v").await;
    ann.stream("collab/board/__data", json!(["v"]))
        .await
        .unwrap();
    let add = |title: String| ann.call("collab/board/__action/addCard", json!(["v", title]));
    for title in [String::new(), "   ".into(), "x".repeat(201)] {
        match add(title).await {
            Err(Error::Rpc {
                code,
                message,
                issues,
            }) => {
                assert_eq!(code, "VALIDATION");
                assert_eq!(message, "Title must be 1-200 characters");
                assert_eq!(issues.unwrap()[0]["path"], json!(["title"]));
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }
    let card = add(format!("  {}  ", "y".repeat(200))).await.unwrap();
    assert_eq!(card["title"], "y".repeat(200));
    let id = card["id"].as_str().unwrap();

    let r = ann
        .call("collab/board/__action/editCard", json!(["v", id, " "]))
        .await;
    assert_eq!(code(r), "VALIDATION");
    let r = ann
        .call(
            "collab/board/__action/moveCard",
            json!(["v", id, "later", 1]),
        )
        .await;
    assert_eq!(issue_path(r), json!(["column"]));
    let r = ann
        .call(
            "collab/board/__action/moveCard",
            json!(["v", id, "done", "top"]),
        )
        .await;
    assert_eq!(issue_path(r), json!(["position"]));

    let r = ann
        .call("collab/board/__action/editCard", json!(["v", "nope", "t"]))
        .await;
    assert_eq!(code(r), "NOT_FOUND");
    let r = ann
        .call(
            "collab/board/__action/moveCard",
            json!(["v", "nope", "done", 1]),
        )
        .await;
    assert_eq!(code(r), "NOT_FOUND");
    let r = ann
        .call("collab/board/__action/deleteCard", json!(["v", "nope"]))
        .await;
    assert_eq!(code(r), "NOT_FOUND");
    // A card is only reachable through its own board.
    let r = ann
        .call("collab/board/__action/deleteCard", json!(["other", id]))
        .await;
    assert_eq!(code(r), "NOT_FOUND");
}

#[tokio::test]
async fn actions_publish_to_the_room() {
    let dir = TempDir::new("publish");
    let board = Board::start(&dir);
    let ann = board.connect(ANN).await;
    let mut bob = board.connect(BOB).await;
    new_board(&ann, "team").await;
    ann.stream("collab/board/__data", json!(["team"]))
        .await
        .unwrap();
    let s = bob
        .stream("collab/board/__data", json!(["team"]))
        .await
        .unwrap();
    assert_eq!(s.merge, "crud");
    assert_eq!(s.raw["key"], "id");

    let roster = bob
        .stream("collab/board/__presence", json!(["team"]))
        .await
        .unwrap();
    let ann_entry = roster
        .data
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "ann");
    assert_eq!(
        ann_entry.expect("ann is present")["data"],
        json!({ "name": "Ann Otter", "color": "#e11d48" })
    );

    let card = ann
        .call(
            "collab/board/__action/addCard",
            json!(["team", "Write tests"]),
        )
        .await
        .unwrap();
    let id = card["id"].as_str().unwrap().to_owned();
    assert_eq!(card["boardId"], "team");
    assert_eq!(card["column"], "todo");
    assert_eq!(card["createdBy"], "ann");
    assert!(card["position"].is_number() && card["updatedAt"].is_number());
    let e = event(&mut bob, "board:team").await;
    assert_eq!(e["event"], "created");
    assert_eq!(e["data"], card);

    let second = ann
        .call("collab/board/__action/addCard", json!(["team", "Ship"]))
        .await
        .unwrap();
    assert!(second["position"].as_f64() > card["position"].as_f64());
    assert_eq!(event(&mut bob, "board:team").await["data"], second);

    let edited = ann
        .call(
            "collab/board/__action/editCard",
            json!(["team", id, "Write more tests"]),
        )
        .await
        .unwrap();
    let e = event(&mut bob, "board:team").await;
    assert_eq!(e["event"], "updated");
    assert_eq!(e["data"]["title"], "Write more tests");
    assert_eq!(e["data"], edited);

    let moved = ann
        .call(
            "collab/board/__action/moveCard",
            json!(["team", id, "doing", 2.5]),
        )
        .await
        .unwrap();
    assert_eq!(moved["column"], "doing");
    assert_eq!(moved["position"], 2.5);
    let e = event(&mut bob, "board:team").await;
    assert_eq!((e["event"].as_str(), &e["data"]), (Some("updated"), &moved));

    let gone = bob
        .call("collab/board/__action/deleteCard", json!(["team", id]))
        .await
        .unwrap();
    assert_eq!(gone, json!({ "id": id }));
    let mut ann = ann;
    let mut e = event(&mut ann, "board:team").await;
    while e["event"] != "deleted" {
        e = event(&mut ann, "board:team").await; // ann saw her own changes too
    }
    assert_eq!(e["data"], json!({ "id": id }));

    // Another board hears nothing of this one.
    let carl = board.connect(Some(("carl", "Carl"))).await;
    new_board(&carl, "elsewhere").await;
    let other = carl
        .stream("collab/board/__data", json!(["elsewhere"]))
        .await
        .unwrap();
    assert_eq!(other.data, json!([]));
}

#[tokio::test]
async fn boards_list_create_and_not_found() {
    let dir = TempDir::new("boards");
    let board = Board::start(&dir);
    let mut ann = board.connect(ANN).await;
    let list = ann.stream("boards/list", json!([])).await.unwrap();
    assert_eq!(list.topic, "boards");
    assert_eq!(list.data, json!([]));
    assert_eq!(list.raw["key"], "id");
    assert_eq!(list.raw["prepend"], true);

    let first = ann
        .call("boards/create", json!(["  Sprint planning "]))
        .await
        .unwrap();
    assert_eq!(first["name"], "Sprint planning");
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sprint-planning-"), "{id}");
    let e = event(&mut ann, "boards").await;
    assert_eq!(e["event"], "created");
    assert_eq!(e["data"]["id"], id);
    assert_eq!(e["data"]["name"], "Sprint planning");

    for bad in ["", "   ", &"n".repeat(81)] {
        assert_eq!(
            code(ann.call("boards/create", json!([bad])).await),
            "VALIDATION"
        );
    }

    // A mistyped or not yet created link does not create a board: every part of the room
    // says NOT_FOUND, and nothing is announced.
    let bob = board.connect(BOB).await;
    for part in ["__data", "__presence", "__cursors"] {
        let r = bob
            .stream(&format!("collab/board/{part}"), json!(["shared-link"]))
            .await;
        assert_eq!(code(r.map(|s| s.data)), "NOT_FOUND", "{part}");
    }
    let r = bob
        .call(
            "collab/board/__action/addCard",
            json!(["shared-link", "hi"]),
        )
        .await;
    assert_eq!(code(r), "NOT_FOUND");
    assert!(ann
        .event_on("boards", Duration::from_millis(300))
        .await
        .is_none());
    // Creating it with that id (the page's "create this board" button) announces it once.
    new_board(&bob, "shared-link").await;
    let e = event(&mut ann, "boards").await;
    assert_eq!(e["event"], "created");
    assert_eq!(e["data"]["id"], "shared-link");
    assert_eq!(e["data"]["name"], "shared-link");
    bob.stream("collab/board/__data", json!(["shared-link"]))
        .await
        .unwrap();
    // Twice is fine (two people pressed the button): the same board, no second announcement.
    let carl = board.connect(Some(("carl", "Carl"))).await;
    new_board(&carl, "shared-link").await;
    assert!(ann
        .event_on("boards", Duration::from_millis(300))
        .await
        .is_none());
    for bad in ["a:b", ""] {
        assert_eq!(
            code(carl.call("boards/createWithId", json!([bad])).await),
            "VALIDATION"
        );
    }

    // Newest first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newest = ann.call("boards/create", json!(["Newest"])).await.unwrap();
    let list = bob.stream("boards/list", json!([])).await.unwrap();
    let ids: Vec<&str> = list
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [newest["id"].as_str().unwrap(), "shared-link", &id]);
}

#[tokio::test]
async fn me_get_and_update() {
    let dir = TempDir::new("me");
    let board = Board::start(&dir);
    let ann = board.connect(ANN).await;
    assert_eq!(
        ann.call("me/get", json!([])).await.unwrap(),
        json!({ "id": "ann", "name": "Ann Otter", "color": "#e11d48" })
    );
    assert_eq!(
        ann.call("me/update", json!([" Ann ", "#00AA11"]))
            .await
            .unwrap(),
        json!({ "id": "ann", "name": "Ann", "color": "#00aa11" })
    );
    assert_eq!(
        code(ann.call("me/update", json!(["", "#00aa11"])).await),
        "VALIDATION"
    );
    assert_eq!(
        code(ann.call("me/update", json!(["Ann", "red"])).await),
        "VALIDATION"
    );
}

#[tokio::test]
async fn cards_survive_a_restart() {
    let dir = TempDir::new("restart");
    let board = Board::start(&dir);
    let ann = board.connect(ANN).await;
    new_board(&ann, "keep").await;
    ann.stream("collab/board/__data", json!(["keep"]))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        let c = ann
            .call("collab/board/__action/addCard", json!(["keep", title]))
            .await
            .unwrap();
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    ann.call(
        "collab/board/__action/moveCard",
        json!(["keep", ids[2], "done", 7]),
    )
    .await
    .unwrap();
    ann.call(
        "collab/board/__action/moveCard",
        json!(["keep", ids[1], "todo", 0.5]),
    )
    .await
    .unwrap();
    ann.call(
        "collab/board/__action/editCard",
        json!(["keep", ids[0], "uno"]),
    )
    .await
    .unwrap();
    drop(ann);
    board.kill(); // SIGKILL: only what was committed survives

    let board = Board::start(&dir);
    let bob = board.connect(BOB).await;
    let s = bob
        .stream("collab/board/__data", json!(["keep"]))
        .await
        .unwrap();
    let got: Vec<(String, String, f64)> = s
        .data
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["title"].as_str().unwrap().to_owned(),
                c["column"].as_str().unwrap().to_owned(),
                c["position"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("two".into(), "todo".into(), 0.5),
            ("uno".into(), "todo".into(), 1.0),
            ("three".into(), "done".into(), 7.0),
        ]
    );
    let list = bob.stream("boards/list", json!([])).await.unwrap();
    assert_eq!(list.data[0]["id"], "keep");
}

#[tokio::test]
async fn pages_set_identity_cookies_and_assets_are_cached() {
    let dir = TempDir::new("http");
    let board = Board::start(&dir);
    let (head, body) = board.get("/", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"), "{head}");
    assert!(lower.contains("cache-control: no-cache"), "{head}");
    for cookie in ["lr_user=", "lr_name=", "lr_color=%23"] {
        assert!(
            lower.contains(&format!("set-cookie: {cookie}")),
            "{cookie} missing in {head}"
        );
    }
    assert!(
        head.contains("Path=/")
            && head.contains("SameSite=Lax")
            && head.contains("Max-Age=31536000")
    );
    assert!(String::from_utf8_lossy(&body).contains("<html"));

    // The cookies the page got make a user on the WebSocket.
    let cookies: Vec<&str> = head
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .filter_map(|l| l.split(';').next())
        .collect();
    let cookie = cookies.join("; ");
    let (again, _) = board.get("/", Some(&cookie));
    assert!(
        !again.to_ascii_lowercase().contains("set-cookie"),
        "{again}"
    );
    let url = format!("ws://{}/ws", board.addr);
    let c = Client::connect_with(&url, &[("Cookie", &cookie)], true)
        .await
        .unwrap();
    let me = c.call("me/get", json!([])).await.unwrap();
    let name = me["name"].as_str().unwrap();
    assert_eq!(name.split(' ').count(), 2, "{name}");
    assert!(cookie.contains(&format!("lr_user={}", me["id"].as_str().unwrap())));

    let (head, _) = board.get("/nope.png", None);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = board.get("/some/client/route", None);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist/assets");
    if let Some(js) = std::fs::read_dir(&assets).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(".js"))
    }) {
        let (head, _) = board.get(&format!("/assets/{js}"), None);
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("content-type: text/javascript"), "{head}");
        assert!(lower.contains("immutable"), "{head}");
        assert!(!lower.contains("set-cookie"), "{head}");
    }
}
