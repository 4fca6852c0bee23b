//! Where `ttmem top` gets its data: a daemon's API (full detail), or the regions directly
//! (counters only).

use std::collections::BTreeMap;

use std::sync::Arc;

use ttmem_apiclient::{ApiError, Conditional, Endpoint, get_json, get_json_if_changed};
use ttmem_model::Snapshot;
use ttmem_model::api::{Alerts, Allocation, AllocationPage, Events, Maps, RecentEvent};
use ttmem_model::sources::Local;

/// One host's data source.
#[derive(Clone, Debug)]
pub enum Source {
    /// A daemon.
    Daemon {
        /// Shown name.
        label: String,
        /// Where it listens.
        endpoint: Endpoint,
        /// Read these sources if the daemon does not answer.
        fallback: Option<Local>,
    },
    /// The regions, TT-Metal's counter files and the kernel driver's pid lists, read directly.
    Regions(Local),
}

/// What one refresh of a host brings.
#[derive(Clone, Debug, Default)]
pub struct HostData {
    /// Shown name.
    pub label: String,
    /// `daemon` or `regions`.
    pub source: String,
    /// The snapshot (None: the host could not be read); shared, so an unchanged one is reused.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The daemon's ETag for it, and whether it has per-chip detail.
    pub etag: Option<(String, bool)>,
    /// Whether it differs from the previous refresh.
    pub changed: bool,
    /// Per device id: (occupancy cells of DRAM, largest free block per bank).
    pub maps: BTreeMap<u32, (Vec<f32>, u64)>,
    /// Why the host could not be read.
    pub error: Option<String>,
    /// What fires on the daemon, in a line (None: nothing, or no daemon).
    pub alert: Option<String>,
}

/// The drill-down of one process.
#[derive(Clone, Debug, Default)]
pub struct Detail {
    /// Allocations, largest first.
    pub allocations: Vec<Allocation>,
    /// Live allocations in total.
    pub total: u64,
    /// Recent events, newest first.
    pub events: Vec<RecentEvent>,
    /// A note to show (e.g. only counters without a daemon).
    pub note: Option<String>,
}

impl Source {
    /// Reads a snapshot, and memory maps from a daemon when `map_cells` is not 0.
    /// `per_chip` asks for every process's bytes per chip (needed while a chip filter is on);
    /// otherwise only per-process totals come from a daemon. With `previous`, an unchanged
    /// snapshot is not sent again (the daemon answers 304) and the previous one is reused.
    pub fn fetch(&self, map_cells: usize, per_chip: bool, previous: Option<&HostData>) -> HostData {
        let path = if per_chip {
            "/api/v1/snapshot"
        } else {
            "/api/v1/snapshot?detail=totals"
        };
        match self {
            Source::Daemon {
                label,
                endpoint,
                fallback,
            } => {
                let prev_tag = previous
                    .and_then(|p| p.etag.as_ref())
                    .filter(|(_, pc)| *pc == per_chip)
                    .map(|(t, _)| t.as_str());
                let answer = match get_json_if_changed::<Snapshot>(endpoint, path, prev_tag) {
                    Ok(Conditional::NotModified) => Ok((
                        previous.and_then(|p| p.snapshot.clone()),
                        previous.and_then(|p| p.etag.clone()),
                        false,
                    )),
                    Ok(Conditional::Changed(s, tag)) => Ok((Some(Arc::new(s)), tag.map(|t| (t, per_chip)), true)),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok((snapshot, etag, changed)) => {
                        let mut maps = BTreeMap::new();
                        if map_cells > 0
                            && let Ok(v) =
                                get_json::<Maps>(endpoint, &format!("/api/v1/maps?category=DRAM&cells={map_cells}"))
                        {
                            for m in v.maps {
                                maps.insert(m.device, (m.cells, m.largest_free_per_bank));
                            }
                        }
                        let alert = get_json::<Alerts>(endpoint, "/api/v1/alerts")
                            .ok()
                            .and_then(|a| ttmem_report::alerts::alerts_line(&a));
                        let changed = changed || previous.is_none_or(|p| p.alert != alert);
                        HostData {
                            label: label.clone(),
                            source: format!("daemon {endpoint}"),
                            snapshot,
                            etag,
                            changed,
                            maps,
                            error: None,
                            alert,
                        }
                    }
                    Err(e) => match (fallback, &e) {
                        (Some(dir), ApiError::NotRunning(_)) => {
                            let mut h = Source::Regions(dir.clone()).fetch(map_cells, per_chip, None);
                            h.label = label.clone();
                            h
                        }
                        _ => HostData {
                            label: label.clone(),
                            source: format!("daemon {endpoint}"),
                            error: Some(e.to_string()),
                            changed: true,
                            ..Default::default()
                        },
                    },
                }
            }
            Source::Regions(local) => match local.snapshot() {
                Ok(snapshot) => HostData {
                    label: "local".into(),
                    source: format!("regions in {} (no daemon: counters only)", local.regions.display()),
                    snapshot: Some(Arc::new(snapshot)),
                    changed: true,
                    ..Default::default()
                },
                Err(e) => HostData {
                    label: "local".into(),
                    source: "regions".into(),
                    error: Some(e.to_string()),
                    changed: true,
                    ..Default::default()
                },
            },
        }
    }

    /// One process's allocations and recent events (a daemon only).
    pub fn detail(&self, pid: u32, data: &HostData) -> Detail {
        let Source::Daemon { endpoint, .. } = self else {
            return Detail {
                note: Some(
                    "no daemon: only counters are known (start `ttmem serve` for allocations and events)".into(),
                ),
                ..Default::default()
            };
        };
        if !data.source.starts_with("daemon") {
            return Detail {
                note: Some("the daemon does not answer: only counters are known".into()),
                ..Default::default()
            };
        }
        let mut d = Detail::default();
        match get_json::<AllocationPage>(
            endpoint,
            &format!("/api/v1/processes/{pid}/allocations?sort=size&limit=200"),
        ) {
            Ok(page) => {
                d.total = page.total;
                d.allocations = page.items;
                if !page.complete {
                    d.note = Some(match page.detail_since_unix_ns {
                        Some(since) => format!(
                            "{} events were lost: allocations older than {:.0} s are not listed (totals are exact)",
                            page.events_lost,
                            ttmem_model::now_ns().saturating_sub(since) as f64 / 1e9
                        ),
                        None => format!(
                            "{} events were written before the daemon attached: the list may lack older allocations (totals are exact)",
                            page.events_lost
                        ),
                    });
                }
            }
            Err(e) => d.note = Some(e.to_string()),
        }
        if let Ok(v) = get_json::<Events>(endpoint, &format!("/api/v1/processes/{pid}/events")) {
            d.events = v.events.into_iter().rev().collect();
        }
        d
    }
}
