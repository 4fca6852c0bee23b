//! The HTTP/JSON API under `/api/v1`, served the same over the Unix socket and TCP. Read-only.
//! Errors are JSON objects `{"error": "..."}` with a fitting status code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::Deserialize;
use ttmem_ledger::{DeviceKey, SortBy};
use ttmem_model::api;

use crate::collector::Collector;

pub mod access;
mod export;
mod extract;
mod space;
mod stream;
use space::{fit, forecast, fragmentation, incomplete, map, maps};
use stream::stream;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod peer_hub;
pub mod peers;
mod web;
pub use access::{Peer, TcpAccess, Viewer};
use extract::{P, Q};

/// What handlers share.
pub struct Shared {
    /// The collector (write-locked only by its own thread, briefly per tick).
    pub collector: RwLock<Collector>,
    /// When the daemon started.
    pub started: Instant,
    /// A monotonic-ns clock (tests may pin it).
    pub now_ns: fn() -> u64,
    /// The database (None when it could not be opened; the daemon then runs without it).
    pub store: parking_lot::Mutex<Option<ttmem_store::Store>>,
    /// The last database error, for health.
    pub store_error: parking_lot::Mutex<Option<String>>,
    /// Serialized snapshots by (generation, totals only, viewer): monitors polling ten times a
    /// second cost one serialization per change, not one per request.
    pub snapshot_cache: parking_lot::Mutex<Vec<(u64, bool, Viewer, axum::body::Bytes)>>,
    /// How TCP requests are granted detail (see [`access`]).
    pub tcp_access: TcpAccess,
    /// The daemon's own uid (it sees everything, like root).
    pub daemon_uid: u32,
    /// Where alert transitions go (none until `serve` starts them).
    pub notifiers: crate::alerting::Notifiers,
    /// The host's name in metrics and alerts.
    pub hostname: String,
    /// Other hosts' daemons the dashboard shows beside this one, and the links to them (see
    /// [`peers`]; None without `[[peers]]`).
    pub peers: Option<Arc<peer_hub::PeerHub>>,
}

impl Shared {
    /// What the handlers of a daemon share: its collector, no database yet (see
    /// `open_store`), and how TCP is granted detail.
    pub fn new(collector: Collector, tcp_access: TcpAccess) -> Shared {
        Shared {
            collector: RwLock::new(collector),
            started: Instant::now(),
            now_ns: crate::monotonic_ns,
            store: parking_lot::Mutex::new(None),
            store_error: parking_lot::Mutex::new(None),
            snapshot_cache: parking_lot::Mutex::new(Vec::new()),
            tcp_access,
            daemon_uid: nix::unistd::geteuid().as_raw(),
            notifiers: crate::alerting::Notifiers::start(&[], ""),
            hostname: crate::hostname(),
            peers: None,
        }
    }
}

/// An error answer.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(api::ErrorAnswer { error: self.1 })).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/ui/app.js", get(web::app_js))
        .route("/ui/app.css", get(web::app_css))
        .route("/ui/icon.svg", get(web::icon))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/health", get(health))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}/fragmentation", get(fragmentation))
        .route("/api/v1/devices/{id}/map", get(map))
        .route("/api/v1/maps", get(maps))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/processes/{pid}/allocations", get(allocations))
        .route("/api/v1/processes/{pid}/events", get(events))
        .route("/api/v1/processes/{pid}/export", get(export::export))
        .route("/api/v1/fit", get(fit))
        .route("/api/v1/forecast", get(forecast))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/leaks", get(leaks))
        .route("/api/v1/history", get(history))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/process-records", get(process_records))
        .route("/api/v1/peers", get(peers::list))
        .route("/api/v1/peers/{name}/{endpoint}", get(peers::forward))
        .route("/api/v1/legacy", get(legacy))
        .route("/api/v1/legacy/dumps", get(legacy_dumps))
        .fallback(|| async { not_found("no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "the API only reads: use GET; see docs/api.md".into(),
            )
        })
        .with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> ApiResult<api::Health> {
    let c = s.collector.read();
    Ok(Json(api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: s.started.elapsed().as_secs_f64(),
        region_dir: c.region_dir().display().to_string(),
        database: match (s.store.lock().is_some(), s.store_error.lock().clone()) {
            (_, Some(e)) => api::DatabaseHealth {
                ok: false,
                error: Some(e),
            },
            (true, None) => api::DatabaseHealth { ok: true, error: None },
            (false, None) => api::DatabaseHealth {
                ok: false,
                error: Some("not open".into()),
            },
        },
        history_points: c.history().points() as u64,
        hostname: s.hostname.clone(),
    }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    device: Option<u32>,
    category: Option<String>,
    pid: Option<u32>,
    resolution: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
}

/// `GET /api/v1/history?device=ID&category=NAME[&pid=PID][&resolution=1s|10s|1m][&from=S][&to=S]`:
/// a step series `[[unix_s, bytes], ...]` of the peak per bucket, from memory and, for older
/// ranges, the database.
async fn history(State(s): State<Arc<Shared>>, Q(q): Q<HistoryQuery>) -> ApiResult<api::History> {
    let (Some(id), Some(category)) = (q.device, q.category.clone()) else {
        return Err(bad(
            "history needs device and category, e.g. /api/v1/history?device=0&category=DRAM&resolution=1s",
        ));
    };
    let resolution = q.resolution.clone().unwrap_or_else(|| "1s".into());
    let tier = ttmem_history::tier_by_name(&resolution)
        .ok_or_else(|| bad(format!("unknown resolution {resolution:?} (1s, 10s or 1m)")))?;
    let now = ttmem_model::now_ns() / 1_000_000_000;
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to.saturating_sub(ttmem_history::TIERS[tier].window_s));
    if from > to {
        return Err(bad("from is after to"));
    }
    let c = s.collector.read();
    let table = c.device_table();
    let Some(device) = table.device(id) else {
        return Err(not_found(format!("no device {id}")));
    };
    if !device.categories.iter().any(|c| c.name == category) {
        return Err(not_found(format!("device {id} has no category {category:?}")));
    }
    let process = match q.pid {
        Some(pid) => {
            let v = c
                .key_of_pid(pid)
                .and_then(|k| c.view(k))
                .ok_or_else(|| not_found(format!("no process with pid {pid}")))?;
            Some((v.id.pid, v.id.start_time))
        }
        None => None,
    };
    let key = crate::collector::series_key(&table, id, &category, process)
        .ok_or_else(|| not_found(format!("no device {id}")))?;
    let mut points = c.history().query(&key, tier, from, to);
    let oldest = c.history().oldest(&key, tier);
    drop(c);
    if oldest.is_none_or(|o| from < o)
        && let Some(store) = s.store.lock().as_ref()
    {
        let upto = oldest.map(|o| o.saturating_sub(1)).unwrap_or(to).min(to);
        match store.query(&key, tier, from, upto) {
            Ok(older) => {
                let first = points.first().map(|p| p.0).unwrap_or(u64::MAX);
                let mut merged: Vec<(u64, u64)> = older.into_iter().filter(|p| p.0 < first).collect();
                // The value "in force at from" from memory is superseded by the database's.
                let db_has_from = merged.first().is_some_and(|m| m.0 == from);
                merged.extend(points.into_iter().filter(|p| !(p.0 == from && db_has_from)));
                points = merged;
            }
            Err(e) => tracing::warn!("history query: {e}"),
        }
    }
    Ok(Json(api::History {
        device: id,
        category,
        pid: q.pid,
        resolution,
        from,
        to,
        points,
    }))
}

#[derive(Deserialize)]
struct RecordsQuery {
    since_s: Option<u64>,
}

/// The answer of `GET /api/v1/process-records` (the records are the store's own type).
#[derive(serde::Serialize)]
struct ProcessRecords {
    processes: Vec<ttmem_store::ProcessRecord>,
}

/// `GET /api/v1/process-records[?since_s=S]`: processes as the database remembers them (also
/// across daemon restarts), with what each left behind.
async fn process_records(
    State(s): State<Arc<Shared>>,
    viewer: Viewer,
    Q(q): Q<RecordsQuery>,
) -> ApiResult<ProcessRecords> {
    let guard = s.store.lock();
    let store = guard.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not open; see /api/v1/health".into(),
        )
    })?;
    let mut processes = store
        .processes(q.since_s.unwrap_or(0).saturating_mul(1_000_000_000))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for p in processes.iter_mut().filter(|p| !viewer.may_see(p.uid)) {
        p.cmdline.clear();
    }
    Ok(Json(ProcessRecords { processes }))
}

async fn stats(State(s): State<Arc<Shared>>) -> ApiResult<api::Stats> {
    let c = s.collector.read();
    let l = c.ledger();
    let live = l.live_allocations();
    Ok(Json(api::Stats {
        collector: c.stats(),
        ledger: l.stats(),
        live_allocations: live,
        ledger_map_bytes: l.map_bytes(),
        bytes_per_live_allocation: if live == 0 {
            0.0
        } else {
            l.map_bytes() as f64 / live as f64
        },
    }))
}

/// `GET /api/v1/legacy`: the legacy allocation-server socket's statistics.
async fn legacy(State(s): State<Arc<Shared>>) -> ApiResult<api::Legacy> {
    Ok(Json(api::Legacy {
        legacy: s.collector.read().legacy_stats(),
    }))
}

/// `GET /api/v1/legacy/dumps`: the latest DUMP_REMAINING and DUMP_KERNELS answers (every
/// legacy client's buffers: root and the daemon's user only).
async fn legacy_dumps(State(s): State<Arc<Shared>>, viewer: Viewer) -> ApiResult<api::LegacyDumps> {
    if !viewer.sees_all() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "legacy dumps list every legacy client's buffers: shown only to root and the daemon's user".into(),
        ));
    }
    Ok(Json(api::LegacyDumps {
        dumps: s.collector.read().legacy_dumps(),
    }))
}

#[derive(Deserialize)]
struct SnapshotQuery {
    detail: Option<String>,
}

/// `GET /api/v1/snapshot[?detail=totals]`: the `ps` object. With `detail=totals` each process
/// leaves out `devices` (its per-chip detail) and keeps `totals` and `device_ids`: a fraction of
/// the size, for monitors that refresh often. The answer carries an `ETag`; a request whose
/// `If-None-Match` matches gets `304 Not Modified` with no body.
async fn snapshot(
    State(s): State<Arc<Shared>>,
    viewer: Viewer,
    Q(q): Q<SnapshotQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let totals = match q.detail.as_deref() {
        None | Some("full") => false,
        Some("totals") => true,
        Some(other) => return Err(bad(format!("unknown detail {other:?} (full or totals)"))),
    };
    let collector = s.collector.read();
    let generation = collector.generation();
    let etag = format!("\"{generation}-{}-{}\"", if totals { "t" } else { "f" }, viewer.tag());
    if headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(axum::http::header::ETAG, etag)]).into_response());
    }
    let cached = s
        .snapshot_cache
        .lock()
        .iter()
        .find(|(g, t, v, _)| *g == generation && *t == totals && *v == viewer)
        .map(|(_, _, _, b)| b.clone());
    let body = match cached {
        Some(b) => b,
        None => {
            let mut snap = collector.snapshot();
            redact(&mut snap.processes, viewer);
            if totals {
                for p in &mut snap.processes {
                    p.devices.clear();
                }
            }
            let b = axum::body::Bytes::from(serde_json::to_vec(&snap).expect("snapshot serializes"));
            let mut cache = s.snapshot_cache.lock();
            // This generation's answers only, and a bounded number of viewers.
            cache.retain(|(g, t, v, _)| *g == generation && !(*t == totals && *v == viewer));
            if cache.len() >= 32 {
                cache.remove(0);
            }
            cache.push((generation, totals, viewer, b.clone()));
            b
        }
    };
    drop(collector);
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json".to_string()),
            (axum::http::header::ETAG, etag),
        ],
        body,
    )
        .into_response())
}

async fn devices(State(s): State<Arc<Shared>>) -> ApiResult<api::Devices> {
    Ok(Json(api::Devices {
        devices: s.collector.read().device_table().rows(),
    }))
}

async fn processes(State(s): State<Arc<Shared>>, viewer: Viewer) -> ApiResult<api::Processes> {
    let mut processes = s.collector.read().snapshot().processes;
    redact(&mut processes, viewer);
    Ok(Json(api::Processes { processes }))
}

/// Clears the command lines of the processes `viewer` may not see in detail.
fn redact(processes: &mut [ttmem_model::ProcessRow], viewer: Viewer) {
    for p in processes.iter_mut().filter(|p| !viewer.may_see(p.id.uid)) {
        p.id.cmdline.clear();
    }
}

/// The process of `pid`, if `viewer` may see its detail (`what` names the detail refused).
fn detail_of(c: &Collector, viewer: Viewer, pid: u32, what: &str) -> Result<ttmem_ledger::ProcKey, ApiError> {
    let key = key_of(c, pid)?;
    match c.view(key) {
        Some(v) if !viewer.may_see(v.id.uid) => Err(viewer.refusal(what, pid, &v.id.user)),
        _ => Ok(key),
    }
}

#[derive(Deserialize)]
struct PageQuery {
    sort: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

fn key_of(c: &Collector, pid: u32) -> Result<ttmem_ledger::ProcKey, ApiError> {
    c.key_of_pid(pid)
        .ok_or_else(|| not_found(format!("no process with pid {pid}")))
}

async fn allocations(
    State(s): State<Arc<Shared>>,
    viewer: Viewer,
    P(pid): P<u32>,
    Q(q): Q<PageQuery>,
) -> ApiResult<api::AllocationPage> {
    let sort = match q.sort.as_deref().unwrap_or("address") {
        "address" => SortBy::Address,
        "size" => SortBy::Size,
        "age" => SortBy::Age,
        other => return Err(bad(format!("unknown sort {other:?} (address, size or age)"))),
    };
    let limit = q.limit.unwrap_or(100);
    if limit > 10_000 {
        return Err(bad("limit must be at most 10000"));
    }
    let c = s.collector.read();
    let key = detail_of(&c, viewer, pid, "allocations")?;
    let page = c
        .ledger()
        .allocations(key, sort, q.offset.unwrap_or(0), limit, (s.now_ns)())
        .map_err(|e| not_found(e.to_string()))?;
    let completeness = c.ledger().completeness(key).unwrap_or_default();
    let devices = c.device_ids();
    Ok(Json(api::AllocationPage {
        pid,
        total: page.total,
        offset: page.offset,
        items: page.items.into_iter().map(|a| allocation(pid, &devices, a)).collect(),
        complete: completeness.is_complete(),
        events_lost: completeness.lost,
        unmatched_frees: completeness.unmatched_frees,
        detail_since_unix_ns: completeness
            .detail_since_ns
            .map(|t| ttmem_model::now_ns().saturating_sub((s.now_ns)().saturating_sub(t))),
    }))
}

/// A ledger allocation as the API names it: its owner's pid and its `ps` device id.
fn allocation(pid: u32, devices: &HashMap<DeviceKey, u32>, a: ttmem_ledger::Allocation) -> api::Allocation {
    api::Allocation {
        pid,
        device: devices.get(&a.device).copied(),
        category: a.category,
        address: a.address,
        size: a.size,
        age_s: a.age_s,
        tag: a.tag,
    }
}

async fn events(State(s): State<Arc<Shared>>, viewer: Viewer, P(pid): P<u32>) -> ApiResult<api::Events> {
    let c = s.collector.read();
    let key = detail_of(&c, viewer, pid, "events")?;
    let events = recorded_events(&c, key, &c.device_ids());
    Ok(Json(api::Events {
        pid,
        state: c.ledger().state(key),
        events,
        clock: Some(api::ClockPair {
            monotonic_ns: (s.now_ns)(),
            unix_ns: ttmem_model::now_ns(),
        }),
    }))
}

/// A process's flight recorder, oldest first, as the API names its events.
fn recorded_events(
    c: &Collector,
    key: ttmem_ledger::ProcKey,
    devices: &HashMap<DeviceKey, u32>,
) -> Vec<api::RecentEvent> {
    c.ledger()
        .recent(key)
        .into_iter()
        .flatten()
        .map(|r| event_of(c, key, devices, r))
        .collect()
}

/// A flight-recorder event as the API names it.
fn event_of(
    c: &Collector,
    key: ttmem_ledger::ProcKey,
    devices: &HashMap<DeviceKey, u32>,
    r: &ttmem_ledger::RecentEvent,
) -> api::RecentEvent {
    api::RecentEvent {
        kind: r.event.kind,
        device: devices.get(&r.event.device).copied(),
        category: category_name(c, r.event.device, r.event.category),
        address: r.event.address,
        size: r.event.size,
        time_ns: r.event.time_ns,
        tag: c.ledger().tag(key, r.event.tag).map(str::to_string),
        matched: r.matched,
    }
}

fn category_name(c: &Collector, dev: DeviceKey, cat: u8) -> Option<String> {
    c.ledger()
        .devices()
        .find(|(k, _, _)| *k == dev)
        .and_then(|(_, i, _)| i.categories.get(cat as usize))
        .map(|x| x.name.clone())
}

#[derive(Deserialize)]
struct LeakQuery {
    min_age_s: Option<u64>,
    limit: Option<usize>,
}

async fn leaks(State(s): State<Arc<Shared>>, viewer: Viewer, Q(q): Q<LeakQuery>) -> ApiResult<api::Leaks> {
    let c = s.collector.read();
    let devices = c.device_ids();
    let min_age_s = q.min_age_s.unwrap_or(300);
    let allocations = c
        .ledger()
        .leak_suspects(min_age_s, q.limit.unwrap_or(100).min(10_000), (s.now_ns)())
        .into_iter()
        .filter_map(|a| {
            let v = c.view(a.process).filter(|v| viewer.may_see(v.id.uid))?;
            Some(allocation(v.id.pid, &devices, a))
        })
        .collect();
    Ok(Json(api::Leaks {
        min_age_s,
        allocations,
        incomplete: incomplete(&s, &c, None),
    }))
}

/// `GET /api/v1/alerts`: alerts pending and firing, those resolved lately, and the rules.
async fn alerts(State(s): State<Arc<Shared>>) -> ApiResult<api::Alerts> {
    let c = s.collector.read();
    let engine = c.alerts();
    Ok(Json(api::Alerts {
        active: engine.active(),
        resolved: engine.resolved(),
        rules: engine.rules().iter().map(|r| r.info()).collect(),
        notifications_failed: s.notifiers.failed(),
    }))
}
