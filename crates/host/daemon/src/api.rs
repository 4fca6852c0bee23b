//! The HTTP/JSON API under `/api/v1`, served the same over the Unix socket and TCP. Read-only.
//! Errors are JSON objects `{"error": "..."}` with a fitting status code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::{Value, json};
use ttmem_ledger::SortBy;

use crate::collector::Collector;

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
    /// Serialized snapshots by (generation, totals only): monitors polling ten times a second
    /// cost one serialization per change, not one per request.
    pub snapshot_cache: parking_lot::Mutex<Vec<(u64, bool, axum::body::Bytes)>>,
}

/// An error answer.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
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
        .route("/api/v1/fit", get(fit))
        .route("/api/v1/leaks", get(leaks))
        .route("/api/v1/history", get(history))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/process-records", get(process_records))
        .route("/api/v1/legacy", get(legacy))
        .route("/api/v1/legacy/dumps", get(legacy_dumps))
        .fallback(|| async { not_found("no such endpoint; see docs/api.md") })
        .with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> ApiResult {
    let c = s.collector.read();
    Ok(Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "region_dir": c.region_dir().display().to_string(),
        "database": match (s.store.lock().is_some(), s.store_error.lock().clone()) {
            (_, Some(e)) => json!({ "ok": false, "error": e }),
            (true, None) => json!({ "ok": true }),
            (false, None) => json!({ "ok": false, "error": "not open" }),
        },
        "history_points": c.history().points(),
    })))
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
async fn history(State(s): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> ApiResult {
    let (Some(id), Some(category)) = (q.device, q.category.clone()) else {
        return Err(bad(
            "history needs device and category, e.g. /api/v1/history?device=0&category=DRAM&resolution=1s",
        ));
    };
    let resolution = q.resolution.clone().unwrap_or_else(|| "1s".into());
    let tier = ttmem_history::tier_by_name(&resolution)
        .ok_or_else(|| bad(format!("unknown resolution {resolution:?} (1s, 10s or 1m)")))?;
    let now = crate::collector::unix_ns() / 1_000_000_000;
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to.saturating_sub(ttmem_history::TIERS[tier].window_s));
    if from > to {
        return Err(bad("from is after to"));
    }
    let c = s.collector.read();
    let snap = c.snapshot();
    let d = snap
        .devices
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| not_found(format!("no device {id}")))?;
    let process = match q.pid {
        Some(pid) => {
            let p = snap
                .processes
                .iter()
                .find(|p| p.pid == pid)
                .ok_or_else(|| not_found(format!("no process with pid {pid}")))?;
            Some((p.pid, p.start_time))
        }
        None => None,
    };
    let key = ttmem_history::SeriesKey {
        device: format!("{}:{}", d.kind, d.hw_id),
        category: category.clone(),
        process,
    };
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
    Ok(Json(json!({
        "device": id,
        "category": category,
        "pid": q.pid,
        "resolution": resolution,
        "from": from,
        "to": to,
        "points": points,
    })))
}

#[derive(Deserialize)]
struct RecordsQuery {
    since_s: Option<u64>,
}

/// `GET /api/v1/process-records[?since_s=S]`: processes as the database remembers them (also
/// across daemon restarts), with what each left behind.
async fn process_records(State(s): State<Arc<Shared>>, Query(q): Query<RecordsQuery>) -> ApiResult {
    let guard = s.store.lock();
    let store = guard.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not open; see /api/v1/health".into(),
        )
    })?;
    let records = store
        .processes(q.since_s.unwrap_or(0).saturating_mul(1_000_000_000))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "processes": records })))
}

async fn stats(State(s): State<Arc<Shared>>) -> ApiResult {
    let c = s.collector.read();
    let l = c.ledger();
    let live = l.live_allocations();
    Ok(Json(json!({
        "collector": c.stats(),
        "ledger": l.stats(),
        "live_allocations": live,
        "ledger_map_bytes": l.map_bytes(),
        "bytes_per_live_allocation": if live == 0 { 0.0 } else { l.map_bytes() as f64 / live as f64 },
    })))
}

/// `GET /api/v1/legacy`: the legacy allocation-server socket's statistics.
async fn legacy(State(s): State<Arc<Shared>>) -> ApiResult {
    let c = s.collector.read();
    Ok(Json(json!({ "legacy": c.legacy_stats() })))
}

/// `GET /api/v1/legacy/dumps`: the latest DUMP_REMAINING and DUMP_KERNELS answers.
async fn legacy_dumps(State(s): State<Arc<Shared>>) -> ApiResult {
    let c = s.collector.read();
    Ok(Json(json!({ "dumps": c.legacy_dumps() })))
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
    Query(q): Query<SnapshotQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let totals = match q.detail.as_deref() {
        None | Some("full") => false,
        Some("totals") => true,
        Some(other) => return Err(bad(format!("unknown detail {other:?} (full or totals)"))),
    };
    let collector = s.collector.read();
    let generation = collector.generation();
    let etag = format!("\"{generation}-{}\"", if totals { "t" } else { "f" });
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
        .find(|(g, t, _)| *g == generation && *t == totals)
        .map(|(_, _, b)| b.clone());
    let body = match cached {
        Some(b) => b,
        None => {
            let mut snap = collector.snapshot();
            if totals {
                for p in &mut snap.processes {
                    p.devices.clear();
                }
            }
            let b = axum::body::Bytes::from(serde_json::to_vec(&snap).expect("snapshot serializes"));
            let mut cache = s.snapshot_cache.lock();
            cache.retain(|(g, t, _)| *g == generation && *t != totals);
            cache.push((generation, totals, b.clone()));
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

async fn devices(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(json!({ "devices": s.collector.read().snapshot().devices })))
}

async fn processes(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(json!({ "processes": s.collector.read().snapshot().processes })))
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

async fn allocations(State(s): State<Arc<Shared>>, Path(pid): Path<u32>, Query(q): Query<PageQuery>) -> ApiResult {
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
    let key = key_of(&c, pid)?;
    let page = c
        .ledger()
        .allocations(key, sort, q.offset.unwrap_or(0), limit, (s.now_ns)())
        .map_err(|e| not_found(e.to_string()))?;
    let (lost, unmatched) = c.ledger().completeness(key).unwrap_or((0, 0));
    let devices = device_ids(&c);
    let mut v = serde_json::to_value(&page).expect("page serializes");
    if let Some(items) = v["items"].as_array_mut() {
        for item in items {
            let dk = item["device"].as_u64().unwrap_or(0) as u32;
            item["device"] = json!(devices.get(&dk).copied());
            item["pid"] = json!(pid);
            item.as_object_mut().map(|o| o.remove("process"));
        }
    }
    v["pid"] = json!(pid);
    v["complete"] = json!(lost == 0);
    v["events_lost"] = json!(lost);
    v["unmatched_frees"] = json!(unmatched);
    Ok(Json(v))
}

async fn events(State(s): State<Arc<Shared>>, Path(pid): Path<u32>) -> ApiResult {
    let c = s.collector.read();
    let key = key_of(&c, pid)?;
    let devices = device_ids(&c);
    let recent = c
        .ledger()
        .recent(key)
        .map(|r| r.iter().copied().collect::<Vec<_>>())
        .unwrap_or_default();
    let events: Vec<Value> = recent
        .iter()
        .map(|r| {
            json!({
                "kind": r.event.kind,
                "device": devices.get(&r.event.device).copied(),
                "category": category_name(&c, r.event.device, r.event.category),
                "address": r.event.address,
                "size": r.event.size,
                "time_ns": r.event.time_ns,
                "tag": c.ledger().tag(key, r.event.tag),
                "matched": r.matched,
            })
        })
        .collect();
    Ok(Json(
        json!({ "pid": pid, "state": c.ledger().state(key), "events": events }),
    ))
}

fn category_name(c: &Collector, dev: u32, cat: u8) -> Option<String> {
    c.ledger()
        .devices()
        .find(|(k, _, _)| *k == dev)
        .and_then(|(_, i, _)| i.categories.get(cat as usize))
        .map(|x| x.name.clone())
}

/// Ledger device key → the host-wide device id of the snapshot (by kind and hardware id).
/// Ledger device key → `ps` device id, by the one numbering rule (`ttmem_report::device_table`).
fn device_ids(c: &Collector) -> std::collections::HashMap<u32, u32> {
    let ids: std::collections::HashMap<ttmem_report::DeviceIdentity, u32> = c
        .device_identities()
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, i as u32))
        .collect();
    c.ledger()
        .devices()
        .filter(|(_, info, _)| info.hw_id != 0)
        .filter_map(|(k, info, _)| ids.get(&(info.kind, info.hw_id, 0, 0)).map(|&id| (k, id)))
        .collect()
}

fn ledger_device(c: &Collector, id: u32) -> Result<u32, ApiError> {
    device_ids(c)
        .into_iter()
        .find(|(_, v)| *v == id)
        .map(|(k, _)| k)
        .ok_or_else(|| not_found(format!("no device {id}")))
}

async fn fragmentation(State(s): State<Arc<Shared>>, Path(id): Path<u32>) -> ApiResult {
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let (_, info, _) = c.ledger().devices().find(|(k, _, _)| *k == dk).expect("device exists");
    let cats: Vec<Value> = info
        .categories
        .iter()
        .filter(|cat| cat.addr_end > cat.addr_base)
        .filter_map(|cat| {
            c.ledger()
                .fragmentation(dk, &cat.name)
                .ok()
                .map(|f| json!({ "name": cat.name, "banks": cat.banks, "fragmentation": f }))
        })
        .collect();
    Ok(Json(json!({ "device": id, "categories": cats })))
}

#[derive(Deserialize)]
struct MapQuery {
    category: Option<String>,
    cells: Option<usize>,
}

/// `GET /api/v1/devices/{id}/map?category=DRAM&cells=64`: occupancy of one bank's range in
/// equal cells (0 free to 1 full), with the largest free block, for memory-map displays.
async fn map(State(s): State<Arc<Shared>>, Path(id): Path<u32>, Query(q): Query<MapQuery>) -> ApiResult {
    let category = q.category.unwrap_or_else(|| "DRAM".into());
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let cells = c
        .ledger()
        .occupancy(dk, &category, q.cells.unwrap_or(64))
        .map_err(|e| bad(e.to_string()))?;
    let f = c
        .ledger()
        .fragmentation(dk, &category)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Json(
        json!({ "device": id, "category": category, "cells": cells, "fragmentation": f }),
    ))
}

/// `GET /api/v1/maps?category=DRAM&cells=64`: the map of every device in one answer
/// (`{"maps": [{"device", "cells", "largest_free_per_bank"}]}`), for monitors refreshing often.
async fn maps(State(s): State<Arc<Shared>>, Query(q): Query<MapQuery>) -> ApiResult {
    let category = q.category.unwrap_or_else(|| "DRAM".into());
    let c = s.collector.read();
    let mut out = Vec::new();
    let mut ids: Vec<(u32, u32)> = device_ids(&c).into_iter().collect();
    ids.sort_by_key(|&(_, id)| id);
    for (dk, id) in ids {
        if let (Ok(cells), Ok(f)) = (
            c.ledger().occupancy(dk, &category, q.cells.unwrap_or(64)),
            c.ledger().fragmentation(dk, &category),
        ) {
            out.push(json!({ "device": id, "cells": cells, "largest_free_per_bank": f.largest_free_per_bank }));
        }
    }
    Ok(Json(json!({ "category": category, "maps": out })))
}

#[derive(Deserialize)]
struct FitQuery {
    device: Option<u32>,
    category: Option<String>,
    bytes: Option<u64>,
}

async fn fit(State(s): State<Arc<Shared>>, Query(q): Query<FitQuery>) -> ApiResult {
    let (Some(id), Some(category), Some(bytes)) = (q.device, q.category, q.bytes) else {
        return Err(bad(
            "fit needs device, category and bytes, e.g. /api/v1/fit?device=0&category=DRAM&bytes=1073741824",
        ));
    };
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let f = c.ledger().fit(dk, &category, bytes).map_err(|e| bad(e.to_string()))?;
    let mut v = serde_json::to_value(&f).expect("fit serializes");
    // Owners as pids, not internal keys.
    if let Some(gaps) = v["best_gaps"].as_array_mut() {
        for g in gaps {
            for side in ["below", "above"] {
                if let Some(k) = g[side]["process"].as_u64() {
                    g[side]["pid"] = json!(c.pid_of(k as u32));
                    g[side].as_object_mut().map(|o| o.remove("process"));
                }
            }
        }
    }
    v["device"] = json!(id);
    v["category"] = json!(category);
    Ok(Json(v))
}

#[derive(Deserialize)]
struct LeakQuery {
    min_age_s: Option<u64>,
    limit: Option<usize>,
}

async fn leaks(State(s): State<Arc<Shared>>, Query(q): Query<LeakQuery>) -> ApiResult {
    let c = s.collector.read();
    let devices = device_ids(&c);
    let items: Vec<Value> = c
        .ledger()
        .leak_suspects(
            q.min_age_s.unwrap_or(300),
            q.limit.unwrap_or(100).min(10_000),
            (s.now_ns)(),
        )
        .into_iter()
        .map(|a| {
            json!({
                "pid": c.pid_of(a.process),
                "device": devices.get(&a.device).copied(),
                "category": a.category,
                "address": a.address,
                "size": a.size,
                "age_s": a.age_s,
                "tag": a.tag,
            })
        })
        .collect();
    Ok(Json(
        json!({ "min_age_s": q.min_age_s.unwrap_or(300), "allocations": items }),
    ))
}

/// The part of the state the stream reports: device totals and which processes run.
/// (pid, start time) → (name, state) of every process the daemon knows.
type ProcStates = std::collections::BTreeMap<(u32, u64), (String, String)>;

fn stream_state(c: &Collector) -> (Value, ProcStates) {
    let snap = c.snapshot();
    let devices: Vec<Value> = snap
        .devices
        .iter()
        .map(|d| json!({ "id": d.id, "name": d.name, "categories": d.categories, "processes": d.processes }))
        .collect();
    let procs = snap
        .processes
        .iter()
        .map(|p| ((p.pid, p.start_time), (p.name.clone(), p.state.clone())))
        .collect();
    (json!(devices), procs)
}

/// `GET /api/v1/stream`: Server-Sent Events. The first `update` carries the whole state; later
/// ones come when something changed (checked twice a second): device totals, and processes
/// that started or exited.
async fn stream(
    State(s): State<Arc<Shared>>,
) -> axum::response::sse::Sse<
    impl tokio_stream::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    let mut last_devices = Value::Null;
    let mut last_procs = std::collections::BTreeMap::new();
    let ticks =
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(std::time::Duration::from_millis(500)));
    let updates = ticks.filter_map(move |_| {
        let (devices, procs) = stream_state(&s.collector.read());
        let mut changes = Vec::new();
        for (k, (name, state)) in &procs {
            if last_procs.get(k).map(|(_, st): &(String, String)| st) != Some(state) {
                changes.push(json!({ "pid": k.0, "start_time": k.1, "name": name, "state": state }));
            }
        }
        for (k, (name, _)) in &last_procs {
            if !procs.contains_key(k) {
                changes.push(json!({ "pid": k.0, "start_time": k.1, "name": name, "state": "forgotten" }));
            }
        }
        if devices == last_devices && changes.is_empty() {
            return None;
        }
        last_devices = devices.clone();
        last_procs = procs;
        let data =
            json!({ "timestamp_ns": crate::collector::unix_ns(), "devices": devices, "process_changes": changes });
        Some(Ok(Event::default().event("update").data(data.to_string())))
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}
