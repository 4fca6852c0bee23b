//! Free space: fragmentation, memory maps and "will N bytes fit?", each naming the processes
//! whose detail lacks allocations (the answer may overstate free space there).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use ttmem_ledger::DeviceKey;
use ttmem_model::api;

use super::extract::{P, Q};
use super::{ApiError, ApiResult, Shared, Viewer, bad, not_found};
use crate::collector::Collector;

/// Processes whose detail lacks allocations (on `device`, or anywhere): every answer built from
/// the detail names them.
pub(super) fn incomplete(s: &Shared, c: &Collector, device: Option<u32>) -> Vec<api::IncompleteDetail> {
    c.incomplete_detail(device, (s.now_ns)(), ttmem_model::now_ns())
}

fn ledger_device(c: &Collector, id: u32) -> Result<DeviceKey, ApiError> {
    c.ledger_device(id).ok_or_else(|| not_found(format!("no device {id}")))
}

pub(super) async fn fragmentation(State(s): State<Arc<Shared>>, P(id): P<u32>) -> ApiResult<api::DeviceFragmentation> {
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let (_, info, _) = c
        .ledger()
        .devices()
        .find(|(k, _, _)| *k == dk)
        .ok_or_else(|| not_found(format!("no device {id}")))?;
    let categories = info
        .categories
        .iter()
        .filter(|cat| cat.addr_end > cat.addr_base)
        .filter_map(|cat| {
            c.ledger()
                .fragmentation(dk, &cat.name)
                .ok()
                .map(|fragmentation| api::CategoryFragmentation {
                    name: cat.name.clone(),
                    banks: cat.banks,
                    fragmentation,
                })
        })
        .collect();
    Ok(Json(api::DeviceFragmentation {
        device: id,
        categories,
        incomplete: incomplete(&s, &c, Some(id)),
    }))
}

#[derive(Deserialize)]
pub(super) struct MapQuery {
    category: Option<String>,
    cells: Option<usize>,
}

/// `GET /api/v1/devices/{id}/map?category=DRAM&cells=64`: occupancy of one bank's range in
/// equal cells (0 free to 1 full), with the largest free block, for memory-map displays.
pub(super) async fn map(State(s): State<Arc<Shared>>, P(id): P<u32>, Q(q): Q<MapQuery>) -> ApiResult<api::Map> {
    let category = q.category.unwrap_or_else(|| "DRAM".into());
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let (cells, owners) = c
        .ledger()
        .occupancy_by_owner(dk, &category, q.cells.unwrap_or(64))
        .map_err(|e| bad(e.to_string()))?;
    let owners = owners.into_iter().map(|k| k.and_then(|k| c.pid_of(k))).collect();
    let fragmentation = c
        .ledger()
        .fragmentation(dk, &category)
        .map_err(|e| bad(e.to_string()))?;
    let (addr_base, addr_end) = c
        .ledger()
        .address_range(dk, &category)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Json(api::Map {
        device: id,
        category,
        cells,
        owners,
        addr_base,
        addr_end,
        fragmentation,
        incomplete: incomplete(&s, &c, Some(id)),
    }))
}

/// `GET /api/v1/maps?category=DRAM&cells=64`: the map of every device in one answer, for
/// monitors refreshing often.
pub(super) async fn maps(State(s): State<Arc<Shared>>, Q(q): Q<MapQuery>) -> ApiResult<api::Maps> {
    let category = q.category.unwrap_or_else(|| "DRAM".into());
    let c = s.collector.read();
    let known = c
        .ledger()
        .devices()
        .any(|(_, info, _)| info.categories.iter().any(|x| x.name.eq_ignore_ascii_case(&category)));
    if !known && c.ledger().devices().next().is_some() {
        return Err(bad(format!("no device has a category {category:?}")));
    }
    let mut ids: Vec<(DeviceKey, u32)> = c.device_ids().into_iter().collect();
    ids.sort_by_key(|&(dk, id)| (id, dk));
    ids.dedup_by_key(|&mut (_, id)| id);
    let maps = ids
        .into_iter()
        .filter_map(|(dk, device)| {
            let cells = c.ledger().occupancy(dk, &category, q.cells.unwrap_or(64)).ok()?;
            let f = c.ledger().fragmentation(dk, &category).ok()?;
            Some(api::DeviceMap {
                device,
                cells,
                largest_free_per_bank: f.largest_free_per_bank,
            })
        })
        .collect();
    Ok(Json(api::Maps {
        category,
        maps,
        incomplete: incomplete(&s, &c, None),
    }))
}

#[derive(Deserialize)]
pub(super) struct FitQuery {
    device: Option<u32>,
    category: Option<String>,
    bytes: Option<u64>,
}

pub(super) async fn fit(State(s): State<Arc<Shared>>, viewer: Viewer, Q(q): Q<FitQuery>) -> ApiResult<api::Fit> {
    let (Some(id), Some(category), Some(bytes)) = (q.device, q.category, q.bytes) else {
        return Err(bad(
            "fit needs device, category and bytes, e.g. /api/v1/fit?device=0&category=DRAM&bytes=1073741824",
        ));
    };
    let c = s.collector.read();
    let dk = ledger_device(&c, id)?;
    let f = c.ledger().fit(dk, &category, bytes).map_err(|e| bad(e.to_string()))?;
    Ok(Json(api::Fit {
        device: id,
        category,
        // Owners as pids, not internal keys; none for processes the viewer may not see.
        fit: f.map_owners(|k| c.view(k).filter(|v| viewer.may_see(v.id.uid)).map(|v| v.id.pid)),
        incomplete: incomplete(&s, &c, Some(id)),
    }))
}

#[derive(Deserialize)]
pub(super) struct ForecastQuery {
    window_s: Option<u64>,
}

/// The window a forecast fits its line over, by default.
pub(super) const DEFAULT_FORECAST_WINDOW_S: u64 = 600;

/// `GET /api/v1/forecast[?window_s=S]`: when each chip's buffer types fill up at the trend of
/// the last S seconds (10 to 3600, default 600), with the fit's quality.
pub(super) async fn forecast(State(s): State<Arc<Shared>>, Q(q): Q<ForecastQuery>) -> ApiResult<api::Forecast> {
    let window_s = q.window_s.unwrap_or(DEFAULT_FORECAST_WINDOW_S);
    if !(10..=3600).contains(&window_s) {
        return Err(bad("window_s must be 10 to 3600 (seconds of 1 s history)"));
    }
    let now_s = ttmem_model::now_ns() / 1_000_000_000;
    Ok(Json(api::Forecast {
        window_s,
        min_r2: ttmem_history::forecast::MIN_R2,
        forecasts: s.collector.read().forecasts(now_s, window_s),
    }))
}
