//! Redis Cluster failover under live rooms (docs/clustering.md, "Redis Cluster"): a 3-master,
//! 3-replica cluster started by the test, three liveroom replicas, and the master that owns a
//! busy board killed with SIGKILL. Its replica is promoted; rosters converge, a member who left
//! during the failover is gone within the documented bound, and every event published
//! meanwhile either arrives or ends in the reload marker, on every replica.

mod common;

use common::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
/// The heartbeat of the replicas (the default).
const HEARTBEAT: Duration = Duration::from_secs(1);

fn titles(p: &Peer, topic: &str) -> Vec<String> {
    p.events(topic, "created", None)
        .iter()
        .filter_map(|e| e["data"]["title"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `p` got the card `title` on `topic`, with a seq.
async fn assert_sequenced(p: &mut Peer, topic: &str, title: &str) {
    let got = p
        .pump_until(Instant::now() + WAIT, |p| {
            p.events(topic, "created", None)
                .iter()
                .any(|e| e["data"]["title"] == title && e["seq"].is_u64())
        })
        .await;
    assert!(got, "{} got no sequenced {title}: {:?}", p.user, p.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_is_survived() {
    let mut cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let r1 = Replica::start("r1", Some(&url), 300);
    let r2 = Replica::start("r2", Some(&url), 300);
    let r3 = Replica::start("r3", Some(&url), 300);
    // The board whose shard dies, and one on a shard that stays.
    let (board, topic) = ("fo", "board:fo");
    let master = cluster.master_of(&presence_key(board));
    let calm = (0..)
        .map(|i| format!("calm{i}"))
        .find(|b| cluster.master_of(&presence_key(b)) != master)
        .unwrap();

    let mut alice = Peer::connect(&r1, "alice").await;
    let mut bob = Peer::connect(&r2, "bob").await;
    let mut carol = Peer::connect(&r3, "carol").await;
    for p in [&mut alice, &mut bob, &mut carol] {
        p.join(board).await;
    }
    alice.observe(board).await;
    let mut dan = Peer::connect(&r1, "dan").await;
    let mut eve = Peer::connect(&r3, "eve").await;
    dan.join(&calm).await;
    eve.join(&calm).await;
    dan.observe(&calm).await;
    assert!(alice.wait_roster(&["alice", "bob", "carol"], WAIT).await);
    assert!(dan.wait_roster(&["dan", "eve"], WAIT).await);
    // Each replica subscribes the board's data channel once, on the board's shard.
    let channel = format!("__live-bus:{{{topic}}}");
    assert!(eventually(WAIT, || cluster.shard_subscribers(&channel) == 3).await);
    bob.add_card(board, "before").await;
    assert!(
        alice
            .pump_until(Instant::now() + WAIT, |p| titles(p, topic) == ["before"])
            .await
    );

    // The master dies. Meanwhile carol leaves and bob adds cards.
    let killed = Instant::now();
    cluster.kill(master);
    carol.close_and_wait().await;
    let during: Vec<String> = (0..5).map(|i| format!("during{i}")).collect();
    for t in &during {
        bob.add_card(board, t).await;
    }
    let failover = cluster
        .wait_failover(&presence_key(board), Duration::from_secs(30))
        .expect("a replica was promoted");

    // Rosters converge on every replica, carol gone, the calm board untouched.
    let bound = failover + 2 * HEARTBEAT + Duration::from_secs(2);
    let deadline = killed + bound;
    let until = deadline.saturating_duration_since(Instant::now());
    assert!(
        alice.wait_roster(&["alice", "bob"], until).await,
        "alice's roster {:?} {:?} after the kill",
        alice.keys(),
        killed.elapsed()
    );
    let converged = killed.elapsed();
    for r in [&r1, &r2, &r3] {
        assert_eq!(
            wait_fresh_roster(r, board, &["alice", "bob"], WAIT).await,
            sorted(&["alice", "bob"]),
            "{}",
            r.name
        );
        assert_eq!(
            wait_fresh_roster(r, &calm, &["dan", "eve"], WAIT).await,
            sorted(&["dan", "eve"]),
            "{}",
            r.name
        );
    }
    assert_eq!(
        cluster.counts(board),
        [("alice".to_owned(), 1), ("bob".to_owned(), 1)].into()
    );

    // Every card of the failover reached alice (on r1; bob's replica published them), or she
    // got the reload marker that makes her client load the board again.
    let delivered = alice
        .pump_until(Instant::now() + Duration::from_secs(10), |p| {
            let got = titles(p, topic);
            p.count(topic, "truncated", None) > 0 || during.iter().all(|t| got.contains(t))
        })
        .await;
    let live = titles(&alice, topic)
        .iter()
        .filter(|t| during.contains(t))
        .count();
    let marked = alice.count(topic, "truncated", None);
    assert!(
        delivered,
        "alice got neither the cards nor a marker: {:?}",
        alice.log
    );
    // Events flow again, with seqs, across the new primary.
    bob.add_card(board, "after").await;
    assert_sequenced(&mut alice, topic, "after").await;
    // The subscriptions followed the slot to its new primary (r3's went with carol).
    assert!(
        eventually(WAIT, || cluster.shard_subscribers(&channel) == 2).await,
        "{} subscribers on the new primary",
        cluster.shard_subscribers(&channel)
    );
    eprintln!(
        "failover: promoted after {:.2} s; rosters converged {:.2} s after the kill (bound \
         {:.2} s); of {} events published meanwhile, {live} arrived live, reload markers: \
         {marked}",
        failover.as_secs_f64(),
        converged.as_secs_f64(),
        bound.as_secs_f64(),
        during.len(),
    );
}

/// A board's slot migrates to another shard while cards are added: rosters stay right, the
/// subscriptions follow the slot, and every card arrives or ends in the reload marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let url = cluster.url();
    let r1 = Replica::start("r1", Some(&url), 300);
    let r2 = Replica::start("r2", Some(&url), 300);
    let r3 = Replica::start("r3", Some(&url), 300);
    let (board, topic) = ("mg", "board:mg");
    let key = presence_key(board);
    let channel = format!("__live-bus:{{{topic}}}");
    let from = cluster.master_of(&key);
    let to = (0..3).find(|i| *i != from).unwrap();

    let mut alice = Peer::connect(&r1, "alice").await;
    let mut bob = Peer::connect(&r2, "bob").await;
    alice.join(board).await;
    bob.join(board).await;
    alice.observe(board).await;
    assert!(alice.wait_roster(&["alice", "bob"], WAIT).await);
    assert!(eventually(WAIT, || cluster.shard_subscribers(&channel) == 2).await);

    let cards: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let adding = async {
        for t in &cards {
            bob.add_card(board, t).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    let moving = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::block_in_place(|| cluster.migrate(&key, to));
    };
    tokio::join!(adding, moving);
    assert_eq!(cluster.master_of(&key), to);

    // Every card arrived, or the marker did.
    assert!(
        alice
            .pump_until(Instant::now() + Duration::from_secs(10), |p| {
                let got = titles(p, topic);
                p.count(topic, "truncated", None) > 0 || cards.iter().all(|t| got.contains(t))
            })
            .await,
        "{:?}",
        alice.log
    );
    // The subscriptions moved with the slot, and live changes flow through the new shard.
    assert!(
        eventually(WAIT, || cluster.shard_subscribers(&channel) == 2).await,
        "{} subscribers on the new owner",
        cluster.shard_subscribers(&channel)
    );
    let mut carol = Peer::connect(&r3, "carol").await;
    carol.join(board).await;
    assert!(alice.wait_roster(&["alice", "bob", "carol"], WAIT).await);
    bob.add_card(board, "after").await;
    assert_sequenced(&mut alice, topic, "after").await;
    assert_eq!(cluster.counts(board).len(), 3);
    let live = titles(&alice, topic)
        .iter()
        .filter(|t| cards.contains(t))
        .count();
    eprintln!(
        "slot migration: {live} of {} cards arrived live, reload markers: {}",
        cards.len(),
        alice.count(topic, "truncated", None)
    );
}
