//! Starting and stopping the servers under test: the liveroom test server, the raw-limit server
//! (this binary), Sockudo and a private redis-server. All bind loopback only; all are killed
//! when their handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::ws::pusher;

/// What kind of server a scenario talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Liveroom,
    Raw,
    Sockudo,
    /// Socket.IO 4 on Node, with its rooms (`peers/socketio/server.js`)
    SocketIo,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveroom => "liveroom",
            Kind::Raw => "raw limit",
            Kind::Sockudo => "Sockudo",
            Kind::SocketIo => "Socket.IO",
        }
    }
}

/// A server to load: its address, and its pid when we can read its /proc entries.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "liveroom-bench-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process we started. Killed (SIGKILL) on drop.
pub struct ServerProc {
    pub target: Target,
    child: Child,
    pub log: PathBuf,
    _dir: TempDir,
}

impl ServerProc {
    /// kill -9, as for the cluster ghost test.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn log_tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// A free loopback TCP port (bind :0, read, release).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn command(bin: &Path, pin: Option<&str>) -> Command {
    match pin {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Starts a server that prints `LISTENING http://<addr>` on stdout (liveroom test server, raw
/// server) and waits for that line.
pub async fn spawn_listening(
    kind: Kind,
    bin: &Path,
    args: &[String],
    pin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<ServerProc> {
    let dir = TempDir::new(match kind {
        Kind::Liveroom => "liveroom",
        Kind::Raw => "raw",
        Kind::Sockudo => "sockudo",
        Kind::SocketIo => "socketio",
    })?;
    let log = dir.0.join("stderr.log");
    let mut cmd = command(bin, pin);
    cmd.args(args)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true);
    if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
        cmd.env("RUST_LOG", "warn");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.trim().strip_prefix("LISTENING http://") {
                return rest.parse::<SocketAddr>().context("bad LISTENING line");
            }
        }
        bail!("exited before LISTENING: {}", log_tail(&log))
    })
    .await
    .with_context(|| format!("{} did not print LISTENING within 30 s", bin.display()))??;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    crate::ws::ensure_loopback(addr)?;
    Ok(ServerProc {
        target: Target {
            kind,
            addr,
            pid: Some(pid),
        },
        child,
        log,
        _dir: dir,
    })
}

/// The raw-limit server: this very binary, `raw-server --bind 127.0.0.1:0`.
pub async fn spawn_raw(pin: Option<&str>) -> Result<ServerProc> {
    let me = std::env::current_exe()?;
    let args = vec![
        "raw-server".to_string(),
        "--bind".into(),
        "127.0.0.1:0".into(),
    ];
    spawn_listening(Kind::Raw, &me, &args, pin, &[]).await
}

/// The Socket.IO peer's folder, `peers/socketio` in this crate; it is usable once its
/// `npm ci` ran (`node_modules` is there) and `node` is on PATH.
pub fn socketio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/socketio")
}

/// Why the Socket.IO peer cannot run here, if it cannot.
pub fn socketio_missing() -> Option<String> {
    let dir = socketio_dir();
    if !dir.join("node_modules/socket.io").exists() {
        return Some(format!(
            "Socket.IO peer not installed (npm ci in {})",
            dir.display()
        ));
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("node").exists()));
    (!on_path).then(|| "node not on PATH".to_string())
}

/// The installed socket.io package's version.
pub fn socketio_version() -> Option<String> {
    let pkg =
        std::fs::read_to_string(socketio_dir().join("node_modules/socket.io/package.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&pkg).ok()?;
    Some(v.get("version")?.as_str()?.to_string())
}

/// `node --version`.
pub fn node_version() -> Option<String> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The Socket.IO peer: `node peers/socketio/server.js --port 0` (it prints `LISTENING`).
pub async fn spawn_socketio(pin: Option<&str>) -> Result<ServerProc> {
    if let Some(why) = socketio_missing() {
        bail!(why);
    }
    let script = socketio_dir().join("server.js");
    let args = vec![script.display().to_string(), "--port".into(), "0".into()];
    spawn_listening(Kind::SocketIo, Path::new("node"), &args, pin, &[]).await
}

/// Lifts the per-identity and per-address limits of a liveroom server: the benchmark measures
/// throughput from one host, not the limiters (which tests/limits.rs covers).
pub const UNLIMITED: [&str; 6] = [
    "--call-rate",
    "0",
    "--upgrade-rate",
    "0",
    "--max-connections-per-ip",
    "1000000",
];

/// The liveroom test server binary, `--bind 127.0.0.1:0`, [`UNLIMITED`], plus `extra` args.
pub async fn spawn_liveroom(bin: &Path, extra: &[String], pin: Option<&str>) -> Result<ServerProc> {
    let mut args = vec!["--bind".to_string(), "127.0.0.1:0".into()];
    args.extend(UNLIMITED.iter().map(|a| a.to_string()));
    args.extend(extra.iter().cloned());
    spawn_listening(Kind::Liveroom, bin, &args, pin, &[]).await
}

/// Where the liveroom test server binary should be: next to this binary (same profile), else
/// `target/release/liveroom-testserver` under the current directory.
pub fn default_liveroom_bin() -> PathBuf {
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let p = dir.join("liveroom-testserver");
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("target/release/liveroom-testserver")
}

/// Sockudo: `$SOCKUDO_BIN`, `/root/sockudo/bin/sockudo`, or `sockudo` on PATH.
pub fn find_sockudo(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.exists().then(|| p.to_path_buf());
    }
    if let Ok(p) = std::env::var("SOCKUDO_BIN") {
        let p = PathBuf::from(p);
        if p.exists() {
            return Some(p);
        }
    }
    let p = PathBuf::from("/root/sockudo/bin/sockudo");
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("sockudo"))
            .find(|p| p.exists())
    })
}

/// Starts Sockudo with in-memory drivers and raised limits (see shared/baselines.md) from an
/// empty directory, on a free port, and waits for `GET /up/app-id`.
pub async fn spawn_sockudo(bin: &Path, pin: Option<&str>) -> Result<ServerProc> {
    let dir = TempDir::new("sockudo")?;
    let port = free_port()?;
    let log = dir.0.join("sockudo.log");
    let port_s = port.to_string();
    let env: [(&str, &str); 20] = [
        ("HOST", "127.0.0.1"),
        ("PORT", &port_s),
        ("ADAPTER_DRIVER", "local"),
        ("APP_MANAGER_DRIVER", "memory"),
        ("CACHE_DRIVER", "memory"),
        ("QUEUE_DRIVER", "memory"),
        ("RATE_LIMITER_DRIVER", "memory"),
        ("RATE_LIMITER_ENABLED", "false"),
        ("METRICS_ENABLED", "false"),
        ("SOCKUDO_OTEL_ENABLED", "false"),
        ("SOCKUDO_DEFAULT_APP_ID", pusher::APP_ID),
        ("SOCKUDO_DEFAULT_APP_KEY", pusher::APP_KEY),
        ("SOCKUDO_DEFAULT_APP_SECRET", pusher::APP_SECRET),
        ("SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS", "20000"),
        (
            "SOCKUDO_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL",
            "20000",
        ),
        ("SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND", "100000"),
        ("SOCKUDO_DEFAULT_APP_ENABLE_CLIENT_MESSAGES", "true"),
        ("PRESENCE_UNGRACEFUL_TIMEOUT_SECONDS", "5"),
        ("RUST_LOG", "warn"),
        ("LOG_LEVEL", "warn"),
    ];
    let mut cmd = command(bin, pin);
    cmd.current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(dir.0.join("sockudo.err"))?)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("starting sockudo")?;
    let pid = child.id().context("no pid")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    loop {
        if let Ok((200, body)) = crate::http::get(addr, "/up/app-id").await {
            if body.contains("OK") {
                break;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "sockudo exited ({st}): {}",
                log_tail(&dir.0.join("sockudo.err"))
            );
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("sockudo not healthy after 30 s: {}", log_tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ServerProc {
        target: Target {
            kind: Kind::Sockudo,
            addr,
            pid: Some(pid),
        },
        child,
        log,
        _dir: dir,
    })
}

/// A private redis-server on a free port with a temp dir, no persistence. Never 6379.
pub struct Redis {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl Redis {
    /// A private redis-server on `pin`'s CPUs (with the servers: it is part of the system under
    /// test, and must not take the generator's core).
    pub async fn start(pin: Option<&str>) -> Result<Redis> {
        Self::start_with(&[], pin).await
    }

    /// A private redis-server with extra arguments.
    pub async fn start_with(extra: &[String], pin: Option<&str>) -> Result<Redis> {
        let dir = TempDir::new("redis")?;
        let mut port = free_port()?;
        while port == 6379 {
            port = free_port()?;
        }
        let mut child = command(Path::new("redis-server"), pin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir.0)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.0.join("redis.log"))?)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let start = Instant::now();
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut b = [0u8; 16];
                if s.write_all(b"PING\r\n").await.is_ok() {
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await
                    {
                        if b[..n].starts_with(b"+PONG") {
                            break;
                        }
                    }
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                bail!("redis-server exited: {st}");
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server not answering PING");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Redis {
            port,
            child,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Runs `redis-cli -p <port> args...`; its output.
    async fn cli(&self, args: &[String]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .await
            .context("redis-cli (is redis-tools installed?)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A private Redis Cluster of `n` primaries (no replicas): the 16384 slots split evenly, the
/// nodes introduced with `CLUSTER MEET` (which, unlike `redis-cli --cluster create`, also
/// makes a one-shard cluster).
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub async fn start(n: usize, pin: Option<&str>) -> Result<RedisCluster> {
        let mut nodes = Vec::new();
        let mut buses = Vec::new();
        for _ in 0..n.max(1) {
            let bus = free_port()?;
            buses.push(bus);
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
                &bus.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            nodes.push(Redis::start_with(&args, pin).await?);
        }
        let per = 16384 / nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let (from, to) = (
                i * per,
                if i + 1 == nodes.len() {
                    16383
                } else {
                    (i + 1) * per - 1
                },
            );
            node.cli(&[
                "CLUSTER".into(),
                "ADDSLOTSRANGE".into(),
                from.to_string(),
                to.to_string(),
            ])
            .await?;
            if i > 0 {
                nodes[0]
                    .cli(&[
                        "CLUSTER".into(),
                        "MEET".into(),
                        "127.0.0.1".into(),
                        node.port.to_string(),
                        buses[i].to_string(),
                    ])
                    .await?;
            }
        }
        let start = Instant::now();
        loop {
            let mut ready = true;
            for node in &nodes {
                let info = node.cli(&["CLUSTER".into(), "INFO".into()]).await?;
                ready &= info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", nodes.len()));
            }
            if ready {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("the redis cluster did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(RedisCluster { nodes })
    }

    /// Every node, comma-separated (the form `--redis-url` takes for a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Whether the liveroom binary's `--help` mentions `flag`.
pub async fn supports_flag(bin: &Path, flag: &str) -> bool {
    match Command::new(bin).arg("--help").output().await {
        Ok(o) => {
            String::from_utf8_lossy(&o.stdout).contains(flag)
                || String::from_utf8_lossy(&o.stderr).contains(flag)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Socket.IO peer: fan-out over rooms, acknowledged round trips, idle sockets. Skipped
    /// where the peer is not installed, unless `LIVEROOM_BENCH_REQUIRE_PEERS` is set (the test
    /// script sets it after `npm ci`).
    #[tokio::test]
    async fn socketio_peer_fans_out_per_room_and_acknowledges() {
        if let Some(why) = socketio_missing() {
            assert!(
                std::env::var_os("LIVEROOM_BENCH_REQUIRE_PEERS").is_none(),
                "the Socket.IO peer is required: {why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
        let srv = spawn_socketio(None).await.expect("the peer starts");
        let t = srv.target;
        crate::fanout::assert_small_run_delivers(t).await;
        crate::rpc::assert_small_run_answers(t).await;
        let o = crate::idle::Opts {
            conns: 20,
            batch: 10,
            sources: 2,
            settle: 0.1,
            subscribed: false,
        };
        let m = crate::idle::run(t, &o).await.expect("idle sockets open");
        assert_eq!(m.get("closed_by_server"), Some(0.0));
    }
}
