//! Rate limits on failed logins and bearer tokens: per client address and for the whole node,
//! in fixed windows, refused with 429 `auth.rate_limited` and `Retry-After`. Failures are
//! aggregated into bursts: the first failure of a burst is recorded at once as an
//! `xyn.auth.login.failed` event, the rest of the burst as one more such event with their
//! count when the burst window ends, so a flood of wrong tokens cannot grow the event log.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::AppState;

/// The client's address (set per connection by `serve`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Failures one client may make per window.
pub const PER_CLIENT: u32 = 20;
/// Failures the node accepts from everyone together per window.
pub const GLOBAL: u32 = 200;
/// The window of the limits and of a burst.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Limiter {
    /// Some client (or the node) is over its limit: only then do successful requests look.
    any_blocked: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    global: Option<(Instant, u32)>,
    clients: HashMap<IpAddr, (Instant, u32)>,
    burst: Option<Burst>,
}

struct Burst {
    more: u64,
    clients: HashSet<IpAddr>,
}

/// What the caller records for a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// The first failure of a burst: record it now, and the burst's summary later.
    First,
    /// Counted into the running burst.
    Counted,
}

fn remaining(start: Instant, now: Instant) -> Option<Duration> {
    let age = now.duration_since(start);
    (age < WINDOW).then(|| WINDOW - age)
}

impl Limiter {
    /// `Err(retry_after)` when `client` (or the node) is over its limit.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        if !self.any_blocked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = Instant::now();
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        if let Some((start, n)) = st.global
            && n >= GLOBAL
        {
            wait = remaining(start, now);
        }
        if let Some(ip) = client
            && let Some((start, n)) = st.clients.get(&ip)
            && *n >= PER_CLIENT
        {
            wait = wait.max(remaining(*start, now));
        }
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Counts a failure of `client`.
    pub fn failed(&self, client: Option<IpAddr>) -> Record {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let g = st.global.get_or_insert((now, 0));
        if remaining(g.0, now).is_none() {
            *g = (now, 0);
        }
        g.1 += 1;
        let mut blocked = g.1 >= GLOBAL;
        if let Some(ip) = client {
            st.clients.retain(|_, (s, _)| remaining(*s, now).is_some());
            let c = st.clients.entry(ip).or_insert((now, 0));
            c.1 += 1;
            blocked |= c.1 >= PER_CLIENT;
        }
        if blocked {
            self.any_blocked.store(true, Ordering::Relaxed);
        }
        match &mut st.burst {
            Some(b) => {
                b.more += 1;
                if let Some(ip) = client {
                    b.clients.insert(ip);
                }
                Record::Counted
            }
            None => {
                st.burst = Some(Burst {
                    more: 0,
                    clients: client.into_iter().collect(),
                });
                Record::First
            }
        }
    }

    /// Ends the running burst: the failures after its first and the distinct clients.
    pub fn end_burst(&self) -> Option<(u64, usize)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let b = st.burst.take()?;
        let now = Instant::now();
        let still = st
            .global
            .is_some_and(|(s, n)| n >= GLOBAL && remaining(s, now).is_some())
            || st
                .clients
                .values()
                .any(|(s, n)| *n >= PER_CLIENT && remaining(*s, now).is_some());
        self.any_blocked.store(still, Ordering::Relaxed);
        (b.more > 0).then_some((b.more, b.clients.len()))
    }
}

/// Counts a failed login or bearer token and records it as `xyn.auth.login.failed` (the first
/// of a burst at once, the rest as one event with their count when the burst ends).
pub async fn note_failure(s: &AppState, client: Option<IpAddr>, method: &'static str) {
    if s.limiter.failed(client) != Record::First {
        return;
    }
    record(s, json!({"method": method, "count": 1})).await;
    let s = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(WINDOW).await;
        if let Some((more, clients)) = s.limiter.end_burst() {
            record(
                &s,
                json!({"method": "burst", "count": more, "clients": clients,
                    "window_seconds": WINDOW.as_secs()}),
            )
            .await;
        }
    });
}

async fn record(s: &AppState, data: serde_json::Value) {
    if let Err(e) = s
        .node
        .record_audit("xyn.auth.login.failed", "anonymous", None, None, data)
        .await
    {
        tracing::warn!(code = e.code, error = %e.message, "failed login not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_limit_waits_and_bursts_are_counted() {
        let l = Limiter::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(l.failed(Some(a)), Record::First);
        for _ in 1..PER_CLIENT {
            assert!(l.check(Some(a)).is_ok());
            assert_eq!(l.failed(Some(a)), Record::Counted);
        }
        let wait = l.check(Some(a)).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= WINDOW, "{wait:?}");
        assert!(l.check(Some(b)).is_ok(), "other clients are not limited");
        assert_eq!(l.end_burst(), Some((u64::from(PER_CLIENT) - 1, 1)));
        assert!(l.check(Some(a)).is_err(), "the block outlives the burst");
        assert_eq!(l.failed(Some(b)), Record::First);
    }
}
