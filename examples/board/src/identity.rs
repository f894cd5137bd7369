//! Who is who: the `lr_user` / `lr_name` / `lr_color` cookies.
//!
//! A page load without `lr_user` gets a random id, a readable name ("Brave Otter") and a colour,
//! as cookies the page can read too (it shows them and lets the user change name and colour).
//! The WebSocket upgrade hook turns the cookies into the user `{id, name, color}`; without them
//! the connection is a guest, which the board room refuses.

use liveroom::{Reject, UpgradeRequest};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

/// Cookie holding the user id.
pub const USER_COOKIE: &str = "lr_user";
/// Cookie holding the display name.
pub const NAME_COOKIE: &str = "lr_name";
/// Cookie holding the colour (`#rrggbb`).
pub const COLOR_COOKIE: &str = "lr_color";
/// Longest display name kept.
pub const MAX_NAME: usize = 40;

const ADJECTIVES: &[&str] = &[
    "Brave", "Calm", "Clever", "Cosy", "Curious", "Daring", "Eager", "Fuzzy", "Gentle", "Happy",
    "Jolly", "Kind", "Lively", "Lucky", "Merry", "Mighty", "Nimble", "Plucky", "Proud", "Quick",
    "Quiet", "Rapid", "Shiny", "Silly", "Sleepy", "Sly", "Snappy", "Steady", "Sunny", "Swift",
    "Tidy", "Witty", "Zesty", "Bold", "Bright", "Cheerful",
];

const ANIMALS: &[&str] = &[
    "Otter", "Badger", "Beaver", "Bison", "Crane", "Dolphin", "Falcon", "Ferret", "Fox", "Gecko",
    "Heron", "Ibex", "Koala", "Lemur", "Lynx", "Marten", "Moose", "Narwhal", "Owl", "Panda",
    "Pelican", "Penguin", "Puffin", "Quokka", "Rabbit", "Raven", "Seal", "Sparrow", "Squirrel",
    "Tapir", "Tiger", "Walrus", "Wombat", "Yak", "Zebra", "Hedgehog",
];

/// Pleasant, readable on white, distinct from each other.
pub const PALETTE: &[&str] = &[
    "#e11d48", "#db2777", "#c026d3", "#9333ea", "#4f46e5", "#2563eb", "#0284c7", "#0891b2",
    "#0d9488", "#059669", "#16a34a", "#65a30d", "#ca8a04", "#d97706", "#ea580c", "#dc2626",
];

/// A fresh identity: `(id, name, color)`.
pub fn generate() -> (String, String, String) {
    let mut rng = rand::rng();
    let id: String = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let name = format!(
        "{} {}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        ANIMALS[rng.random_range(0..ANIMALS.len())]
    );
    let color = PALETTE[rng.random_range(0..PALETTE.len())].to_owned();
    (id, name, color)
}

/// A random id of `len` letters and digits.
pub fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn hash(s: &str) -> usize {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as usize
}

/// The name a user id gets when its `lr_name` cookie is missing or unusable.
pub fn name_for(id: &str) -> String {
    let h = hash(id);
    format!(
        "{} {}",
        ADJECTIVES[h % ADJECTIVES.len()],
        ANIMALS[(h / ADJECTIVES.len()) % ANIMALS.len()]
    )
}

/// The colour a user id gets when its `lr_color` cookie is missing or unusable.
pub fn color_for(id: &str) -> String {
    PALETTE[hash(id) % PALETTE.len()].to_owned()
}

/// User ids and board ids: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `#rrggbb`.
pub fn valid_color(color: &str) -> bool {
    color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A display name: trimmed, without control characters, at most [`MAX_NAME`] characters;
/// `None` if nothing is left.
pub fn clean_name(name: &str) -> Option<String> {
    let name: String = name
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(MAX_NAME)
        .collect();
    let name = name.trim_end().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The user for a set of cookie values, or `None` (a guest) without a valid `lr_user`.
pub fn user_from(id: Option<&str>, name: Option<&str>, color: Option<&str>) -> Option<Value> {
    let id = id.filter(|id| valid_id(id))?;
    let name = name.and_then(clean_name).unwrap_or_else(|| name_for(id));
    let color = color
        .filter(|c| valid_color(c))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| color_for(id));
    Some(json!({ "id": id, "name": name, "color": color }))
}

/// The WebSocket upgrade hook: cookies to user, no cookies to guest. Never rejects: the board
/// room's guard answers guests with `UNAUTHENTICATED`, which the page shows.
pub async fn authenticate(req: UpgradeRequest) -> Result<Option<Value>, Reject> {
    Ok(user_from(
        req.cookie(USER_COOKIE),
        req.cookie(NAME_COOKIE),
        req.cookie(COLOR_COOKIE),
    ))
}

/// Percent-encodes a cookie value the way the page's `encodeURIComponent` does.
pub fn encode_cookie_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A `Set-Cookie` value readable by the page (not `HttpOnly`), kept for a year.
pub fn set_cookie(name: &str, value: &str) -> String {
    format!(
        "{name}={}; Path=/; Max-Age=31536000; SameSite=Lax",
        encode_cookie_value(value)
    )
}

/// The `Set-Cookie` values a page response needs given the request's cookies: a new identity
/// without a valid `lr_user`, else whichever of `lr_name` / `lr_color` is missing.
pub fn missing_cookies(req: &UpgradeRequest) -> Vec<String> {
    match req.cookie(USER_COOKIE).filter(|id| valid_id(id)) {
        None => {
            let (id, name, color) = generate();
            vec![
                set_cookie(USER_COOKIE, &id),
                set_cookie(NAME_COOKIE, &name),
                set_cookie(COLOR_COOKIE, &color),
            ]
        }
        Some(id) => {
            let mut out = Vec::new();
            if req.cookie(NAME_COOKIE).and_then(clean_name).is_none() {
                out.push(set_cookie(NAME_COOKIE, &name_for(id)));
            }
            if !req.cookie(COLOR_COOKIE).is_some_and(valid_color) {
                out.push(set_cookie(COLOR_COOKIE, &color_for(id)));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn req(cookie: &str) -> UpgradeRequest {
        let mut h = HeaderMap::new();
        h.insert("cookie", cookie.parse().unwrap());
        UpgradeRequest::new(h, None, None)
    }

    #[test]
    fn generated_identities_are_valid() {
        for _ in 0..50 {
            let (id, name, color) = generate();
            assert!(valid_id(&id));
            assert_eq!(clean_name(&name).as_deref(), Some(name.as_str()));
            assert!(valid_color(&color));
        }
    }

    #[test]
    fn cookies_round_trip_through_the_upgrade_hook() {
        let r = req("lr_user=abc; lr_name=Brave%20Otter; lr_color=%23E11D48");
        let user = user_from(
            r.cookie("lr_user"),
            r.cookie("lr_name"),
            r.cookie("lr_color"),
        );
        assert_eq!(
            user,
            Some(json!({ "id": "abc", "name": "Brave Otter", "color": "#e11d48" }))
        );
        assert!(missing_cookies(&r).is_empty());
    }

    #[test]
    fn bad_cookies_are_repaired_or_ignored() {
        assert_eq!(user_from(None, Some("x"), None), None);
        assert_eq!(user_from(Some("a b"), Some("x"), None), None);
        let user = user_from(Some("abc"), Some("  \u{7}  "), Some("red")).unwrap();
        assert_eq!(user["name"], name_for("abc"));
        assert_eq!(user["color"], color_for("abc"));
        let long = "x".repeat(100);
        let user = user_from(Some("abc"), Some(&long), None).unwrap();
        assert_eq!(user["name"].as_str().unwrap().len(), MAX_NAME);
        assert_eq!(missing_cookies(&req("lr_user=abc")).len(), 2);
        assert_eq!(missing_cookies(&req("other=1")).len(), 3);
    }

    #[test]
    fn set_cookie_encodes() {
        assert_eq!(
            set_cookie("lr_name", "Brave Otter"),
            "lr_name=Brave%20Otter; Path=/; Max-Age=31536000; SameSite=Lax"
        );
        assert_eq!(encode_cookie_value("#0d9488"), "%230d9488");
    }
}
