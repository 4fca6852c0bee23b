//! The API's accept loop: axum's router on hyper's HTTP/1 connections, with what a daemon
//! that every local user can reach needs and `axum::serve` lacks:
//!
//! - a header timeout that is also an idle timeout (hyper starts it whenever it waits for a
//!   request's head, the first and every kept-alive one): a client that connects and sends
//!   nothing, or trickles its headers (slowloris), is closed;
//! - a cap on connections at once per listener, answered `503` with a JSON reason beyond it;
//! - on the Unix socket, a cap per user (by `SO_PEERCRED`), and slots beyond the cap for root
//!   and the daemon's own user, so that no other user can lock the owner out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

/// The limits of one listener.
#[derive(Copy, Clone, Debug)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once of one user (Unix socket only).
    pub max_per_user: usize,
    /// See [`crate::Config::api_header_timeout`].
    pub header_timeout: Duration,
}

/// Who holds how many connections of one listener.
#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<u32, usize>,
}

/// A connection's place in the counts, given back when it closes.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(uid) = self.uid
            && let Some(n) = c.per_user.get_mut(&uid)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_user.remove(&uid);
            }
        }
    }
}

/// Admission: a connection of `uid` (None: TCP, no identity) is taken if the listener and the
/// user are under their caps; root and the daemon's user (`owner`) may exceed the listener's
/// cap by their own per-user cap. Returns why not otherwise.
fn admit(counts: &Arc<Mutex<Counts>>, limits: &Limits, uid: Option<u32>, owner: u32) -> Result<Slot, &'static str> {
    let mut c = counts.lock();
    let privileged = uid.is_some_and(|u| u == 0 || u == owner);
    if let Some(u) = uid
        && c.per_user.get(&u).copied().unwrap_or(0) >= limits.max_per_user
    {
        return Err("too many connections from your user; close some and retry");
    }
    let cap = if privileged {
        limits.max_connections.saturating_add(limits.max_per_user)
    } else {
        limits.max_connections
    };
    if c.total >= cap {
        return Err("too many connections to the daemon; retry later");
    }
    c.total += 1;
    if let Some(u) = uid {
        *c.per_user.entry(u).or_default() += 1;
    }
    Ok(Slot {
        counts: counts.clone(),
        uid,
    })
}

/// Refusals logged per window at most (a flood must not flood the log).
const MAX_REFUSAL_LOGS: u32 = 5;

/// Serves `router` on connections from `accept` until `shutdown` completes. `accept` yields a
/// stream and its peer's uid (None where the transport has no identity).
pub async fn serve<S, A, F>(mut accept: A, router: Router, limits: Limits, shutdown: impl Future<Output = ()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: FnMut() -> F,
    F: Future<Output = std::io::Result<(S, Option<u32>)>>,
{
    let counts = Arc::new(Mutex::new(Counts::default()));
    let owner = nix::unistd::geteuid().as_raw();
    let mut refusals = (std::time::Instant::now(), 0u32);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = accept() => a,
        };
        let (stream, uid) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or a peer gone before accept: wait a little, go on.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let slot = match admit(&counts, &limits, uid, owner) {
            Ok(slot) => slot,
            Err(why) => {
                if refusals.0.elapsed() >= Duration::from_secs(10) {
                    refusals = (std::time::Instant::now(), 0);
                }
                refusals.1 += 1;
                if refusals.1 <= MAX_REFUSAL_LOGS {
                    tracing::warn!(uid = ?uid, "API connection refused: {why}");
                }
                tokio::spawn(refuse(stream, why));
                continue;
            }
        };
        // Every request of the connection carries its peer: what it may see depends on it.
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(crate::api::Peer { uid })));
        let timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeout);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("API connection ended: {e}");
            }
        });
    }
}

/// Answers a connection over the cap with `503` and a JSON reason, then closes it. What the
/// peer sends meanwhile is read and dropped (for a second at most, 64 KiB at most), so that its
/// request does not meet a closed socket before it reads the answer.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, why: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({ "error": why }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 << 10 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_listener_and_per_user_with_room_for_the_owner() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits = Limits {
            max_connections: 3,
            max_per_user: 2,
            header_timeout: Duration::from_secs(1),
        };
        let owner = 1000;
        let a1 = admit(&counts, &limits, Some(7), owner).unwrap();
        let _a2 = admit(&counts, &limits, Some(7), owner).unwrap();
        assert!(admit(&counts, &limits, Some(7), owner).is_err(), "a user's cap");
        let _b1 = admit(&counts, &limits, Some(8), owner).unwrap();
        assert!(admit(&counts, &limits, Some(9), owner).is_err(), "the listener's cap");
        // Root and the daemon's user still get in, beyond the listener's cap.
        let r1 = admit(&counts, &limits, Some(0), owner).unwrap();
        let o1 = admit(&counts, &limits, Some(owner), owner).unwrap();
        assert!(admit(&counts, &limits, Some(9), owner).is_err());
        // Closed connections give their places back.
        drop((r1, o1, a1));
        let _a3 = admit(&counts, &limits, Some(7), owner).unwrap();
        assert!(admit(&counts, &limits, Some(7), owner).is_err());
        // TCP has no identity: only the listener's cap.
        let tcp = Arc::new(Mutex::new(Counts::default()));
        let held: Vec<Slot> = (0..3).map(|_| admit(&tcp, &limits, None, owner).unwrap()).collect();
        assert!(admit(&tcp, &limits, None, owner).is_err());
        drop(held);
        assert!(admit(&tcp, &limits, None, owner).is_ok());
    }
}
