//! `GET /api/v1/processes/{pid}/export?format=perfetto|memory-viz[&since_s=S]`: one process's
//! memory as a file for Perfetto UI or PyTorch's memory viewer (`ttmem-export` writes it).
//! Detail, so shown only to whom may see the process's allocations.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use ttmem_export::{AddressRange, Format, ProcessTrace};
use ttmem_ledger::SortBy;
use ttmem_model::api;

use super::extract::{P, Q};
use super::{ApiError, Shared, Viewer, allocation, bad, detail_of, not_found, recorded_events};

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    format: Option<String>,
    /// Leave out what came before this Unix second.
    since_s: Option<u64>,
}

/// The export as a download (`Content-Disposition: attachment`).
pub(super) async fn export(
    State(s): State<Arc<Shared>>,
    viewer: Viewer,
    P(pid): P<u32>,
    Q(q): Q<ExportQuery>,
) -> Result<Response, ApiError> {
    let name = q.format.as_deref().unwrap_or("perfetto");
    let format = Format::parse(name).ok_or_else(|| bad(format!("unknown format {name:?} ({})", Format::NAMES)))?;
    let trace = gather(&s, viewer, pid, q.since_s)?;
    let body = ttmem_export::render(format, &trace).map_err(|e| {
        tracing::warn!("export of pid {pid}: {e}");
        ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })?;
    let disposition = format!("attachment; filename=\"{}\"", format.file_name(pid));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// What the trace needs, read under one lock: the live list, the flight recorder, the
/// process's series on each chip and category, and the chips' address ranges.
fn gather(s: &Shared, viewer: Viewer, pid: u32, since_s: Option<u64>) -> Result<ProcessTrace, ApiError> {
    let c = s.collector.read();
    let key = detail_of(&c, viewer, pid, "export")?;
    let view = c
        .view(key)
        .ok_or_else(|| not_found(format!("no process with pid {pid}")))?;
    let now_mono = (s.now_ns)();
    let clock = api::ClockPair {
        monotonic_ns: now_mono,
        unix_ns: ttmem_model::now_ns(),
    };
    let devices = c.device_ids();
    let live: Vec<api::Allocation> = c
        .ledger()
        .allocations(key, SortBy::Address, 0, u64::MAX, now_mono)
        .map_err(|e| not_found(e.to_string()))?
        .items
        .into_iter()
        .map(|a| allocation(pid, &devices, a))
        .collect();
    let events = recorded_events(&c, key, &devices);
    let table = c.device_table();
    let now_s = clock.unix_ns / 1_000_000_000;
    let from = since_s
        .unwrap_or(0)
        .max(now_s.saturating_sub(ttmem_history::TIERS[0].window_s));
    let mut history = Vec::new();
    let mut ranges = Vec::new();
    let process = Some((view.id.pid, view.id.start_time));
    // The chips and buffer types the live list and the recorder name, gathered once.
    let mut used: HashSet<(u32, &str)> = live
        .iter()
        .filter_map(|a| Some((a.device?, a.category.as_str())))
        .collect();
    used.extend(events.iter().filter_map(|e| Some((e.device?, e.category.as_deref()?))));
    for id in 0..table.len() as u32 {
        let Some(device) = table.device(id) else { continue };
        let dk = c.ledger_device(id);
        for cat in &device.categories {
            let category = cat.name.clone();
            // A window that starts after now holds no history (the query would carry the last
            // value to its start, a sample in the future).
            let points = crate::collector::series_key(&table, id, &category, process)
                .filter(|_| from <= now_s)
                .map(|k| c.history().query(&k, 0, from, now_s))
                .unwrap_or_default();
            if !used.contains(&(id, category.as_str())) && points.iter().all(|p| p.1 == 0) {
                continue;
            }
            if let Some((base, end)) = dk.and_then(|dk| c.ledger().address_range(dk, &category).ok()) {
                ranges.push(AddressRange {
                    device: id,
                    category: category.clone(),
                    base,
                    end,
                    banks: cat.banks.max(1) as u64,
                });
            }
            history.push(api::History {
                device: id,
                category,
                pid: Some(pid),
                resolution: "1s".into(),
                from,
                to: now_s,
                points,
            });
        }
    }
    Ok(ProcessTrace {
        pid,
        name: view.id.name.clone(),
        clock,
        since_unix_ns: since_s.map(|s| s.saturating_mul(1_000_000_000)),
        live,
        events,
        history,
        ranges,
    })
}
