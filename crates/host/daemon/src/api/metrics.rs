//! `GET /metrics`: what the daemon knows, for Prometheus, in the OpenMetrics text format when
//! the scraper asks for it (`Accept: application/openmetrics-text`) and in the classic
//! Prometheus text format (0.0.4) otherwise. Built with `prometheus-client` from a fresh
//! registry per scrape: every series reflects the collector now, and none outlives its chip
//! or process.
//!
//! Cardinality is bounded: the [`MAX_PROCESS_SERIES`] running processes that hold the most
//! memory get series of their own, the rest are summed into `pid="other"`; exited processes
//! are summed per chip and category.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::{ApiError, Shared};

/// Running processes with series of their own, the largest first; the rest are summed.
pub const MAX_PROCESS_SERIES: usize = 100;

/// A chip and one of its buffer types, named as TT's own telemetry names chips (hostname,
/// chip) plus what identifies it across restarts (its hardware id) and what it is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChipLabels {
    hostname: String,
    chip: String,
    hw_id: String,
    board: String,
    arch: String,
    category: String,
}

/// A running process on a chip, in one buffer type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    hostname: String,
    pid: String,
    comm: String,
    user: String,
    chip: String,
    hw_id: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    hostname: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    hostname: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    hostname: String,
    alertname: String,
    severity: String,
    alertstate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    hostname: String,
}

type BytesGauge = Gauge<f64, AtomicU64>;

/// `GET /metrics`.
pub(super) async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let started = Instant::now();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let host = s.hostname.clone();
    let mut registry = Registry::with_prefix("ttmem");

    let used = Family::<ChipLabels, BytesGauge>::default();
    let capacity = Family::<ChipLabels, BytesGauge>::default();
    let largest_free = Family::<ChipLabels, BytesGauge>::default();
    let process_bytes = Family::<ProcessLabels, BytesGauge>::default();
    let left_behind = Family::<ChipLabels, BytesGauge>::default();
    let time_to_full = Family::<ChipLabels, Gauge<f64, AtomicU64>>::default();
    let fit_r2 = Family::<ChipLabels, Gauge<f64, AtomicU64>>::default();
    let fragmentation = Family::<ChipLabels, Gauge<f64, AtomicU64>>::default();
    let alerts = Family::<AlertLabels, Gauge>::default();
    let processes = Family::<StateLabels, Gauge>::default();
    let sources = Family::<SourceLabels, Gauge>::default();
    let drained = Family::<HostLabels, Counter>::default();
    let lost = Family::<HostLabels, Counter>::default();
    let anomalies = Family::<HostLabels, Counter>::default();
    let refused = Family::<HostLabels, Counter>::default();
    let scrape = Family::<HostLabels, Gauge<f64, AtomicU64>>::default();
    registry.register_with_unit(
        "device_memory_used",
        "Bytes of a buffer type that running processes hold on a chip",
        Unit::Bytes,
        used.clone(),
    );
    registry.register_with_unit(
        "device_memory_capacity",
        "Bytes of a buffer type a chip has",
        Unit::Bytes,
        capacity.clone(),
    );
    registry.register_with_unit(
        "device_memory_largest_free_block",
        "Largest free block of one bank, from the allocations the daemon lists (may be larger than the truth where a process's detail is incomplete)",
        Unit::Bytes,
        largest_free.clone(),
    );
    registry.register_with_unit(
        "process_memory",
        "Bytes a running process holds on a chip per buffer type (the largest processes; the rest summed as pid=\"other\")",
        Unit::Bytes,
        process_bytes.clone(),
    );
    registry.register_with_unit(
        "exited_memory_left_behind",
        "Bytes that processes which exited still held, per chip and buffer type",
        Unit::Bytes,
        left_behind.clone(),
    );
    registry.register_with_unit(
        "device_memory_time_to_full",
        "Seconds until a buffer type fills at the trend of the last 10 minutes (only where the series grows and a line fits it well)",
        Unit::Seconds,
        time_to_full.clone(),
    );
    registry.register(
        "device_memory_forecast_fit_r2",
        "How well a line fits the last 10 minutes of a buffer type's use, 0 to 1",
        fit_r2.clone(),
    );
    registry.register(
        "device_memory_fragmentation_ratio",
        "1 - largest free block / free space, of one bank, from the allocations the daemon lists (0: all free space in one block)",
        fragmentation.clone(),
    );
    registry.register(
        "alerts",
        "ttmem's built-in alerts pending or firing, by rule (like Prometheus' own ALERTS)",
        alerts.clone(),
    );
    registry.register("processes", "Processes the daemon knows, by state", processes.clone());
    registry.register(
        "process_sources",
        "Processes by where their figures come from (region, legacy-socket, tt-metal-shm, kmd)",
        sources.clone(),
    );
    registry.register(
        "events_drained",
        "Allocation events read from the processes' rings into the ledger",
        drained.clone(),
    );
    registry.register(
        "events_lost",
        "Allocation events overwritten in a ring before the daemon read them (the totals stay exact; the detail is incomplete)",
        lost.clone(),
    );
    registry.register(
        "ring_anomalies",
        "Times a ring's head went backwards (a broken or hostile writer)",
        anomalies.clone(),
    );
    registry.register(
        "regions_refused",
        "Region files refused (not a region, another user's forgery, too large)",
        refused.clone(),
    );
    registry.register_with_unit(
        "scrape_duration",
        "Time this scrape took to gather, before encoding",
        Unit::Seconds,
        scrape.clone(),
    );

    {
        let c = s.collector.read();
        // The views once, for the snapshot and for the ledger devices behind its chips.
        let (views, notes) = c.merged_views();
        let ledger_of = c.ledger_devices(&c.table_of(&views));
        let snap = c.snapshot_of(&views, notes, ttmem_model::now_ns());
        let chip_of: BTreeMap<u32, (&str, &str, &str)> = snap
            .devices
            .iter()
            .map(|d| (d.id, (d.hw_id.as_str(), d.name.as_str(), d.arch.as_str())))
            .collect();
        let chip_labels = |id: u32, category: &str| {
            let (hw_id, board, arch) = chip_of.get(&id).copied().unwrap_or(("", "", ""));
            ChipLabels {
                hostname: host.clone(),
                chip: id.to_string(),
                hw_id: hw_id.to_string(),
                board: board.to_string(),
                arch: arch.to_string(),
                category: category.to_string(),
            }
        };
        for d in &snap.devices {
            let ledger_device = ledger_of.get(&d.id).copied();
            for cat in &d.categories {
                let labels = chip_labels(d.id, &cat.name);
                used.get_or_create(&labels).set(cat.used as f64);
                capacity.get_or_create(&labels).set(cat.total as f64);
                if let Some(f) = ledger_device.and_then(|dk| c.ledger().fragmentation(dk, &cat.name).ok()) {
                    largest_free.get_or_create(&labels).set(f.largest_free_per_bank as f64);
                    fragmentation.get_or_create(&labels).set(f.ratio);
                }
            }
        }
        let now_s = ttmem_model::now_ns() / 1_000_000_000;
        for f in c.forecasts(now_s, super::space::DEFAULT_FORECAST_WINDOW_S) {
            let labels = chip_labels(f.device, &f.category);
            if let Some(r2) = f.r2 {
                fit_r2.get_or_create(&labels).set(r2);
            }
            if let Some(t) = f.time_to_full_s {
                time_to_full.get_or_create(&labels).set(t);
            }
        }
        // The largest running processes by their total bytes, then the rest summed.
        let mut running: Vec<&ttmem_model::ProcessRow> =
            snap.processes.iter().filter(|p| p.state.is_running()).collect();
        running.sort_by_key(|p| std::cmp::Reverse(p.totals.iter().map(|t| t.bytes).sum::<u64>()));
        for (rank, p) in running.iter().enumerate() {
            let (pid, comm, user) = if rank < MAX_PROCESS_SERIES {
                (p.id.pid.to_string(), p.id.name.clone(), p.id.user.clone())
            } else {
                ("other".to_string(), "other".to_string(), String::new())
            };
            for d in &p.devices {
                for cat in d.categories.iter().filter(|c| c.bytes > 0) {
                    let labels = ProcessLabels {
                        hostname: host.clone(),
                        pid: pid.clone(),
                        comm: comm.clone(),
                        user: user.clone(),
                        chip: d.id.to_string(),
                        hw_id: d.hw_id.clone(),
                        category: cat.name.clone(),
                    };
                    process_bytes.get_or_create(&labels).inc_by(cat.bytes as f64);
                }
            }
        }
        for p in snap.processes.iter().filter(|p| !p.state.is_running()) {
            for d in &p.devices {
                for cat in d.categories.iter().filter(|c| c.bytes > 0) {
                    left_behind
                        .get_or_create(&chip_labels(d.id, &cat.name))
                        .inc_by(cat.bytes as f64);
                }
            }
        }
        let running_count = running.len() as i64;
        let host_labels = HostLabels { hostname: host.clone() };
        for (state, n) in [
            ("running", running_count),
            ("exited", snap.processes.len() as i64 - running_count),
        ] {
            processes
                .get_or_create(&StateLabels {
                    hostname: host.clone(),
                    state: state.into(),
                })
                .set(n);
        }
        for kind in [
            ttmem_model::SourceKind::Region,
            ttmem_model::SourceKind::LegacySocket,
            ttmem_model::SourceKind::TtMetalShm,
            ttmem_model::SourceKind::Kmd,
        ] {
            let n = snap.processes.iter().filter(|p| p.source == kind).count() as i64;
            sources
                .get_or_create(&SourceLabels {
                    hostname: host.clone(),
                    source: kind.as_str().into(),
                })
                .set(n);
        }
        for a in c.alerts().active() {
            alerts
                .get_or_create(&AlertLabels {
                    hostname: host.clone(),
                    alertname: a.rule.clone(),
                    severity: a.severity.clone(),
                    alertstate: a.state.as_str().into(),
                })
                .inc();
        }
        let stats = c.stats();
        drained.get_or_create(&host_labels).inc_by(stats.events);
        lost.get_or_create(&host_labels).inc_by(stats.events_lost);
        anomalies.get_or_create(&host_labels).inc_by(stats.anomalies);
        refused.get_or_create(&host_labels).inc_by(stats.regions_refused);
        scrape.get_or_create(&host_labels).set(started.elapsed().as_secs_f64());
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")))?;
    let (body, content_type) = if openmetrics {
        (text, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        (classic(&text), "text/plain; version=0.0.4; charset=utf-8")
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response())
}

/// OpenMetrics text → the classic Prometheus text format: no `# EOF` or `# UNIT` lines, and a
/// counter's `# HELP`/`# TYPE` name its sample (`…_total`).
fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_classic_format_names_counters_by_their_sample_and_has_no_eof() {
        let om = "# HELP ttmem_events_lost Lost.\n# TYPE ttmem_events_lost counter\nttmem_events_lost_total{hostname=\"h\"} 3\n# HELP ttmem_x_bytes X.\n# TYPE ttmem_x_bytes gauge\n# UNIT ttmem_x_bytes bytes\nttmem_x_bytes 1.0\n# EOF\n";
        assert_eq!(
            super::classic(om),
            "# HELP ttmem_events_lost_total Lost.\n# TYPE ttmem_events_lost_total counter\nttmem_events_lost_total{hostname=\"h\"} 3\n# HELP ttmem_x_bytes X.\n# TYPE ttmem_x_bytes gauge\nttmem_x_bytes 1.0\n"
        );
    }
}
