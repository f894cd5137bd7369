//! What the connections of one server share ([`Shared`]), and the admission of each TCP
//! connection against the caps ([`Slot`]).

use super::config::ServerConfig;
use crate::rate::Buckets;
use crate::registry::Live;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub live: Live,
    pub config: ServerConfig,
    /// Open TCP connections, for the connection caps.
    pub admission: Admission,
    /// Upgrade buckets per remote address (4429 beyond them).
    pub upgrades: Buckets<IpAddr>,
    /// What every connection is told at once: the shutdown, the cluster's health.
    pub signal: watch::Receiver<Signal>,
    /// Open WebSocket connections; `closed` is notified whenever one ends.
    pub open: AtomicUsize,
    pub closed: Notify,
}

/// Open TCP connections, in total and per remote address.
#[derive(Debug, Default)]
pub(super) struct Admission {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused before HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// [`ServerConfig::max_connections`].
    Total,
    /// [`ServerConfig::max_connections_per_ip`].
    PerAddress,
}

/// One admitted TCP connection. Shared by its HTTP connection and, after an upgrade, its
/// WebSocket: it leaves [`Admission`] when both are gone.
pub(crate) struct Slot {
    pub(super) shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    pub(super) fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Result<Arc<Slot>, Refused> {
        let admission = &shared.admission;
        let config = &shared.config;
        if admission.total.fetch_add(1, Ordering::AcqRel) >= config.max_connections {
            admission.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let mut per_ip = admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= config.max_connections_per_ip {
            drop(per_ip);
            admission.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerAddress);
        }
        *n += 1;
        Ok(Arc::new(Slot {
            shared: shared.clone(),
            ip,
        }))
    }

    /// The remote address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let admission = &self.shared.admission;
        let mut per_ip = admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
        admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the server tells all its connections at once, through one channel that every
/// connection already watches (a second channel would grow every idle connection's task).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// The server shuts down: close with 1001.
    pub stop: bool,
    /// The cluster's Redis is unreachable (its circuit breaker is open): tell the clients.
    pub degraded: bool,
}

/// Resolves once the server shuts down. The borrow of the value is dropped inside, so callers
/// stay `Send`.
pub(super) async fn stopped(signal: &mut watch::Receiver<Signal>) {
    let _ = signal.wait_for(|s| s.stop).await;
}
