//! Cluster mode end to end: several `liveroom-testserver` processes sharing a private Redis,
//! driven by real WebSocket clients (protocol.md sections 5 and 6).
//!
//! Every test starts its own `redis-server` (free loopback port, temp dir, no persistence) and
//! its own replicas; guards kill them all when the test ends, even on failure. Waits are on
//! events with timeouts; "nothing happened" is asserted over a bounded observation window.

mod common;

use common::{
    eventually, fresh_roster, presence_key, sorted, wait_fresh_roster, Peer, RedisCluster,
    RedisServer, Replica, ReplicaOpts, TestRedis,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

/// alice on R1 and bob on R2 both see `[alice, bob]`, with their presence data, and a later
/// join on one replica reaches an observer on the other.
async fn rosters_span_replicas(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 1000);
    let r2 = Replica::start("r2", Some(&url), 1000);

    let mut alice = Peer::connect(&r1, "alice").await;
    let mut bob = Peer::connect(&r2, "bob").await;
    alice.join("b1").await;
    bob.join("b1").await;
    assert_eq!(alice.observe("b1").await, sorted(&["alice", "bob"]));
    assert_eq!(bob.observe("b1").await, sorted(&["alice", "bob"]));
    assert_eq!(alice.roster["bob"], json!({ "name": "N-bob" }));
    assert_eq!(bob.roster["alice"], json!({ "name": "N-alice" }));
    assert_eq!(fresh_roster(&r1, "b1").await, sorted(&["alice", "bob"]));
    assert_eq!(fresh_roster(&r2, "b1").await, sorted(&["alice", "bob"]));
    assert_eq!(redis.counts("b1"), counts(&[("alice", 1), ("bob", 1)]));

    // A live join on R1 reaches bob's roster on R2 (and alice's, locally).
    let mut carol = Peer::connect(&r1, "carol").await;
    carol.join("b1").await;
    assert!(
        bob.wait_roster(&["alice", "bob", "carol"], WAIT).await,
        "bob's roster on r2: {:?}",
        bob.keys()
    );
    assert!(
        alice.wait_roster(&["alice", "bob", "carol"], WAIT).await,
        "alice's roster on r1: {:?}",
        alice.keys()
    );
    assert_eq!(bob.roster["carol"], json!({ "name": "N-carol" }));
}

/// Data-stream events and cursor moves reach every subscriber on every replica exactly once,
/// in publish order per publisher; remote cursors show up in `__cursors` snapshots.
async fn events_and_cursors_cross_replicas_exactly_once(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 1000);
    let r2 = Replica::start("r2", Some(&url), 1000);
    let r3 = Replica::start("r3", Some(&url), 1000);
    let board = "ev";
    let topic = "board:ev";
    let cursors = "board:ev:cursors";

    let mut alice = Peer::connect(&r1, "alice").await;
    let mut dave = Peer::connect(&r1, "dave").await; // same replica as the publisher
    let mut bob = Peer::connect(&r2, "bob").await;
    let mut carol = Peer::connect(&r3, "carol").await;
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        p.join(board).await;
        p.cursors(board).await;
    }

    // 10 cards from alice (R1) and 10 from carol (R3), concurrently.
    let (a, c) = (&alice, &carol);
    tokio::join!(
        async move {
            for i in 0..10 {
                a.add_card(board, &format!("a{i}")).await;
            }
        },
        async move {
            for i in 0..10 {
                c.add_card(board, &format!("c{i}")).await;
            }
        }
    );
    let titles = |p: &Peer| -> Vec<String> {
        p.events(topic, "created", None)
            .iter()
            .map(|e| e["data"]["title"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let done = p
            .pump_until(Instant::now() + WAIT, |p| {
                p.count(topic, "created", None) >= 20
            })
            .await;
        assert!(done, "{} got {:?}", p.user, titles(p));
    }
    // Observe a while longer: no duplicate may trail in.
    alice.settle(Duration::from_millis(500)).await;
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        p.drain().await;
        let got = titles(p);
        assert_eq!(got.len(), 20, "{} got duplicates: {got:?}", p.user);
        let unique: BTreeSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), 20, "{} got {got:?}", p.user);
        for prefix in ["a", "c"] {
            let order: Vec<&String> = got.iter().filter(|t| t.starts_with(prefix)).collect();
            let want: Vec<String> = (0..10).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(
                order,
                want.iter().collect::<Vec<_>>(),
                "{}: order per publisher",
                p.user
            );
        }
    }

    // One cursor move from bob (R2) reaches everyone once, with the latest position.
    bob.move_cursor(board, 10, 20);
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let got = p
            .pump_until(Instant::now() + WAIT, |p| {
                p.count(cursors, "update", Some("bob")) >= 1
            })
            .await;
        assert!(got, "{} never saw bob's cursor", p.user);
    }
    alice.settle(Duration::from_millis(500)).await;
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        p.drain().await;
        let updates = p.events(cursors, "update", Some("bob"));
        assert_eq!(updates.len(), 1, "{}: {updates:?}", p.user);
        assert_eq!(
            updates[0]["data"],
            json!({ "key": "bob", "x": 10, "y": 20 })
        );
    }

    // A burst of moves: trailing edge, each receiver ends on the latest position, no more
    // updates than the sender's own replica published.
    for i in 1..=30 {
        alice.move_cursor(board, i, i);
    }
    for p in [&mut alice, &mut dave, &mut bob, &mut carol] {
        let got = p
            .pump_until(Instant::now() + WAIT, |p| {
                p.events(cursors, "update", Some("alice"))
                    .last()
                    .is_some_and(|e| e["data"]["x"] == 30)
            })
            .await;
        assert!(got, "{} never saw alice's last position", p.user);
    }
    alice.settle(Duration::from_millis(300)).await;
    for p in [&mut dave, &mut bob, &mut carol] {
        p.drain().await;
    }
    let local = alice.count(cursors, "update", Some("alice"));
    for p in [&dave, &bob, &carol] {
        assert_eq!(
            p.count(cursors, "update", Some("alice")),
            local,
            "{} saw a different number of alice's updates than her replica sent",
            p.user
        );
    }

    // Remote cursors are part of a fresh snapshot on another replica.
    let mut erin = Peer::connect(&r3, "erin").await;
    let snapshot = erin.cursors(board).await;
    let keys: BTreeSet<&str> = snapshot
        .as_array()
        .expect("snapshot list")
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert_eq!(keys, BTreeSet::from(["alice", "bob"]), "{snapshot}");
}

/// The same user on R1 and R2: one join; closing one socket: no leave; closing both: one
/// leave, after the grace.
async fn same_user_on_two_replicas_joins_and_leaves_once(redis: &dyn TestRedis) {
    let grace = Duration::from_millis(1000);
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), grace.as_millis() as u64);
    let r2 = Replica::start("r2", Some(&url), grace.as_millis() as u64);
    let board = "same";
    let mut obs1 = Peer::connect(&r1, "obs1").await;
    let mut obs2 = Peer::connect(&r2, "obs2").await;
    obs1.observe(board).await;
    obs2.observe(board).await;

    let mut sam1 = Peer::connect(&r1, "sam").await;
    sam1.join(board).await;
    let mut sam2 = Peer::connect(&r2, "sam").await;
    sam2.join(board).await;
    for o in [&mut obs1, &mut obs2] {
        assert!(
            o.wait_presence(board, "join", "sam", WAIT).await,
            "{}",
            o.user
        );
    }
    assert_eq!(redis.counts(board), counts(&[("sam", 2)]));

    // One socket closes: nothing, even after the grace.
    sam1.close_and_wait().await;
    obs1.settle(grace + Duration::from_millis(700)).await;
    obs2.drain().await;
    for o in [&obs1, &obs2] {
        assert_eq!(o.presence_count(board, "leave", "sam"), 0, "{}", o.user);
        assert_eq!(o.keys(), sorted(&["sam"]), "{}", o.user);
    }
    assert!(
        eventually(WAIT, || redis.counts(board) == counts(&[("sam", 1)])).await,
        "{:?}",
        redis.counts(board)
    );
    assert_eq!(fresh_roster(&r1, board).await, sorted(&["sam"]));

    // The last socket closes: one leave, after the grace.
    let closed = Instant::now();
    sam2.close_and_wait().await;
    for o in [&mut obs1, &mut obs2] {
        assert!(
            o.wait_presence(board, "leave", "sam", grace + WAIT).await,
            "{}",
            o.user
        );
    }
    let after = closed.elapsed();
    assert!(
        after >= grace * 9 / 10,
        "leave came before the grace: {after:?}"
    );
    obs1.settle(Duration::from_millis(500)).await;
    obs2.drain().await;
    for o in [&obs1, &obs2] {
        assert_eq!(o.presence_count(board, "join", "sam"), 1, "{}", o.user);
        assert_eq!(o.presence_count(board, "leave", "sam"), 1, "{}", o.user);
        assert!(o.keys().is_empty(), "{}: {:?}", o.user, o.keys());
    }
    assert!(redis.hgetall(&presence_key("same")).is_empty());
}

/// A user hopping from R1 to R2 inside the grace (a reload landing on another replica): an
/// observer sees neither a leave nor a second join.
async fn hop_between_replicas_inside_grace_is_invisible(redis: &dyn TestRedis) {
    let grace = Duration::from_millis(2000);
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), grace.as_millis() as u64);
    let r2 = Replica::start("r2", Some(&url), grace.as_millis() as u64);
    let board = "hop";
    let mut obs1 = Peer::connect(&r1, "obs1").await;
    let mut obs2 = Peer::connect(&r2, "obs2").await;
    obs1.observe(board).await;
    obs2.observe(board).await;

    let mut h1 = Peer::connect(&r1, "hopper").await;
    h1.join(board).await;
    for o in [&mut obs1, &mut obs2] {
        assert!(o.wait_presence(board, "join", "hopper", WAIT).await);
    }
    h1.close_and_wait().await;
    let mut h2 = Peer::connect(&r2, "hopper").await;
    h2.join(board).await;

    // Watch past R1's grace: its leave must be absorbed by R2's count.
    obs1.settle(grace + Duration::from_millis(1500)).await;
    obs2.drain().await;
    for o in [&obs1, &obs2] {
        assert_eq!(o.presence_count(board, "join", "hopper"), 1, "{}", o.user);
        assert_eq!(o.presence_count(board, "leave", "hopper"), 0, "{}", o.user);
        assert_eq!(o.keys(), sorted(&["hopper"]), "{}", o.user);
    }
    assert!(
        eventually(WAIT, || redis.counts(board) == counts(&[("hopper", 1)])).await,
        "{:?}",
        redis.counts(board)
    );
    assert_eq!(fresh_roster(&r1, board).await, sorted(&["hopper"]));
    assert_eq!(fresh_roster(&r2, board).await, sorted(&["hopper"]));
}

/// 165 connections of 130 users over 3 replicas connect and close concurrently (several
/// users on two replicas, some with two tabs on one, some joining and leaving at once). After
/// things settle, the Redis hash holds exactly the expected counts, every replica's roster is
/// the expected set, and every observer saw each join and leave exactly once.
async fn hundred_concurrent_joins_and_leaves_count_exactly(redis: &dyn TestRedis) {
    let grace = 300;
    let url = redis.url();
    let rs = [
        Replica::start("r1", Some(&url), grace),
        Replica::start("r2", Some(&url), grace),
        Replica::start("r3", Some(&url), grace),
    ];
    let board = "h";
    let mut observers = Vec::new();
    for (i, r) in rs.iter().enumerate() {
        let mut o = Peer::connect(r, &format!("obs{i}")).await;
        o.observe(board).await;
        observers.push(o);
    }
    let user = |i: usize| format!("u{i:03}");

    // Connections: (user index, replica index). User i lives on replica i % 3; i % 5 == 0 also
    // on the next replica; i % 7 == 0 has a second tab on its own replica.
    let mut plan: Vec<(usize, usize)> = Vec::new();
    for i in 0..100 {
        plan.push((i, i % 3));
        if i % 5 == 0 {
            plan.push((i, (i + 1) % 3));
        }
        if i % 7 == 0 {
            plan.push((i, i % 3));
        }
    }
    let connect_all = |plan: &[(usize, usize)]| {
        let mut set = tokio::task::JoinSet::new();
        for (n, &(i, r)) in plan.iter().enumerate() {
            let (u, ws) = (user(i), rs[r].ws(&user(i)));
            set.spawn(async move {
                let mut p = Peer::connect_url(&ws, &u).await;
                p.join(board).await;
                (n, i, r, p)
            });
        }
        set
    };
    let mut conns: Vec<Option<(usize, usize, Peer)>> = (0..plan.len()).map(|_| None).collect();
    let mut set = connect_all(&plan);
    while let Some(done) = set.join_next().await {
        let (n, i, r, p) = done.expect("connect task");
        conns[n] = Some((i, r, p));
    }
    let all: Vec<String> = (0..100).map(user).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    for o in observers.iter_mut() {
        assert!(
            o.wait_roster(&all_refs, Duration::from_secs(10)).await,
            "{} sees {} users",
            o.user,
            o.roster.len()
        );
    }

    // Phase 2, all at once: users i % 4 == 0 close everything; other i % 5 == 0 close their
    // second-replica socket; other i % 7 == 0 close one tab; users 100..120 join; users
    // 120..130 join and close at once.
    let mut to_close = Vec::new();
    let mut tabs_closed = BTreeSet::new();
    for (n, &(i, r)) in plan.iter().enumerate() {
        let close = i % 4 == 0
            || (i % 5 == 0 && r == (i + 1) % 3)
            || (i % 7 == 0 && r == i % 3 && tabs_closed.insert(i));
        if close {
            to_close.push(n);
        }
    }
    let mut closers = tokio::task::JoinSet::new();
    for n in to_close {
        let (_, _, mut p) = conns[n].take().expect("open connection");
        closers.spawn(async move { p.close_and_wait().await });
    }
    let newcomers: Vec<(usize, usize)> = (100..130).map(|i| (i, i % 3)).collect();
    let mut joiners = connect_all(&newcomers);
    let mut flash = tokio::task::JoinSet::new();
    while let Some(done) = joiners.join_next().await {
        let (_, i, r, mut p) = done.expect("connect task");
        if i >= 120 {
            flash.spawn(async move { p.close_and_wait().await });
        } else {
            conns.push(Some((i, r, p)));
        }
    }
    while closers.join_next().await.is_some() {}
    while flash.join_next().await.is_some() {}

    // The truth: per user, the number of replicas still holding a socket.
    let mut expected: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for (i, r, _) in conns.iter().flatten() {
        expected.entry(user(*i)).or_default().insert(*r);
    }
    let expected_counts: BTreeMap<String, i64> = expected
        .iter()
        .map(|(k, rs)| (k.clone(), rs.len() as i64))
        .collect();
    let keys: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert!(
        eventually(Duration::from_secs(10), || redis.counts(board)
            == expected_counts)
        .await,
        "redis counts differ: got {:?}\nwant {:?}",
        redis.counts(board),
        expected_counts
    );
    let hash = redis.hgetall(&presence_key("h"));
    let c_fields = hash.keys().filter(|f| f.starts_with("c:")).count();
    let d_fields = hash.keys().filter(|f| f.starts_with("d:")).count();
    assert_eq!((c_fields, d_fields), (keys.len(), keys.len()), "{hash:?}");
    for o in observers.iter_mut() {
        assert!(
            o.wait_roster(&keys, WAIT).await,
            "{}: merged roster differs: extra {:?}",
            o.user,
            o.keys()
                .iter()
                .filter(|k| !expected.contains_key(*k))
                .collect::<Vec<_>>()
        );
    }
    for r in &rs {
        assert_eq!(
            wait_fresh_roster(r, board, &keys, WAIT).await,
            sorted(&keys),
            "fresh roster on {}",
            r.name
        );
    }
    // Exactly once: watch a little longer, then count every observer's events.
    observers[0].settle(Duration::from_millis(500)).await;
    for o in observers.iter_mut() {
        o.drain().await;
        for i in 0..130 {
            let u = user(i);
            let (joins, leaves) = (
                o.presence_count(board, "join", &u),
                o.presence_count(board, "leave", &u),
            );
            let present = expected.contains_key(&u);
            let want = if present { (1, 0) } else { (1, 1) };
            assert_eq!((joins, leaves), want, "{} saw {u} join/leave", o.user);
        }
    }
    assert_eq!(expected.len(), 100 - 25 + 20, "the plan's own arithmetic");
}

/// kill -9 of a replica: its users leave on the others within the lease bound (defaults:
/// lease 3 s, heartbeat 1 s), their cursors are removed, and a user also connected elsewhere
/// stays.
async fn killed_replica_leaves_no_ghosts(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 5000);
    let mut r2 = Replica::start("r2", Some(&url), 5000);
    let r3 = Replica::start("r3", Some(&url), 5000);
    let board = "k";
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join(board).await;
    alice.observe(board).await;
    let mut carol = Peer::connect(&r3, "carol").await;
    carol.join(board).await;
    carol.observe(board).await;
    carol.cursors(board).await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    bob.cursors(board).await;
    let mut both1 = Peer::connect(&r1, "both").await;
    both1.join(board).await;
    let mut both2 = Peer::connect(&r2, "both").await;
    both2.join(board).await;
    bob.move_cursor(board, 5, 5);
    let everyone = ["alice", "bob", "both", "carol"];
    for p in [&mut alice, &mut carol] {
        assert!(p.wait_roster(&everyone, WAIT).await, "{}", p.user);
    }
    assert!(
        carol
            .pump_until(Instant::now() + WAIT, |p| p.count(
                "board:k:cursors",
                "update",
                Some("bob")
            ) == 1)
            .await
    );
    // Let R2 hold its lease for a beat, so the crash is not confused with a start-up.
    assert!(eventually(WAIT, || redis.replicas().len() == 3).await);

    let killed = Instant::now();
    r2.kill9();
    let mut lifetimes = Vec::new();
    for p in [&mut alice, &mut carol] {
        assert!(
            p.wait_presence(board, "leave", "bob", Duration::from_secs(10))
                .await,
            "{} still sees bob after 10 s",
            p.user
        );
        lifetimes.push(killed.elapsed());
    }
    let ghost = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!("ghost lifetime: {} ms", ghost.as_millis());
    assert!(ghost < Duration::from_secs(8), "ghost lived {ghost:?}");
    assert!(
        carol
            .pump_until(Instant::now() + WAIT, |p| p.count(
                "board:k:cursors",
                "remove",
                Some("bob")
            ) == 1)
            .await,
        "bob's cursor was not removed"
    );
    alice.settle(Duration::from_millis(1500)).await;
    carol.drain().await;
    let left = sorted(&["alice", "both", "carol"]);
    for p in [&alice, &carol] {
        assert_eq!(p.keys(), left, "{}", p.user);
        assert_eq!(p.presence_count(board, "leave", "bob"), 1, "{}", p.user);
        assert_eq!(p.presence_count(board, "leave", "both"), 0, "{}", p.user);
    }
    assert_eq!(
        redis.counts(board),
        counts(&[("alice", 1), ("both", 1), ("carol", 1)])
    );
    assert_eq!(fresh_roster(&r1, board).await, left);
    assert_eq!(fresh_roster(&r3, board).await, left);
    assert_eq!(redis.replicas().len(), 2);
}

/// SIGTERM: the replica closes its sockets with 1001, releases presence at once (leaves are
/// published well before the lease or the grace would), and gives up its lease.
async fn graceful_shutdown_leaves_promptly(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 5000);
    let mut r2 = Replica::start("r2", Some(&url), 5000);
    let board = "g";
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join(board).await;
    alice.observe(board).await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    let mut both1 = Peer::connect(&r1, "both").await;
    both1.join(board).await;
    let mut both2 = Peer::connect(&r2, "both").await;
    both2.join(board).await;
    assert!(alice.wait_roster(&["alice", "bob", "both"], WAIT).await);
    assert!(eventually(WAIT, || redis.replicas().len() == 2).await);

    let term = Instant::now();
    r2.sigterm();
    assert!(
        alice.wait_presence(board, "leave", "bob", WAIT).await,
        "no leave for bob"
    );
    let took = term.elapsed();
    eprintln!("shutdown leave: {} ms", took.as_millis());
    assert!(took < Duration::from_millis(1500), "leave took {took:?}");
    let status = r2
        .wait_exit(Duration::from_secs(10))
        .expect("r2 did not exit");
    assert!(status.success(), "r2 exited with {status}");
    assert!(
        bob.pump_until(Instant::now() + WAIT, |p| p.closed).await,
        "bob's socket stayed open"
    );
    assert_eq!(bob.client.closed(), Some(Some(1001)));
    alice.settle(Duration::from_millis(500)).await;
    assert_eq!(alice.keys(), sorted(&["alice", "both"]));
    assert_eq!(alice.presence_count(board, "leave", "both"), 0);
    assert_eq!(redis.counts(board), counts(&[("alice", 1), ("both", 1)]));
    assert_eq!(redis.replicas().len(), 1);
}

/// Redis dies and comes back empty. During the outage each replica keeps serving its own
/// sockets (local actions, local joins and leaves). After the restart the replicas re-assert
/// their members: fresh rosters show the whole truth, and clients that were subscribed all
/// along get corrected (`set` or `join`/`leave`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_converges() {
    let grace = 500;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), grace);
    let r2 = Replica::start("r2", Some(&url), grace);
    let r3 = Replica::start("r3", Some(&url), grace);
    let board = "rr";
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join(board).await;
    alice.observe(board).await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    bob.observe(board).await;
    let mut eve = Peer::connect(&r2, "eve").await;
    eve.join(board).await;
    let mut frank = Peer::connect(&r3, "frank").await;
    frank.join(board).await;
    frank.observe(board).await;
    for p in [&mut alice, &mut bob, &mut frank] {
        assert!(p.wait_roster(&["alice", "bob", "eve", "frank"], WAIT).await);
    }

    let outage = Instant::now();
    redis.stop();

    // Local presence still works: carol joins on R1, dave on R2, eve leaves R2.
    let mut carol = Peer::connect(&r1, "carol").await;
    carol.join(board).await;
    carol.observe(board).await;
    assert!(
        alice.wait_presence(board, "join", "carol", WAIT).await,
        "alice (r1) did not see carol join on r1 during the outage"
    );
    let mut dave = Peer::connect(&r2, "dave").await;
    dave.join(board).await;
    assert!(
        bob.wait_presence(board, "join", "dave", WAIT).await,
        "bob (r2) did not see dave join on r2 during the outage"
    );
    eve.close_and_wait().await;
    assert!(
        bob.wait_presence(board, "leave", "eve", WAIT).await,
        "bob (r2) did not see eve leave r2 during the outage"
    );
    // Local delivery still works: an action on R1 reaches R1's subscribers.
    let card = alice.add_card(board, "offline").await;
    assert!(
        carol
            .pump_until(Instant::now() + WAIT, |p| p
                .events("board:rr", "created", None)
                .iter()
                .any(|e| e["data"] == card))
            .await,
        "carol (r1) did not get alice's card during the outage"
    );
    eprintln!(
        "outage: local checks done after {} ms",
        outage.elapsed().as_millis()
    );
    // Keep Redis away long enough for every replica to notice (several heartbeats and the
    // breaker opening); this is the outage itself, not a wait for an event.
    let min_outage = Duration::from_millis(2500);
    if outage.elapsed() < min_outage {
        tokio::time::sleep(min_outage - outage.elapsed()).await;
    }
    // Honest status: once the breaker opens, every replica tells its clients (the
    // svelte-realtime client's `health` store reads `__realtime`), and a client that connects
    // meanwhile hears it at once.
    let degraded = |p: &Peer| p.count("__realtime", "degraded", None) == 1;
    for p in [&mut alice, &mut bob, &mut carol, &mut frank] {
        assert!(
            p.pump_until(Instant::now() + WAIT, degraded).await,
            "{} was not told that its replica lost Redis",
            p.user
        );
        assert_eq!(p.count("__realtime", "recovered", None), 0);
    }
    let mut late = Peer::connect(&r3, "late").await;
    assert!(
        late.pump_until(Instant::now() + Duration::from_secs(1), degraded)
            .await,
        "a client connecting during the outage was not told"
    );
    assert!(late.client.degraded());

    redis.restart();
    let restarted = Instant::now();
    let truth = ["alice", "bob", "carol", "dave", "frank"];
    let want = sorted(&truth);
    let deadline = restarted + Duration::from_secs(10);
    let mut converged = None;
    while Instant::now() < deadline {
        let mut ok = true;
        for p in [&mut alice, &mut bob, &mut carol, &mut frank] {
            p.drain().await;
            ok &= p.keys() == want;
        }
        for r in [&r1, &r2, &r3] {
            ok = ok && fresh_roster(r, board).await == want;
        }
        if ok {
            converged = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(took) = converged else {
        panic!(
            "no convergence within 10 s: alice {:?}, bob {:?}, carol {:?}, frank {:?}, \
             r1 {:?}, r2 {:?}, r3 {:?}, redis {:?}",
            alice.keys(),
            bob.keys(),
            carol.keys(),
            frank.keys(),
            fresh_roster(&r1, board).await,
            fresh_roster(&r2, board).await,
            fresh_roster(&r3, board).await,
            redis.counts(board)
        );
    };
    eprintln!("convergence after redis restart: {} ms", took.as_millis());
    for p in [&mut alice, &mut frank, &mut late] {
        assert!(
            p.pump_until(Instant::now() + Duration::from_secs(10), |p| p.count(
                "__realtime",
                "recovered",
                None
            ) == 1)
                .await,
            "{} was not told that Redis is back",
            p.user
        );
        assert!(!p.client.degraded());
    }
    // And it stays converged (no late partial `set` undoes it).
    alice.settle(Duration::from_millis(1500)).await;
    for p in [&mut alice, &mut bob, &mut carol, &mut frank] {
        p.drain().await;
        assert_eq!(p.keys(), want, "{} after settling", p.user);
    }
    assert_eq!(
        redis.counts(board),
        counts(&[
            ("alice", 1),
            ("bob", 1),
            ("carol", 1),
            ("dave", 1),
            ("frank", 1)
        ])
    );
    // The bus works again both ways.
    let card = bob.add_card(board, "online").await;
    assert!(
        alice
            .pump_until(Instant::now() + WAIT, |p| p
                .events("board:rr", "created", None)
                .iter()
                .any(|e| e["data"] == card))
            .await,
        "alice (r1) did not get bob's card (r2) after the restart"
    );
}

/// A replica started without Redis is a world of its own: it neither sees nor disturbs the
/// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_without_redis_is_isolated() {
    let redis = RedisServer::start();
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 300);
    let r2 = Replica::start("r2", Some(&url), 300);
    let solo = Replica::start_with("solo", ReplicaOpts::new(None, 300));
    let board = "iso";
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join(board).await;
    alice.observe(board).await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join(board).await;
    let mut zed = Peer::connect(&solo, "zed").await;
    zed.join(board).await;
    assert_eq!(zed.observe(board).await, sorted(&["zed"]));
    assert!(alice.wait_roster(&["alice", "bob"], WAIT).await);
    assert_eq!(fresh_roster(&solo, board).await, sorted(&["zed"]));
    assert_eq!(fresh_roster(&r2, board).await, sorted(&["alice", "bob"]));
    assert_eq!(redis.counts(board), counts(&[("alice", 1), ("bob", 1)]));

    let from_cluster = alice.add_card(board, "cluster").await;
    let from_solo = zed.add_card(board, "solo").await;
    assert!(
        bob.pump_until(Instant::now() + WAIT, |p| p
            .events("board:iso", "created", None)
            .iter()
            .any(|e| e["data"]["title"] == "cluster"))
            .await
    );
    assert!(
        zed.pump_until(Instant::now() + WAIT, |p| p
            .events("board:iso", "created", None)
            .iter()
            .any(|e| e["data"] == from_solo))
            .await
    );
    bob.close_and_wait().await;
    assert!(alice.wait_presence(board, "leave", "bob", WAIT).await);
    zed.settle(Duration::from_millis(700)).await;
    alice.drain().await;
    let titles = |p: &Peer| -> Vec<String> {
        p.events("board:iso", "created", None)
            .iter()
            .map(|e| e["data"]["title"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(titles(&zed), ["solo"], "solo replica got cluster events");
    assert_eq!(
        titles(&alice),
        ["cluster"],
        "cluster got the solo replica's events ({from_cluster})"
    );
    assert_eq!(zed.keys(), sorted(&["zed"]));
    assert_eq!(zed.presence_count(board, "join", "alice"), 0);
    assert_eq!(zed.presence_count(board, "leave", "bob"), 0);
    assert!(!alice.roster.contains_key("zed"));
}

/// Awareness state set on one replica reaches members on another as a `join` upsert, and a
/// late joiner there finds it in the roster (read from Redis).
async fn awareness_crosses_replicas_and_reaches_late_joiners(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 1000);
    let r2 = Replica::start("r2", Some(&url), 1000);
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join("aw").await;
    alice.observe("aw").await;
    let mut bob = Peer::connect(&r2, "bob").await;
    bob.join("aw").await;
    bob.observe("aw").await;
    alice.client.fire(
        "collab/board/__presence_update",
        json!(["aw", {"editing": "c7"}]),
    );
    let until = Instant::now() + WAIT;
    let seen = bob
        .pump_until(until, |p| {
            p.roster.get("alice").is_some_and(|d| d["editing"] == "c7")
        })
        .await;
    assert!(seen, "bob on r2 sees alice's state: {:?}", bob.roster);
    assert_eq!(
        bob.roster["alice"],
        json!({ "name": "N-alice", "editing": "c7" })
    );
    let mut carol = Peer::connect(&r2, "carol").await;
    carol.join("aw").await;
    carol.observe("aw").await;
    assert_eq!(
        carol.roster["alice"]["editing"], "c7",
        "the late joiner's roster has it"
    );
    // Cleared when alice's socket leaves the room.
    alice.close_and_wait().await;
    let until = Instant::now() + WAIT;
    let gone = bob
        .pump_until(until, |p| !p.roster.contains_key("alice"))
        .await;
    assert!(gone, "alice left: {:?}", bob.roster);
}

/// Above the listed limit (2 here) members are counted, not listed, cluster-wide: observers on
/// two replicas converge to the same count and a roster of 2, and after kill -9 of the replica
/// holding half the members, to the survivors' count with waiting members promoted.
async fn count_mode_is_cluster_wide_and_survives_a_crash(redis: &dyn TestRedis) {
    let url = redis.url();
    let opts = || {
        let mut o = ReplicaOpts::new(Some(&url), 300);
        o.env.push(("LIVEROOM_PRESENCE_LIMIT", "2".to_owned()));
        o
    };
    let r1 = Replica::start_with("r1", opts());
    let mut r2 = Replica::start_with("r2", opts());
    let r3 = Replica::start_with("r3", opts());
    let mut obs1 = Peer::connect(&r1, "obs1").await;
    obs1.observe("big").await;
    let mut obs3 = Peer::connect(&r3, "obs3").await;
    obs3.observe("big").await;
    // u0..u2 on r2 first (they take the two listed places), then u3..u5 on r1.
    let mut members = Vec::new();
    for (i, r) in [(0, &r2), (1, &r2), (2, &r2), (3, &r1), (4, &r1), (5, &r1)] {
        let mut p = Peer::connect(r, &format!("u{i}")).await;
        p.join("big").await;
        members.push(p);
    }
    for obs in [&mut obs1, &mut obs3] {
        let until = Instant::now() + WAIT;
        let ok = obs
            .pump_until(until, |p| p.member_count == Some(6) && p.roster.len() == 2)
            .await;
        assert!(
            ok,
            "{}: count {:?}, roster {:?}",
            obs.user,
            obs.member_count,
            obs.keys()
        );
        assert_eq!(obs.keys(), sorted(&["u0", "u1"]));
    }
    // r2 dies with u0, u1 (listed) and u2 (waiting): the reaper promotes u3 and u4.
    r2.kill9();
    for obs in [&mut obs1, &mut obs3] {
        let until = Instant::now() + Duration::from_secs(10);
        let ok = obs
            .pump_until(until, |p| {
                p.member_count == Some(3) && p.keys() == sorted(&["u3", "u4"])
            })
            .await;
        assert!(
            ok,
            "{}: count {:?}, roster {:?}",
            obs.user,
            obs.member_count,
            obs.keys()
        );
    }
    assert_eq!(
        wait_fresh_roster(&r3, "big", &["u3", "u4"], WAIT).await,
        sorted(&["u3", "u4"])
    );
}

/// The room list (lobby) across replicas: what `p` received of room `room` so far (`None`:
/// not open), from its `created` / `deleted` events, the newest version winning.
fn lobby_count(p: &Peer, room: &str) -> Option<u64> {
    let mut shown: Option<(u64, u64)> = None; // (version, count)
    for e in p.log.iter().filter(|e| e["topic"] == "lobby:collab/board") {
        if e["data"]["room"] != room {
            continue;
        }
        match e["event"].as_str() {
            Some("created") => {
                let (v, n) = (e["data"]["version"].as_u64(), e["data"]["count"].as_u64());
                if let (Some(v), Some(n)) = (v, n) {
                    if shown.is_none_or(|(old, _)| v >= old) {
                        shown = Some((v, n));
                    }
                }
            }
            Some("deleted") => shown = None,
            _ => {}
        }
    }
    shown.map(|(_, n)| n)
}

/// A fresh lobby read from `replica`: room -> count.
async fn fresh_lobby(replica: &Replica) -> BTreeMap<String, u64> {
    let p = Peer::connect(replica, "reader").await;
    let list = p
        .client
        .stream("collab/board/__lobby", json!([]))
        .await
        .expect("the lobby loads");
    list.data
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["room"].as_str().unwrap_or_default().to_owned(),
                e["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The lobby's counts are cluster-wide: members on two replicas, a watcher on the third sees
/// the room open, count up, count down after kill -9 of a replica (the reaper's leaves), and
/// close with its last member; fresh reads on every replica agree.
async fn lobby_counts_are_cluster_wide_and_survive_a_crash(redis: &dyn TestRedis) {
    let url = redis.url();
    let r1 = Replica::start("r1", Some(&url), 300);
    let mut r2 = Replica::start("r2", Some(&url), 300);
    let r3 = Replica::start("r3", Some(&url), 300);
    let room = "board:lb";
    let mut watcher = Peer::connect(&r3, "watcher").await;
    watcher
        .client
        .stream("collab/board/__lobby", json!([]))
        .await
        .unwrap();
    let mut alice = Peer::connect(&r1, "alice").await;
    alice.join("lb").await;
    let mut members = Vec::new();
    for user in ["bob", "carol"] {
        let mut p = Peer::connect(&r2, user).await;
        p.join("lb").await;
        members.push(p);
    }
    let until = Instant::now() + WAIT;
    assert!(
        watcher
            .pump_until(until, |p| lobby_count(p, room) == Some(3))
            .await,
        "the watcher on r3 did not see 3 in the room: {:?}",
        lobby_count(&watcher, room)
    );
    for r in [&r1, &r2, &r3] {
        assert_eq!(fresh_lobby(r).await.get(room), Some(&3));
    }
    // kill -9 of r2 with bob and carol: the reaper's leaves bring the count to 1.
    r2.kill9();
    let until = Instant::now() + Duration::from_secs(10);
    assert!(
        watcher
            .pump_until(until, |p| lobby_count(p, room) == Some(1))
            .await,
        "after the crash: {:?}",
        lobby_count(&watcher, room)
    );
    assert_eq!(fresh_lobby(&r1).await.get(room), Some(&1));
    // The last member leaves: the room closes everywhere.
    alice.close_and_wait().await;
    let until = Instant::now() + WAIT;
    assert!(
        watcher
            .pump_until(until, |p| p.log.iter().any(|e| e["topic"]
                == "lobby:collab/board"
                && e["event"] == "deleted"))
            .await,
        "the room did not close"
    );
    assert_eq!(lobby_count(&watcher, room), None);
    for r in [&r1, &r3] {
        assert_eq!(fresh_lobby(r).await.get(room), None);
    }
}

/// Given a single node of a Redis Cluster, a replica finds the cluster (`INFO cluster`),
/// spreads its rooms over the shards and keeps every key of a room in the room's slot: after
/// joins in many boards, every shard holds some, and each board's keys sit on one shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_node_is_enough_and_rooms_spread_over_the_shards() {
    let cluster = RedisCluster::start(3, 0);
    let node = cluster.nodes[0].url();
    let r1 = Replica::start("r1", Some(&node), 300);
    let r2 = Replica::start("r2", Some(&cluster.url()), 300);
    let mut alice = Peer::connect(&r1, "alice").await;
    let mut bob = Peer::connect(&r2, "bob").await;
    let boards: Vec<String> = (0..12).map(|i| format!("s{i}")).collect();
    for b in &boards {
        alice.join(b).await;
        bob.join(b).await;
        alice.cursors(b).await;
        alice.add_card(b, "x").await;
    }
    for b in &boards {
        let both = sorted(&["alice", "bob"]);
        assert_eq!(
            wait_fresh_roster(&r1, b, &["alice", "bob"], WAIT).await,
            both,
            "{b}"
        );
        assert_eq!(
            wait_fresh_roster(&r2, b, &["alice", "bob"], WAIT).await,
            both,
            "{b}"
        );
        assert_eq!(
            cluster.counts(b),
            counts(&[("alice", 1), ("bob", 1)]),
            "{b}"
        );
    }
    let mut shards = BTreeSet::new();
    for b in &boards {
        let tag = format!("{{board:{b}}}");
        let mut on = BTreeSet::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("*{tag}*"))
                .query(&mut node.conn())
                .unwrap();
            if !keys.is_empty() {
                on.insert(i);
            }
        }
        assert_eq!(on.len(), 1, "{b}'s keys are on shards {on:?}");
        shards.extend(on);
    }
    assert_eq!(shards.len(), 3, "12 boards on shards {shards:?}");
    assert!(!r1.log().contains("CROSSSLOT") && !r2.log().contains("CROSSSLOT"));
}

on_both!(
    rosters_span_replicas,
    events_and_cursors_cross_replicas_exactly_once,
    same_user_on_two_replicas_joins_and_leaves_once,
    hop_between_replicas_inside_grace_is_invisible,
    hundred_concurrent_joins_and_leaves_count_exactly,
    killed_replica_leaves_no_ghosts,
    graceful_shutdown_leaves_promptly,
    awareness_crosses_replicas_and_reaches_late_joiners,
    count_mode_is_cluster_wide_and_survives_a_crash,
    lobby_counts_are_cluster_wide_and_survive_a_crash,
);
