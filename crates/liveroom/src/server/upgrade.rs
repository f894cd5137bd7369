//! The WebSocket upgrade (RFC 6455 section 4.2): the handshake checks, the Origin allow-list
//! and the app's upgrade hook, then the 101 and the hand-over to [`socket`](super::socket).

use super::config::ServerConfig;
use super::shared::{Shared, Slot};
use super::socket::{serve_socket, Open, Refusal};
use crate::auth::UpgradeRequest;
use crate::close;
use crate::rate::RateLimit;
use crate::ws;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use axum::Extension;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The Origin check (protocol.md section 1): the page's own host, plus the configured
/// origins. `Err` carries the refused origin.
fn origin_allowed<'a>(config: &ServerConfig, headers: &'a HeaderMap) -> Result<(), &'a str> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(()); // not a browser
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let same_host = host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    let listed = config
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if same_host || listed {
        Ok(())
    } else {
        Err(origin)
    }
}

/// Logs a refused origin at warn, with how to allow it; at most once a second, so a flood of
/// refused upgrades cannot flood the log.
fn warn_refused_origin(origin: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(
            origin,
            "refused a WebSocket from origin {origin}: allow it with \
             --allowed-origins {origin} (LIVEROOM_ALLOWED_ORIGINS), or serve the page from this \
             server or through a proxy of /ws"
        );
    }
}

/// The client's opening handshake (RFC 6455 section 4.2.1): its `Sec-WebSocket-Key`, or the
/// answer that refuses it: 426 with the version we speak for a wrong version (section 4.4),
/// 400 for anything else.
#[allow(clippy::result_large_err)] // the refusal is a whole HTTP response
fn handshake(method: &Method, headers: &HeaderMap) -> Result<String, Response<Body>> {
    let refuse = |status: StatusCode, why: &'static str| {
        let mut r = Response::builder().status(status);
        if status == StatusCode::UPGRADE_REQUIRED {
            r = r
                .header(header::SEC_WEBSOCKET_VERSION, "13")
                .header(header::UPGRADE, "websocket");
        }
        Err(r.body(Body::from(why)).expect("valid response"))
    };
    if method != Method::GET
        || !header_has(headers, header::UPGRADE, "websocket")
        || !header_has(headers, header::CONNECTION, "upgrade")
    {
        return refuse(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version: this server speaks 13",
        );
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    {
        Some(key) if ws::valid_key(key) => Ok(key.to_owned()),
        _ => refuse(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be the base64 of 16 bytes",
        ),
    }
}

/// The `/ws` route.
pub(super) async fn ws_handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Extension(slot): Extension<Arc<Slot>>,
    req: Request<Body>,
) -> Response<Body> {
    let headers = req.headers();
    let key = match handshake(req.method(), headers) {
        Ok(key) => key,
        Err(refusal) => return refusal,
    };
    let config = &shared.config;
    let upgrades = RateLimit::per_second(config.upgrade_rate).burst(config.upgrade_burst);
    // A refused origin, flood or user is still accepted, then closed with a code the client
    // understands: an HTTP error here would look like 1006 to it, which it retries at once.
    let verdict = if let Err(origin) = origin_allowed(config, headers) {
        metrics::counter!("liveroom_refused_origins_total").increment(1);
        warn_refused_origin(origin);
        Err(Refusal {
            code: close::POLICY,
            reason: format!("origin {origin} is not allowed: add it to LIVEROOM_ALLOWED_ORIGINS"),
        })
    } else if shared.upgrades.take(&slot.ip(), upgrades).is_err() {
        metrics::counter!("liveroom_rate_limited_total", "kind" => "upgrade").increment(1);
        Err(Refusal {
            code: close::THROTTLED,
            reason: "too many connections from this address: try again later".into(),
        })
    } else {
        let view = UpgradeRequest::new(headers.clone(), req.uri().query(), Some(remote));
        let hook = shared.live.authenticate(view);
        let limit = Duration::from_millis(config.upgrade_timeout_ms);
        match tokio::time::timeout(limit, hook).await {
            Ok(verdict) => verdict.map_err(|r| Refusal {
                code: r.close_code(),
                reason: r.to_string(),
            }),
            Err(_) => {
                metrics::counter!("liveroom_upgrade_timeouts_total").increment(1);
                tracing::warn!(%remote, "upgrade hook timed out");
                return Response::builder()
                    .status(StatusCode::GATEWAY_TIMEOUT)
                    .body(Body::from("the upgrade hook timed out"))
                    .expect("valid response");
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    let open = Open::new(slot);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve_socket(open, upgraded, verdict).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, ws::accept_key(&key))
        .body(Body::empty())
        .expect("valid response")
}
