//! Cluster-wide sequence numbers and replay buffers in Redis (docs/clustering.md, "Delivery").
//!
//! Per topic `T`, in its room's hash slot (see [`super::keys`]):
//! - `__live-seq:{T}`: the newest seq, a string; created at the clock base (`seq_base`, Unix
//!   ms × 1000) so a topic whose keys expired starts far above the seqs it handed out before;
//! - `__live-buf:{T}`: a LIST of entries `<unix ms>|<length>|<body>`, oldest first, one per
//!   event, the newest being the seq key's. The seqs are contiguous, so an entry's seq is its
//!   position counted back from the newest; both keys expire the replay age after the last
//!   publish.
//!
//! One script assigns the next seqs, appends to the buffer and publishes, so Redis itself orders
//! a topic's events: every replica receives them on the topic's channel in seq order, its own
//! included. The message is `#<first seq>|` and then the batch's entries, the same strings the
//! buffer holds. The publishing replica builds the entries; the script does no work per event
//! beyond handing the arguments on, and each receiver closes every body with its
//! `,"seq":<seq>}`. (Building each event's entry in Lua, with its seq, cost 31 µs per call of
//! about 3.5 events under load; see BENCHMARKS.md, "The seq cost".)

use super::keys;
use crate::replay::{seq_base, Coverage, Replay};
use bytes::Bytes;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a session's stream calls are kept after the last stream call.
pub const SESSION_TTL_MS: i64 = 3_600_000;

/// The publish script. KEYS: seq, buffer. ARGV: channel, publish command (`PUBLISH`, or
/// `SPUBLISH` on a Redis Cluster), base, events kept, age ms, floor, then the events' entries
/// (`<unix ms>|<length>|<body>`, each body an envelope without its closing brace). Returns the
/// newest seq.
///
/// The floor is the newest seq the publishing replica has delivered: after a failover whose new
/// primary had not yet received the last writes (replication is asynchronous), the counter goes
/// on from there instead of handing out seqs its subscribers already had. A counter that starts
/// again (absent, or raised to the floor) empties the buffer, whose seqs would no longer join up
/// with the new ones. The buffer may hold up to 32 entries over its count: trimming every call
/// once it is full cost a `LTRIM` per publish.
const PUBLISH: &str = r#"
local n = redis.call('GET', KEYS[1])
local floor = tonumber(ARGV[6])
if n then n = tonumber(n) else n = tonumber(ARGV[3]); redis.call('DEL', KEYS[2]) end
if n < floor then n = floor; redis.call('DEL', KEYS[2]) end
local first = string.format('%.0f', n + 1)
n = n + #ARGV - 6
local last = string.format('%.0f', n)
redis.call('SET', KEYS[1], last, 'PX', ARGV[5])
local keep = tonumber(ARGV[4])
if keep > 0 then
  local len = redis.call('RPUSH', KEYS[2], unpack(ARGV, 7))
  if len > keep + 32 then redis.call('LTRIM', KEYS[2], -keep, -1) end
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
else
  redis.call('DEL', KEYS[2])
end
redis.call(ARGV[2], ARGV[1], '#' .. first .. '|' .. table.concat(ARGV, '', 7))
return last
"#;

/// The head script: the newest seq, started at ARGV[1] (expiring after ARGV[2] ms) if none.
const HEAD: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
"#;

/// The read script: the newest seq, the seq of the buffer's oldest entry and the entries after
/// seq ARGV[1], at one instant (just the oldest when the buffer starts after it). The seqs are
/// contiguous and the newest entry is the head's, so the entry after ARGV[1] is found by its
/// index, and a client that missed a few events reads a few entries, not the whole buffer.
const READ: &str = r#"
local head = redis.call('GET', KEYS[1])
if not head then return {'0', '0', {}} end
local len = redis.call('LLEN', KEYS[2])
local first = tonumber(head) - len + 1
local from = tonumber(ARGV[1]) + 1 - first
if len == 0 then return {head, head, {}} end
if from < 0 then return {head, string.format('%.0f', first), redis.call('LRANGE', KEYS[2], 0, 0)} end
return {head, string.format('%.0f', first), redis.call('LRANGE', KEYS[2], from, -1)}
"#;

fn script(which: &'static OnceLock<redis::Script>, text: &str) -> &'static redis::Script {
    which.get_or_init(|| redis::Script::new(text))
}

/// The publish script.
pub fn publish_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    script(&S, PUBLISH)
}

fn head_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    script(&S, HEAD)
}

/// The newest seq of `topic`, started now if it has none.
pub async fn head(redis: &super::Redis, topic: &str, age: Duration) -> Option<u64> {
    let key = keys::seq(topic);
    let seq: String = redis
        .run(|mut c| async move {
            head_script()
                .key(key)
                .arg(seq_base())
                .arg(age.as_millis().max(1) as u64)
                .invoke_async(&mut c)
                .await
        })
        .await
        .ok()?;
    seq.parse().ok()
}

fn read_script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    script(&S, READ)
}

/// The publish of `bodies` on `topic` under `policy`, with `publish` the publish command
/// (`PUBLISH` or `SPUBLISH`) and `floor` the newest seq this replica delivered on it.
pub fn publish(
    publish: &str,
    topic: &str,
    bodies: &[Bytes],
    policy: &Replay,
    floor: u64,
) -> redis::Cmd {
    let now = unix_ms();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(publish_script().get_hash())
        .arg(2)
        .arg(keys::seq(topic))
        .arg(keys::buffer(topic))
        .arg(keys::channel(topic))
        .arg(publish)
        .arg(seq_base())
        .arg(policy.events)
        .arg(policy.age.as_millis().max(1) as u64)
        .arg(floor);
    let mut entry = Vec::new();
    for b in bodies {
        entry.clear();
        write_entry(&mut entry, now, b);
        cmd.arg(&entry[..]);
    }
    cmd
}

/// `<unix ms>|<length>|<body>`.
fn write_entry(out: &mut Vec<u8>, ms: u64, body: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "{ms}|{}|", body.len());
    out.extend_from_slice(body);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Whether `e` says the scripts are not loaded (a Redis that restarted).
pub fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// Parses a published message into its `(seq, envelope)` pairs; `None` if it is not one.
pub fn parse(payload: &[u8]) -> Option<Vec<(u64, Bytes)>> {
    let (first, mut rest) = number(payload.strip_prefix(b"#")?)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (_, body, after) = entry(rest)?;
        out.push((first + out.len() as u64, body));
        rest = after;
    }
    out.iter()
        .map(|(seq, body)| Some((*seq, envelope(body, *seq))))
        .collect()
}

/// `<unix ms>|<length>|<body>rest` -> (ms, body, rest).
fn entry(s: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (at, s) = number(s)?;
    let (len, s) = number(s)?;
    let len = usize::try_from(len).ok()?;
    Some((at, s.get(..len)?, &s[len..]))
}

/// The envelope: `body` (one without its closing brace), `,"seq":<seq>` and the brace.
fn envelope(body: &[u8], seq: u64) -> Bytes {
    use std::io::Write;
    let mut out = Vec::with_capacity(body.len() + 28);
    out.extend_from_slice(body);
    let _ = write!(out, r#","seq":{seq}}}"#);
    Bytes::from(out)
}

/// `<digits>|rest` -> (number, rest).
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let bar = s.iter().position(|b| *b == b'|')?;
    let n = std::str::from_utf8(&s[..bar]).ok()?.parse().ok()?;
    Some((n, &s[bar + 1..]))
}

/// Reads `topic`'s buffer: the events after `after` no older than `age`, and the newest seq.
pub async fn read(
    redis: &super::Redis,
    topic: &str,
    after: u64,
    age: Duration,
) -> Option<(Coverage, u64)> {
    let (seq, buf) = (keys::seq(topic), keys::buffer(topic));
    let (head, first, entries): (String, String, Vec<Vec<u8>>) = redis
        .run(|mut c| async move {
            let mut inv = read_script().key(seq);
            inv.key(buf).arg(after);
            inv.invoke_async(&mut c).await
        })
        .await
        .ok()?;
    let head: u64 = head.parse().unwrap_or(0);
    if after == head {
        return Some((Coverage::Covered(Vec::new()), head));
    }
    let first: u64 = first.parse().unwrap_or(0);
    // The entries start at `first` when the buffer starts after `after`, else right after it.
    let start = if after + 1 >= first { after + 1 } else { first };
    let oldest = unix_ms().saturating_sub(age.as_millis() as u64);
    let mut events = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let (at, body, _) = entry(e)?;
        if at >= oldest {
            let seq = start + i as u64;
            events.push((seq, envelope(body, seq)));
        }
    }
    let covered = after < head && events.first().is_some_and(|(first, _)| after + 1 >= *first);
    if !covered {
        return Some((Coverage::Truncated, head));
    }
    Some((Coverage::Covered(events), head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_script_publishes() {
        // Two entries from seq 17: each body gets its seq and closing brace back.
        let msg = b"#17|5|2|{a5|10|{\"b\":\"|1|\"";
        assert_eq!(
            parse(msg),
            Some(vec![
                (17, Bytes::from_static(b"{a,\"seq\":17}")),
                (18, Bytes::from_static(b"{\"b\":\"|1|\",\"seq\":18}"))
            ])
        );
        assert_eq!(parse(b"replica|{}"), None);
        assert_eq!(parse(b"#1|5|99|{"), None, "a length past the end");
    }

    #[test]
    fn entries_are_written_as_they_are_parsed() {
        let mut e = Vec::new();
        write_entry(&mut e, 1234, br#"{"x":1"#);
        assert_eq!(e, br#"1234|6|{"x":1"#);
        let (at, body, rest) = entry(&e).unwrap();
        assert_eq!((at, body, rest), (1234, &br#"{"x":1"#[..], &b""[..]));
    }
}
