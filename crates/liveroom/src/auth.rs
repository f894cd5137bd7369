//! The upgrade hook's view of the HTTP request, and its rejections.

use crate::close;
use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the upgrade hook sees of the WebSocket upgrade request.
#[derive(Debug, Clone, Default)]
pub struct UpgradeRequest {
    /// Request headers.
    pub headers: HeaderMap,
    /// Query parameters (last value wins).
    pub query: HashMap<String, String>,
    /// Cookies from the `Cookie` header.
    pub cookies: HashMap<String, String>,
    /// The peer address, when known.
    pub remote_addr: Option<SocketAddr>,
}

impl UpgradeRequest {
    /// Builds the view from headers, the raw query string and the peer address.
    pub fn new(headers: HeaderMap, query: Option<&str>, remote_addr: Option<SocketAddr>) -> Self {
        let query = query
            .map(|q| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (percent_decode(k), percent_decode(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cookies = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                Some((
                    k.trim().to_owned(),
                    percent_decode(v.trim().trim_matches('"')),
                ))
            })
            .collect();
        UpgradeRequest {
            headers,
            query,
            cookies,
            remote_addr,
        }
    }

    /// A cookie's (percent-decoded) value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// A query parameter's (percent-decoded) value.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A header's value, if it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the upgrade hook refused a connection. The socket is accepted, then closed with the
/// code, which the client treats as terminal (no reconnect loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Close with 4401: no valid credentials.
    #[error("unauthenticated")]
    Unauthenticated,
    /// Close with 4403: credentials valid, access refused.
    #[error("forbidden")]
    Forbidden,
}

impl Reject {
    /// The close code.
    pub fn close_code(self) -> u16 {
        match self {
            Reject::Unauthenticated => close::UNAUTHENTICATED,
            Reject::Forbidden => close::FORBIDDEN,
        }
    }
}

pub(crate) type AuthFn =
    Arc<dyn Fn(UpgradeRequest) -> BoxFuture<'static, Result<Option<Value>, Reject>> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; lr_name=Ada%20L".parse().unwrap());
        let r = UpgradeRequest::new(h, Some("user=bo+b&x=%zz"), None);
        assert_eq!(r.cookie("lr_name"), Some("Ada L"));
        assert_eq!(r.query("user"), Some("bo b"));
        assert_eq!(r.query("x"), Some("%zz"));
    }
}
