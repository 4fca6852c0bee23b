//! One link to each peer's event stream, shared by every page that shows the peer.
//!
//! A browser keeps at most six HTTP/1.1 connections to one origin, so a page cannot open a
//! stream per peer: it follows this daemon's own stream with `?peers=true`, and this module
//! feeds the peers' events into it. Each peer gets one task for the daemon's life: it reads the
//! peer's health (its name and version), then its stream, checks every event against the
//! API's types (a peer that sends anything else is dropped and tried again), and broadcasts
//! it. The last `update` of each peer is kept for pages that join later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Limited};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use ttmem_model::api::{self, PeerEvent, PeerEventKind};

use super::peers::PeerHost;

/// Peer events kept for a page that reads slowly; beyond, it is told to resync.
const CHANNEL: usize = 256;
/// How long a peer has to answer its health and its stream's head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer's stream sends a keep-alive every 15 s; this long without a byte is a dead link.
const SILENCE: Duration = Duration::from_secs(60);
/// The largest event taken from a peer (an update of a 32-chip host is some 10 KB).
const MAX_EVENT: usize = 8 << 20;
/// The longest wait before a link is tried again.
const MAX_PAUSE: Duration = Duration::from_secs(15);

/// What is known of one peer's link.
#[derive(Clone, Debug, Default)]
struct Link {
    up: bool,
    error: Option<String>,
    hostname: Option<String>,
    version: Option<String>,
    last_update: Option<api::StreamUpdate>,
}

/// The peers' links and their events.
pub struct PeerHub {
    peers: Vec<PeerHost>,
    tx: broadcast::Sender<Arc<PeerEvent>>,
    links: Mutex<HashMap<String, Link>>,
}

impl PeerHub {
    /// A hub for these peers; nothing is connected until [`PeerHub::start`].
    pub fn new(peers: Vec<PeerHost>) -> PeerHub {
        let (tx, _) = broadcast::channel(CHANNEL);
        let links = peers.iter().map(|p| (p.name.clone(), Link::default())).collect();
        PeerHub {
            peers,
            tx,
            links: Mutex::new(links),
        }
    }

    /// The configured peers.
    pub fn peers(&self) -> &[PeerHost] {
        &self.peers
    }

    /// Starts one task per peer on the current tokio runtime.
    pub fn start(self: &Arc<Self>) {
        for peer in self.peers.clone() {
            tokio::spawn(self.clone().follow(peer));
        }
    }

    /// Each peer as its link stands now, in the config's order.
    pub fn statuses(&self) -> Vec<api::PeerStatus> {
        let links = self.links.lock();
        self.peers
            .iter()
            .map(|p| {
                let l = links.get(&p.name).cloned().unwrap_or_default();
                api::PeerStatus {
                    name: p.name.clone(),
                    url: p.url.clone(),
                    reachable: l.up,
                    hostname: l.hostname,
                    version: l.version,
                    error: l.error,
                }
            })
            .collect()
    }

    /// A page's subscription: what each link is now (its state and last update), then every
    /// event as it comes. Subscribed before the state is read, so nothing falls between.
    pub fn subscribe(&self) -> (Vec<PeerEvent>, broadcast::Receiver<Arc<PeerEvent>>) {
        let rx = self.tx.subscribe();
        let links = self.links.lock();
        let mut now = Vec::new();
        for p in &self.peers {
            let Some(l) = links.get(&p.name) else { continue };
            let event = |kind| PeerEvent {
                peer: p.name.clone(),
                kind,
            };
            if l.up {
                now.push(event(PeerEventKind::Up));
                if let Some(u) = &l.last_update {
                    now.push(event(PeerEventKind::Update(u.clone())));
                }
            } else if let Some(e) = &l.error {
                now.push(event(PeerEventKind::Down(e.clone())));
            }
        }
        (now, rx)
    }

    fn send(&self, peer: &str, kind: PeerEventKind) {
        // No page listening is fine: the state is kept for the next one.
        let _ = self.tx.send(Arc::new(PeerEvent {
            peer: peer.to_string(),
            kind,
        }));
    }

    /// Follows one peer for the daemon's life: connect, read, and after a failure wait (1 s,
    /// doubling to 15 s; back to 1 s after a link that lasted) and try again.
    async fn follow(self: Arc<Self>, peer: PeerHost) {
        let mut pause = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let why = match self.read(&peer).await {
                Ok(()) => "its stream ended".to_string(),
                Err(e) => e,
            };
            let (was_up, same) = {
                let mut links = self.links.lock();
                let l = links.entry(peer.name.clone()).or_default();
                let was_up = l.up;
                let same = l.error.as_deref() == Some(why.as_str());
                l.up = false;
                l.error = Some(why.clone());
                l.last_update = None;
                (was_up, same)
            };
            if was_up {
                tracing::info!(peer = %peer.name, "the link to the peer is down: {why}");
            } else {
                tracing::debug!(peer = %peer.name, "the peer did not answer: {why}");
            }
            // A peer that stays down the same way is not news to a page.
            if was_up || !same {
                self.send(&peer.name, PeerEventKind::Down(why));
            }
            if started.elapsed() > Duration::from_secs(30) {
                pause = Duration::from_secs(1);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// One link: the peer's health, then its stream until it ends or breaks.
    async fn read(&self, peer: &PeerHost) -> Result<(), String> {
        let health = health(peer).await?;
        let answer = open(peer, "/api/v1/stream", "text/event-stream").await?;
        {
            let mut links = self.links.lock();
            let l = links.entry(peer.name.clone()).or_default();
            l.up = true;
            l.error = None;
            l.hostname = Some(health.hostname).filter(|h| !h.is_empty());
            l.version = Some(health.version);
        }
        tracing::info!(peer = %peer.name, url = %peer.url, "following the peer's stream");
        self.send(&peer.name, PeerEventKind::Up);
        let mut body = answer.into_body();
        let mut events = SseReader::default();
        loop {
            let frame = tokio::time::timeout(SILENCE, body.frame())
                .await
                .map_err(|_| format!("its stream was silent for {} s", SILENCE.as_secs()))?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|e| format!("reading its stream: {e}"))?;
            let Some(bytes) = frame.data_ref() else { continue };
            for (name, data) in events.push(bytes)? {
                let kind = match name.as_str() {
                    "update" => PeerEventKind::Update(
                        serde_json::from_str(&data).map_err(|e| format!("an update that is not a daemon's: {e}"))?,
                    ),
                    "alert" => PeerEventKind::Alert(
                        serde_json::from_str(&data).map_err(|e| format!("an alert that is not a daemon's: {e}"))?,
                    ),
                    // Events a newer peer may add pass by.
                    _ => continue,
                };
                if let PeerEventKind::Update(u) = &kind
                    && let Some(l) = self.links.lock().get_mut(&peer.name)
                {
                    l.last_update = Some(u.clone());
                }
                self.send(&peer.name, kind);
            }
        }
    }
}

/// A GET of one of the peer's endpoints whose answer is a success of the type asked for.
async fn open(peer: &PeerHost, path: &str, accept: &str) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let answer = peer.target.get(path, accept, CONNECT_TIMEOUT).await?;
    if !answer.status().is_success() {
        return Err(format!("its {path} answered {}", answer.status()));
    }
    crate::outbound::expect_type(&answer, accept).map_err(|e| format!("its {path} {e}"))?;
    Ok(answer)
}

/// The peer's health, which also proves it a ttmem daemon.
async fn health(peer: &PeerHost) -> Result<api::Health, String> {
    let read = async {
        let r = open(peer, "/api/v1/health", "application/json").await?;
        let body = Limited::new(r.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading its health: {e}"))?
            .to_bytes();
        serde_json::from_slice::<api::Health>(&body).map_err(|e| format!("its health is not a ttmem daemon's: {e}"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))
}

/// Server-Sent Events from bytes as they come: `(event name, data)` for each complete event.
#[derive(Default)]
struct SseReader {
    pending: Vec<u8>,
    /// How much of `pending` holds no event's end (so a long event is scanned once).
    scanned: usize,
}

impl SseReader {
    /// Adds bytes; returns the events they complete. An event over [`MAX_EVENT`] is an error.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
        self.pending.extend(bytes.iter().filter(|&&b| b != b'\r'));
        let mut out = Vec::new();
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(end) = self.pending[from..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| from + i)
            else {
                self.scanned = self.pending.len();
                break;
            };
            self.scanned = 0;
            let block: Vec<u8> = self.pending.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let (mut name, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => name = value.to_string(),
                    "data" => data.push(value),
                    _ => {} // comments (keep-alives), id, retry
                }
            }
            if !data.is_empty() {
                out.push((name, data.join("\n")));
            }
        }
        if self.pending.len() > MAX_EVENT {
            return Err(format!("an event over {} MiB", MAX_EVENT >> 20));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_comments_pass_by() {
        let mut r = SseReader::default();
        assert!(r.push(b":keep-alive\n\nevent: upd").unwrap().is_empty());
        let got = r
            .push(b"ate\ndata: {\"a\":\r\ndata: 1}\n\nevent: alert\ndata: x\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![("update".into(), "{\"a\":\n1}".into()), ("alert".into(), "x".into())]
        );
        assert!(r.pending.is_empty());
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut r = SseReader::default();
        let chunk = vec![b'x'; 1 << 20];
        let mut result = Ok(Vec::new());
        for _ in 0..9 {
            result = r.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(result.unwrap_err().contains("over 8 MiB"));
    }
}
