//! Helpers for the cluster suite: a private `redis-server` per test, replicas of the real
//! `liveroom-testserver` binary, and WebSocket peers that keep a log of what they received and
//! a merged presence roster (the way the svelte-realtime client merges `join`/`leave`/`set`).
//!
//! Every process is owned by a guard that kills it on drop, so a failing test leaves nothing
//! running. When a test panics, the guards print the replicas' logs.

#![allow(dead_code)] // each test binary uses a different subset

pub mod proxy;
pub mod redis_cluster;

#[allow(unused_imports)] // each test binary uses a different subset
pub use redis_cluster::{presence_key, RedisCluster, TestRedis};

use liveroom_client::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs each named scenario (`async fn name(redis: &dyn TestRedis)`) twice: on a standalone
/// Redis and on a Redis Cluster of three shards.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$name(&super::common::RedisServer::start()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$name(&super::common::RedisCluster::start(3, 0)).await
            }
        }
    )*};
}

/// The room every test uses.
pub const ROOM: &str = "collab/board";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private, non-persistent `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// Extra `redis-server` arguments.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one. Panics with a clear message if `redis-server` is not on PATH.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            panic!(
                "`redis-server` was not found on PATH: the cluster tests start their own private \
                 Redis per test (install it, e.g. `apt-get install redis-server`)"
            );
        }
        let dir = std::env::temp_dir().join(unique("liveroom-cluster-redis"));
        std::fs::create_dir_all(&dir).expect("create redis temp dir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut redis = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            };
            match redis.spawn() {
                Ok(()) => return redis,
                Err(e) => {
                    last = e;
                    redis.dir = PathBuf::new(); // keep the dir for the next attempt
                }
            }
        }
        panic!("could not start redis-server: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("redis-server exited at start ({status})"));
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err("redis-server did not answer PING within 10 s".into())
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart redis-server on the same port");
    }

    /// Whether it runs (not stopped).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A synchronous connection for inspection.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis")
    }

    /// `SMEMBERS key`.
    pub fn smembers(&self, key: &str) -> Vec<String> {
        redis::cmd("SMEMBERS")
            .arg(key)
            .query(&mut self.conn())
            .expect("SMEMBERS")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How a replica is started.
pub struct ReplicaOpts<'a> {
    pub redis: Option<&'a str>,
    pub grace_ms: u64,
    pub env: Vec<(&'a str, String)>,
}

impl<'a> ReplicaOpts<'a> {
    pub fn new(redis: Option<&'a str>, grace_ms: u64) -> Self {
        ReplicaOpts {
            redis,
            grace_ms,
            env: Vec::new(),
        }
    }
}

/// One `liveroom-testserver` process, killed (SIGKILL) on drop.
pub struct Replica {
    pub name: String,
    child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Replica {
    /// Starts a replica (cluster mode with `redis`), with default lease and heartbeat.
    pub fn start(name: &str, redis: Option<&str>, grace_ms: u64) -> Replica {
        Self::start_with(name, ReplicaOpts::new(redis, grace_ms))
    }

    pub fn start_with(name: &str, opts: ReplicaOpts<'_>) -> Replica {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_liveroom-testserver"));
        cmd.args(["--bind", "127.0.0.1:0"])
            .args(["--grace-ms", &opts.grace_ms.to_string()]);
        if let Some(url) = opts.redis {
            cmd.args(["--redis-url", url]);
        }
        // A deterministic environment: nothing leaks in from the caller's shell.
        for k in [
            "REDIS_URL",
            "LIVEROOM_GRACE_MS",
            "LIVEROOM_CURSOR_MS",
            "LIVEROOM_LEASE_MS",
            "LIVEROOM_HEARTBEAT_MS",
            "LIVEROOM_BIND",
            "LIVEROOM_WS_PATH",
            "LIVEROOM_SHUTDOWN_TIMEOUT_MS",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("RUST_LOG", "warn");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn liveroom-testserver");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let out_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("LISTENING http://") {
                    let _ = tx.send(url.trim().to_owned());
                }
                out_log.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let err_log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                err_log
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "replica {name} printed no LISTENING line within 30 s; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Replica {
            name: name.to_owned(),
            child,
            addr,
            log,
        }
    }

    /// The WebSocket URL for `user` (authenticated through the query).
    pub fn ws(&self, user: &str) -> String {
        format!("ws://{}/ws?user={user}&name=N-{user}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            eprintln!(
                "---- replica {} ({}) log ----\n{tail}",
                self.name, self.addr
            );
        }
    }
}

/// A WebSocket client with a log of every event it received and its merged presence roster.
pub struct Peer {
    pub user: String,
    pub client: Client,
    /// Every event received, in order (batch frames unpacked).
    pub log: Vec<Value>,
    /// The merged presence roster: key -> data (`join` upserts, `leave` removes, `set` and
    /// `refreshed` replace).
    pub roster: BTreeMap<String, Value>,
    /// The room's member count from `count` events (the newest version wins).
    pub member_count: Option<u64>,
    count_version: u64,
    presence_topic: Option<String>,
    pub closed: bool,
}

impl Peer {
    /// Connects to `replica` as `user`.
    pub async fn connect(replica: &Replica, user: &str) -> Peer {
        Self::connect_url(&replica.ws(user), user).await
    }

    /// Connects to a URL from [`Replica::ws`] (for spawned tasks, which cannot borrow).
    pub async fn connect_url(url: &str, user: &str) -> Peer {
        let client = Client::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect to {url}: {e}"));
        Self::from_client(client, user)
    }

    /// A peer around an already connected `client`.
    pub fn from_client(client: Client, user: &str) -> Peer {
        Peer {
            user: user.to_owned(),
            client,
            log: Vec::new(),
            roster: BTreeMap::new(),
            member_count: None,
            count_version: 0,
            presence_topic: None,
            closed: false,
        }
    }

    /// Subscribes the room's data stream (makes `user` a member). Returns the initial data.
    pub async fn join(&mut self, board: &str) -> Value {
        let reply = self
            .client
            .stream(&format!("{ROOM}/__data"), json!([board]))
            .await
            .unwrap_or_else(|e| panic!("{} cannot join board {board}: {e}", self.user));
        assert_eq!(reply.topic, format!("board:{board}"));
        reply.data
    }

    /// Subscribes the room's presence stream; the merged roster starts from the reply.
    pub async fn observe(&mut self, board: &str) -> Vec<String> {
        let reply = self
            .client
            .stream(&format!("{ROOM}/__presence"), json!([board]))
            .await
            .unwrap_or_else(|e| panic!("{} cannot observe board {board}: {e}", self.user));
        assert_eq!(reply.merge, "presence");
        self.presence_topic = Some(reply.topic);
        self.roster = list_to_roster(&reply.data);
        self.keys()
    }

    /// Subscribes the room's cursor stream. Returns the snapshot.
    pub async fn cursors(&mut self, board: &str) -> Value {
        self.client
            .stream(&format!("{ROOM}/__cursors"), json!([board]))
            .await
            .unwrap_or_else(|e| panic!("{} cannot open cursors of {board}: {e}", self.user))
            .data
    }

    /// Sends a cursor move (fire-and-forget).
    pub fn move_cursor(&self, board: &str, x: i64, y: i64) {
        self.client.fire(
            &format!("{ROOM}/__cursor"),
            json!([board, { "x": x, "y": y }]),
        );
    }

    /// Runs the `addCard` action; returns the card.
    pub async fn add_card(&self, board: &str, title: &str) -> Value {
        self.client
            .call(&format!("{ROOM}/__action/addCard"), json!([board, title]))
            .await
            .unwrap_or_else(|e| panic!("{} addCard failed: {e}", self.user))
    }

    /// The merged roster's keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.roster.keys().cloned().collect()
    }

    /// Closes the socket (1000).
    pub fn close(&mut self) {
        self.client.close(1000);
    }

    /// Closes the socket and waits (bounded) until the server's side is gone too.
    pub async fn close_and_wait(&mut self) {
        self.close();
        let until = Instant::now() + Duration::from_secs(5);
        self.pump_until(until, |p| p.closed).await;
    }

    fn apply(&mut self, ev: Value) {
        if self.presence_topic.as_deref() == ev["topic"].as_str() {
            let data = &ev["data"];
            match ev["event"].as_str().unwrap_or_default() {
                "join" => {
                    if let Some(k) = data["key"].as_str() {
                        self.roster.insert(k.to_owned(), data["data"].clone());
                    }
                }
                "leave" => {
                    if let Some(k) = data["key"].as_str() {
                        self.roster.remove(k);
                    }
                }
                "set" | "refreshed" => self.roster = list_to_roster(data),
                "count" => {
                    let version = data["version"].as_u64().unwrap_or(0);
                    if version >= self.count_version {
                        self.count_version = version;
                        self.member_count = data["total"].as_u64();
                    }
                }
                _ => {}
            }
        }
        self.log.push(ev);
    }

    fn take(&mut self, frame: Value) {
        if frame["type"] == "batch" {
            for ev in frame["events"].as_array().cloned().unwrap_or_default() {
                self.apply(ev);
            }
        } else if frame["type"] == "__closed" {
            self.closed = true;
        } else if frame.get("topic").is_some() {
            self.apply(frame);
        }
    }

    /// Takes frames until `done(self)` holds (checked first) or `deadline` passes. Returns
    /// whether `done` held.
    pub async fn pump_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Peer) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.closed {
                return done(self);
            }
            match self.client.next_within(left).await {
                Some(frame) => self.take(frame),
                None => {
                    if Instant::now() >= deadline {
                        return done(self);
                    }
                    // `None` before the deadline: the connection is gone.
                    self.closed = true;
                }
            }
        }
    }

    /// Takes every frame arriving within `window` (to assert that something did *not* happen).
    pub async fn settle(&mut self, window: Duration) {
        let until = Instant::now() + window;
        self.pump_until(until, |_| false).await;
    }

    /// Takes whatever already arrived, without waiting.
    pub async fn drain(&mut self) {
        self.settle(Duration::from_millis(1)).await;
    }

    /// Events received on `topic` named `event` (and, if given, with `data.key == key`).
    pub fn events(&self, topic: &str, event: &str, key: Option<&str>) -> Vec<&Value> {
        self.log
            .iter()
            .filter(|e| e["topic"] == topic && e["event"] == event)
            .filter(|e| key.is_none_or(|k| e["data"]["key"] == k))
            .collect()
    }

    pub fn count(&self, topic: &str, event: &str, key: Option<&str>) -> usize {
        self.events(topic, event, key).len()
    }

    /// Presence events (`join`/`leave`) about `key`.
    pub fn presence_count(&self, board: &str, event: &str, key: &str) -> usize {
        self.count(&format!("board:{board}:presence"), event, Some(key))
    }

    /// Waits for a presence `event` about `key` (counting from the start of the log). Returns
    /// whether it arrived.
    pub async fn wait_presence(
        &mut self,
        board: &str,
        event: &str,
        key: &str,
        within: Duration,
    ) -> bool {
        let topic = format!("board:{board}:presence");
        self.pump_until(Instant::now() + within, |p| {
            p.count(&topic, event, Some(key)) > 0
        })
        .await
    }

    /// Waits until the merged roster's keys are exactly `expected`.
    pub async fn wait_roster(&mut self, expected: &[&str], within: Duration) -> bool {
        let want: Vec<String> = sorted(expected);
        self.pump_until(Instant::now() + within, |p| p.keys() == want)
            .await
    }
}

fn list_to_roster(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| Some((i["key"].as_str()?.to_owned(), i["data"].clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Sorted owned strings.
pub fn sorted(keys: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    v.sort();
    v
}

/// The roster a brand-new presence subscriber on `replica` gets (an observer, not a member).
pub async fn fresh_roster(replica: &Replica, board: &str) -> Vec<String> {
    let mut p = Peer::connect(replica, &unique("observer")).await;
    let keys = p.observe(board).await;
    p.close();
    keys
}

/// Polls `check` every 50 ms until it holds or `within` passes. Returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the fresh roster of `replica` until it equals `expected` or `within` passes.
/// Returns the last roster seen.
pub async fn wait_fresh_roster(
    replica: &Replica,
    board: &str,
    expected: &[&str],
    within: Duration,
) -> Vec<String> {
    let want = sorted(expected);
    let deadline = Instant::now() + within;
    loop {
        let got = fresh_roster(replica, board).await;
        if got == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
