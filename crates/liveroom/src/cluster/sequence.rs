//! Cluster-wide sequence numbers and replay buffers in Redis (docs/clustering.md, "Delivery").
//!
//! Per topic `T`, in its room's hash slot (see [`super::keys`]):
//! - `__live-seq:{T}`: the newest seq, a string; created at the clock base (`seq_base`, Unix
//!   ms × 1000) so a topic whose keys expired starts far above the seqs it handed out before;
//! - `__live-buf:{T}`: a LIST of entries `<seq>|<unix ms>|<length>|<envelope>`, oldest first,
//!   trimmed to the topic's count; both keys expire the replay age after the last publish.
//!
//! One script assigns the next seqs, appends to the buffer and publishes, so Redis itself orders
//! a topic's events: every replica receives them on the topic's channel in seq order, its own
//! included. The message is `#` and then the batch's entries, the same strings the buffer
//! holds: the script builds each event's entry once (one concatenation), which keeps the cost
//! of a sequenced event in Redis close to that of a plain `PUBLISH`.

use super::keys;
use crate::replay::{seq_base, Coverage, Replay};
use bytes::Bytes;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a session's stream calls are kept after the last stream call.
pub const SESSION_TTL_MS: i64 = 3_600_000;

/// The publish script. KEYS: seq, buffer. ARGV: channel, publish command (`PUBLISH`, or
/// `SPUBLISH` on a Redis Cluster), base, events kept, age ms, now ms, floor, then the envelope
/// bodies (each without its closing brace). Returns the newest seq.
///
/// The floor is the newest seq the publishing replica has delivered: after a failover whose new
/// primary had not yet received the last writes (replication is asynchronous), the counter goes
/// on from there instead of handing out seqs its subscribers already had.
const PUBLISH: &str = r#"
local n = redis.call('GET', KEYS[1])
if n then n = tonumber(n) else n = tonumber(ARGV[3]) end
local floor = tonumber(ARGV[7])
if n < floor then n = floor end
local keep, now = tonumber(ARGV[4]), ARGV[6]
local entries = {}
for i = 8, #ARGV do
  n = n + 1
  local s = string.format('%.0f', n)
  local body = ARGV[i]
  -- The envelope is the body, `,"seq":<s>` and the closing brace: 8 bytes and the digits.
  entries[i - 7] = s .. '|' .. now .. '|' .. (#body + 8 + #s) .. '|' .. body .. ',"seq":' .. s .. '}'
end
redis.call('SET', KEYS[1], string.format('%.0f', n), 'PX', ARGV[5])
if keep > 0 then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  redis.call('LTRIM', KEYS[2], -keep, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call(ARGV[2], ARGV[1], '#' .. table.concat(entries))
return string.format('%.0f', n)
"#;

/// The head script: the newest seq, started at ARGV[1] (expiring after ARGV[2] ms) if none.
const HEAD: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
"#;

/// The read script: the newest seq and the buffer's entries after seq ARGV[1], at one instant
/// (just the first entry when the buffer starts after it). Seqs in the buffer are contiguous, so
/// the entry after ARGV[1] is found by its index, and a client that missed a few events reads a
/// few entries, not the whole buffer.
const READ: &str = r#"
local head = redis.call('GET', KEYS[1]) or '0'
local first = redis.call('LINDEX', KEYS[2], 0)
if not first then return {head, {}} end
local from = tonumber(ARGV[1]) + 1 - tonumber(string.match(first, '^(%d+)|'))
if from < 0 then return {head, {first}} end
return {head, redis.call('LRANGE', KEYS[2], from, -1)}
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
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
        .arg(now)
        .arg(floor);
    for b in bodies {
        cmd.arg(b.as_ref());
    }
    cmd
}

/// Whether `e` says the scripts are not loaded (a Redis that restarted).
pub fn is_noscript(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// Parses a published message into its `(seq, envelope)` pairs; `None` if it is not one.
pub fn parse(payload: &[u8]) -> Option<Vec<(u64, Bytes)>> {
    let mut rest = payload.strip_prefix(b"#")?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (seq, _, frame, after) = entry(rest)?;
        out.push((seq, Bytes::copy_from_slice(frame)));
        rest = after;
    }
    Some(out)
}

/// `<seq>|<unix ms>|<length>|<envelope>rest` -> (seq, ms, envelope, rest).
fn entry(s: &[u8]) -> Option<(u64, u64, &[u8], &[u8])> {
    let (seq, s) = number(s)?;
    let (at, s) = number(s)?;
    let (len, s) = number(s)?;
    let len = usize::try_from(len).ok()?;
    Some((seq, at, s.get(..len)?, &s[len..]))
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
    let (head, entries): (String, Vec<Vec<u8>>) = redis
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
    let oldest = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
        .saturating_sub(age.as_millis() as u64);
    let mut events = Vec::with_capacity(entries.len());
    for e in &entries {
        let (seq, at, frame, _) = entry(e)?;
        if at >= oldest {
            events.push((seq, Bytes::copy_from_slice(frame)));
        }
    }
    let covered = after < head && events.first().is_some_and(|(first, _)| after + 1 >= *first);
    if !covered {
        return Some((Coverage::Truncated, head));
    }
    events.retain(|(seq, _)| *seq > after);
    Some((Coverage::Covered(events), head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_script_publishes() {
        let msg = b"#17|5|3|{a}18|5|11|{\"b\":\"|1|\"}";
        assert_eq!(
            parse(msg),
            Some(vec![
                (17, Bytes::from_static(b"{a}")),
                (18, Bytes::from_static(b"{\"b\":\"|1|\"}"))
            ])
        );
        assert_eq!(parse(b"replica|{}"), None);
        assert_eq!(parse(b"#1|5|99|{}"), None, "a length past the end");
    }
}
