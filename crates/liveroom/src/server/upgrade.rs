//! The WebSocket upgrade (RFC 6455 section 4.2): the handshake checks, the Origin allow-list
//! and the app's upgrade hook, then the 101 and the hand-over to [`socket`](super::socket).

use super::config::ServerConfig;
use super::shared::{Shared, Slot};
use super::socket::{serve_socket, Open};
use crate::auth::UpgradeRequest;
use crate::close;
use crate::rate::RateLimit;
use crate::ws;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use axum::Extension;
use std::net::SocketAddr;
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

/// The Origin allow-list (protocol.md section 1).
fn origin_allowed(config: &ServerConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not a browser
    };
    if config.allowed_origins.is_empty() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    config
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
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
    let verdict = if !origin_allowed(config, headers) {
        Err(close::POLICY)
    } else if shared.upgrades.take(&slot.ip(), upgrades).is_err() {
        metrics::counter!("liveroom_rate_limited_total", "kind" => "upgrade").increment(1);
        Err(close::THROTTLED)
    } else {
        let view = UpgradeRequest::new(headers.clone(), req.uri().query(), Some(remote));
        let hook = shared.live.authenticate(view);
        let limit = Duration::from_millis(config.upgrade_timeout_ms);
        match tokio::time::timeout(limit, hook).await {
            Ok(verdict) => verdict.map_err(|r| r.close_code()),
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
