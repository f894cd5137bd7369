//! The WebSocket close codes liveroom sends (protocol.md section 1), shared by the codec, the
//! outbox and the upgrade: which code ends a connection is part of the wire contract, not of
//! any one layer.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// Server going away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Protocol error (bad framing).
pub const PROTOCOL: u16 = 1002;
/// Text frame with invalid UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// Policy violation (a refused Origin); terminal for the client.
pub const POLICY: u16 = 1008;
/// Message too big.
pub const TOO_BIG: u16 = 1009;
/// Try again later: the slow-consumer cut-off.
pub const TRY_AGAIN: u16 = 1013;
/// Upgrade hook said unauthenticated.
pub const UNAUTHENTICATED: u16 = 4401;
/// Upgrade hook said forbidden.
pub const FORBIDDEN: u16 = 4403;
/// Too many connections from one address: the client backs off hard.
pub const THROTTLED: u16 = 4429;
