//! A private Redis Cluster for the cluster suite (`redis-server --cluster-enabled yes` on free
//! loopback ports, joined with `redis-cli --cluster create`), and [`TestRedis`], what a test
//! reads from either kind of Redis.

use super::{free_port, RedisServer};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a scenario reads from the Redis it runs on, standalone or cluster.
pub trait TestRedis: Sync {
    /// The URL the replicas get (`--redis-url`): comma-separated nodes for a cluster.
    fn url(&self) -> String;
    /// Runs one command (routed by its key on a cluster).
    fn query(&self, cmd: &redis::Cmd) -> redis::Value;
    /// Every data key, for a look at the layout.
    fn keys(&self) -> Vec<String>;

    /// `HGETALL key`.
    fn hgetall(&self, key: &str) -> HashMap<String, String> {
        redis::from_redis_value(self.query(redis::cmd("HGETALL").arg(key))).expect("HGETALL")
    }

    /// The `c:<identity>` counts of a board's presence hash.
    fn counts(&self, board: &str) -> BTreeMap<String, i64> {
        self.hgetall(&presence_key(board))
            .into_iter()
            .filter_map(|(f, v)| Some((f.strip_prefix("c:")?.to_owned(), v.parse().ok()?)))
            .collect()
    }

    /// The ids of the registered replicas.
    fn replicas(&self) -> Vec<String> {
        redis::from_redis_value(self.query(redis::cmd("HKEYS").arg("__live-replica-epochs")))
            .expect("HKEYS")
    }
}

/// The presence hash of a board of the test app.
pub fn presence_key(board: &str) -> String {
    format!("__live-presence:{{board:{board}}}")
}

impl TestRedis for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }

    fn query(&self, cmd: &redis::Cmd) -> redis::Value {
        cmd.query(&mut self.conn()).expect("redis query")
    }

    fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.conn())
            .expect("KEYS")
    }
}

/// A Redis Cluster of `masters` primaries with `replicas` replicas each, killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every slot is served (and every
    /// replica has synced).
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let n = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                    // A replica may always take over, however long its link was down.
                    "--cluster-replica-validity-factor",
                    "0",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create (is redis-tools installed?)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ready(n) {
            assert!(
                Instant::now() < deadline,
                "the redis cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Every node sees every other, every slot is served, every replica has synced.
    fn ready(&self, n: usize) -> bool {
        self.live().all(|node| {
            let info = node_info(node, "CLUSTER", Some("INFO"));
            let repl = node_info(node, "INFO", Some("replication"));
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{n}"))
                && (repl.contains("role:master") || repl.contains("master_link_status:up"))
        })
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.running())
    }

    fn connection(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.live().map(|n| n.url()).collect();
        redis::cluster::ClusterClient::builder(urls)
            .connection_timeout(Duration::from_secs(2))
            .build()
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis cluster")
    }

    /// The index of the node serving `key`'s slot as primary.
    pub fn master_of(&self, key: &str) -> usize {
        let port = self.slot_owner(key).expect("the slot is served");
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of ours")
    }

    /// The port of the primary serving `key`'s slot, as a live node sees it.
    fn slot_owner(&self, key: &str) -> Option<u16> {
        for node in self.live() {
            let mut c = node.conn();
            let Ok(number) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query::<u16>(&mut c)
            else {
                continue;
            };
            let Ok(slots) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<redis::Value>(&mut c)
            else {
                continue;
            };
            let ranges: Vec<(u16, u16, (String, u16))> =
                match redis::from_redis_value::<Vec<Vec<redis::Value>>>(slots) {
                    Ok(rows) => rows
                        .into_iter()
                        .filter_map(|row| {
                            let start = redis::from_redis_value(row.first()?.clone()).ok()?;
                            let end = redis::from_redis_value(row.get(1)?.clone()).ok()?;
                            let master: Vec<redis::Value> =
                                redis::from_redis_value(row.get(2)?.clone()).ok()?;
                            let host = redis::from_redis_value(master.first()?.clone()).ok()?;
                            let port = redis::from_redis_value(master.get(1)?.clone()).ok()?;
                            Some((start, end, (host, port)))
                        })
                        .collect(),
                    Err(_) => continue,
                };
            return ranges
                .into_iter()
                .find(|(s, e, _)| (*s..=*e).contains(&number))
                .map(|(_, _, (_, port))| port);
        }
        None
    }

    /// How many connections subscribe `channel` on the primary that owns it
    /// (`PUBSUB SHARDNUMSUB`).
    pub fn shard_subscribers(&self, channel: &str) -> i64 {
        let node = &self.nodes[self.master_of(channel)];
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel)
            .query(&mut node.conn())
            .expect("PUBSUB SHARDNUMSUB");
        reply.1
    }

    /// Moves `key`'s slot, with its keys, to node `to` (a primary), the way `redis-cli
    /// --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE` in batches, then the new owner
    /// announced to every node.
    pub fn migrate(&self, key: &str, to: usize) {
        let from = self.master_of(key);
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let id = |n: &RedisServer| -> String {
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut n.conn())
                .expect("CLUSTER MYID")
        };
        let (src_id, dst_id) = (id(src), id(dst));
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut src.conn())
            .expect("KEYSLOT");
        let setslot = |n: &RedisServer, how: &str, node: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(node)
                .query::<()>(&mut n.conn())
                .expect("CLUSTER SETSLOT");
        };
        setslot(dst, "IMPORTING", &src_id);
        setslot(src, "MIGRATING", &dst_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src.conn())
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(dst.port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys)
                .query::<()>(&mut src.conn())
                .expect("MIGRATE");
        }
        for n in [dst, src] {
            setslot(n, "NODE", &dst_id);
        }
        for n in self.live() {
            let _ = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&dst_id)
                .query::<()>(&mut n.conn());
        }
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Waits until `key`'s slot is served by a live primary again and the cluster is healthy
    /// (after a failover); the time it took.
    pub fn wait_failover(&self, key: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            let served = self
                .slot_owner(key)
                .is_some_and(|port| self.live().any(|n| n.port == port));
            let ok = self
                .live()
                .all(|n| node_info(n, "CLUSTER", Some("INFO")).contains("cluster_state:ok"));
            if served && ok {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn node_info(node: &RedisServer, cmd: &str, arg: Option<&str>) -> String {
    let Ok(client) = redis::Client::open(node.url()) else {
        return String::new();
    };
    let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return String::new();
    };
    let mut q = redis::cmd(cmd);
    if let Some(a) = arg {
        q.arg(a);
    }
    q.query::<String>(&mut c).unwrap_or_default()
}

impl TestRedis for RedisCluster {
    fn url(&self) -> String {
        // Two nodes are enough to find the rest (and show the comma-separated form).
        self.nodes
            .iter()
            .take(2)
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn query(&self, cmd: &redis::Cmd) -> redis::Value {
        cmd.query(&mut self.connection())
            .expect("redis cluster query")
    }

    fn keys(&self) -> Vec<String> {
        let mut all = Vec::new();
        for node in self.live() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("*")
                .query(&mut node.conn())
                .unwrap_or_default();
            all.extend(keys);
        }
        all
    }
}
