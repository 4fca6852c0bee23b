//! `GET /api/v1/stream`: the live feed of the dashboard and of `ttmem top`, as Server-Sent
//! Events; with `?peers=true`, the peers' events too.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use ttmem_model::api;

use super::extract::Q;
use super::{Shared, peer_hub};
use crate::collector::Collector;

/// (pid, start time) → (name, state) of every process the daemon knows.
type ProcStates = std::collections::BTreeMap<(u32, u64), (String, ttmem_model::ProcState)>;

/// The part of the state the stream reports: device totals and which processes run.
fn stream_state(c: &Collector) -> (Vec<api::StreamDevice>, ProcStates) {
    let (views, _) = c.merged_views();
    let devices = c
        .table_of(&views)
        .rows()
        .into_iter()
        .map(|d| api::StreamDevice {
            id: d.id,
            name: d.name,
            categories: d.categories,
            processes: d.processes,
        })
        .collect();
    let procs = views
        .iter()
        .map(|v| ((v.id.pid, v.id.start_time), (v.id.name.clone(), v.state)))
        .collect();
    (devices, procs)
}

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    /// Add the peers' events (`peer`).
    peers: Option<bool>,
}

/// The `peer` events of a stream: each link's state now, then every event as it comes (a page
/// that fell behind is told to resync).
fn peer_events(
    hub: Option<&Arc<peer_hub::PeerHub>>,
) -> futures_util::stream::BoxStream<'static, Result<axum::response::sse::Event, std::convert::Infallible>> {
    use axum::response::sse::Event;
    use futures_util::StreamExt as _;
    let Some(hub) = hub else {
        return futures_util::stream::empty().boxed();
    };
    let event = |e: &api::PeerEvent| {
        Ok(Event::default()
            .event("peer")
            .data(serde_json::to_string(e).expect("a peer event serializes")))
    };
    let (now, rx) = hub.subscribe();
    let first: Vec<_> = now.iter().map(event).collect();
    let later = tokio_stream::wrappers::BroadcastStream::new(rx).map(move |e| match e {
        Ok(e) => event(&e),
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(_)) => event(&api::PeerEvent {
            peer: "*".into(),
            kind: api::PeerEventKind::Resync,
        }),
    });
    futures_util::stream::iter(first).chain(later).boxed()
}

/// `GET /api/v1/stream`: Server-Sent Events. The first `update` carries the whole state; later
/// ones come when something changed (checked twice a second): device totals, and processes
/// that started or exited. An `alert` event carries each alert that changed state (the first
/// ones: every alert pending or firing when the stream began). With `?peers=true`, `peer`
/// events carry the configured peers' links and events too.
pub(super) async fn stream(
    State(s): State<Arc<Shared>>,
    Q(q): Q<StreamQuery>,
) -> axum::response::sse::Sse<
    impl tokio_stream::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt as _;
    let mut last_devices: Option<Vec<api::StreamDevice>> = None;
    let mut last_procs = ProcStates::new();
    let mut alert_seq: Option<u64> = None;
    let peers = peer_events(s.peers.as_ref().filter(|_| q.peers == Some(true)));
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(std::time::Duration::from_millis(500)));
    let updates = ticks.flat_map(move |_| {
        let mut events = Vec::new();
        let c = s.collector.read();
        let alerts = match alert_seq {
            None => (c.alerts().seq(), c.alerts().active()),
            Some(seq) => c.alerts().changes_since(seq),
        };
        let (devices, procs) = stream_state(&c);
        drop(c);
        let change = |k: &(u32, u64), name: &str, state| api::ProcessChange {
            pid: k.0,
            start_time: k.1,
            name: name.to_string(),
            state,
        };
        let mut changes = Vec::new();
        for (k, (name, state)) in &procs {
            if last_procs.get(k).map(|(_, st)| st) != Some(state) {
                let state = match state {
                    ttmem_model::ProcState::Running => api::ProcessChangeState::Running,
                    ttmem_model::ProcState::Exited => api::ProcessChangeState::Exited,
                };
                changes.push(change(k, name, state));
            }
        }
        for (k, (name, _)) in &last_procs {
            if !procs.contains_key(k) {
                changes.push(change(k, name, api::ProcessChangeState::Forgotten));
            }
        }
        if last_devices.as_ref() != Some(&devices) || !changes.is_empty() {
            last_devices = Some(devices.clone());
            last_procs = procs;
            let update = api::StreamUpdate {
                timestamp_ns: ttmem_model::now_ns(),
                devices,
                process_changes: changes,
            };
            let data = serde_json::to_string(&update).expect("an update serializes");
            events.push(Ok(Event::default().event("update").data(data)));
        }
        alert_seq = Some(alerts.0);
        for a in alerts.1 {
            let data = serde_json::to_string(&a).expect("an alert serializes");
            events.push(Ok(Event::default().event("alert").data(data)));
        }
        futures_util::stream::iter(events)
    });
    Sse::new(futures_util::stream::select(updates, peers)).keep_alive(KeepAlive::default())
}
