//! `ttmem bench daemon`: the daemon's figures, through its real code paths: a real region
//! written by the client, drained by the collector into the ledger.

use std::time::Instant;

use ttmem_client::{CategorySpec, Config, DeviceSpec, Tracker};
use ttmem_daemon::collector::{Collector, CollectorConfig};
use ttmem_ledger::SortBy;
use ttmem_region::DeviceKind;

use crate::{BenchError, Figure, Report, Target, figure, tempdir};

/// Drains until the collector has applied `total` events; returns the seconds it took.
fn drain(c: &mut Collector, total: u64) -> Result<f64, BenchError> {
    let start = Instant::now();
    while c.stats().events < total {
        let before = c.stats().events;
        c.tick(ttmem_daemon::collector::Now::system());
        if c.stats().events == before && c.stats().ticks > 2 {
            return Err(BenchError::Setup(format!(
                "drain stalled at {before} of {total} events"
            )));
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Measures draining events into the ledger (`samples` rounds of steady churn, then building up
/// `allocations` live allocations), then queries against them.
pub fn daemon(allocations: u64, samples: usize, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    /// Alloc/free pairs per churn sample: 1 M events, long enough to time one sample alone.
    const CHURN_PAIRS: u64 = 500_000;
    const STEADY_LIVE: u64 = 10_000;
    let dir = tempdir()?;
    // The ring holds a whole sample (or the whole build-up), so the collector never loses any.
    let ring = ((2 * CHURN_PAIRS + STEADY_LIVE).max(allocations).next_power_of_two() as u32).clamp(1 << 10, 1 << 24);
    let t = Tracker::new(Config {
        dir: dir.path().into(),
        ring_events: ring,
        max_shards: 2,
        ..Config::default()
    });
    let dram = CategorySpec {
        name: "DRAM".into(),
        capacity: 64 << 30,
        addr_base: 0,
        addr_end: 64 << 30,
        banks: 1,
        alignment: 64,
    };
    let d = t
        .register_device(&DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            0xD0,
            0,
            "wormhole_b0",
            "bench",
            vec![dram],
        ))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut c = Collector::new(
        CollectorConfig {
            retention: std::time::Duration::from_secs(3600),
            remove_dead_regions: false,
            ..CollectorConfig::new(dir.path().into())
        },
        ttmem_daemon::monotonic_ns(),
    );

    progress(&format!(
        "steady churn: short-lived buffers over a live set, {samples} samples"
    ));
    for i in 0..STEADY_LIVE {
        t.alloc(d, 0, (1 << 36) + i * 64, 64);
    }
    let mut applied = STEADY_LIVE;
    drain(&mut c, applied)?;
    // Each sample is a backlog the collector catches up on: the ring was written before the
    // drain starts, so its events come from memory, not from the cache (the worst case).
    let churn_events = 2 * CHURN_PAIRS;
    let mut churn = Vec::with_capacity(samples);
    for _ in 0..samples {
        for i in 0..CHURN_PAIRS {
            let a = (1 << 37) + (i % 4096) * 64;
            t.alloc(d, 0, a, 4096);
            t.free(d, 0, a, 4096);
        }
        applied += churn_events;
        churn.push(drain(&mut c, applied)? * 1e9 / churn_events as f64);
    }

    progress(&format!("building up {allocations} live allocations"));
    for i in 0..allocations {
        t.alloc(d, 0, i * 64, 64);
    }
    let buildup_s = drain(&mut c, applied + allocations)?;
    let live = c.ledger().live_allocations();
    if live != allocations + STEADY_LIVE {
        return Err(BenchError::Setup(format!(
            "the ledger holds {live} allocations, expected {}",
            allocations + STEADY_LIVE
        )));
    }

    progress("snapshot and page queries");
    let mut snapshot = Vec::new();
    for _ in 0..50 {
        let s = Instant::now();
        let v = serde_json::to_vec(&c.snapshot()).expect("snapshot serializes");
        std::hint::black_box(v);
        snapshot.push(s.elapsed().as_nanos() as f64);
    }
    let key = c
        .key_of_pid(std::process::id())
        .ok_or_else(|| BenchError::Setup("own process not found".into()))?;
    let mut page = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        let p = c
            .ledger()
            .allocations(key, SortBy::Address, 0, 100, ttmem_daemon::monotonic_ns())
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let v = serde_json::to_vec(&p).expect("page serializes");
        std::hint::black_box(v);
        page.push(s.elapsed().as_nanos() as f64);
    }
    let bytes_per = c.ledger().map_bytes() as f64 / live as f64;
    progress("alert evaluation");
    // The built-in rules over everything the collector sees (fragmentation sorts a chip's
    // allocations): what each evaluation holds the collector's lock for.
    let mut alerts = Vec::new();
    for i in 0..10u64 {
        let s = Instant::now();
        c.evaluate_alerts(ttmem_model::now_ns() + i);
        alerts.push(s.elapsed().as_nanos() as f64);
    }

    let buildup_rate = allocations as f64 / buildup_s;
    let per_event = |n: u64, secs: f64| secs * 1e9 / n as f64;
    let churn = figure(
        "drain_churn",
        &format!(
            "{churn_events} events per sample (alloc/free pairs over {STEADY_LIVE} live) read from a ring into the ledger, one core"
        ),
        1,
        churn,
    );
    let churn_rate = 1e9 / churn.median_ns;
    let figures = vec![
        churn,
        Figure {
            name: "drain_buildup".into(),
            description: format!(
                "{allocations} new live allocations into the ledger, one core: {buildup_rate:.0} events/s"
            ),
            median_ns: per_event(allocations, buildup_s),
            p99_ns: per_event(allocations, buildup_s),
            threads: 1,
            samples: 1,
        },
        figure(
            "snapshot_totals",
            &format!("the ps snapshot as JSON, {live} live allocations"),
            1,
            snapshot,
        ),
        figure(
            "process_first_page",
            &format!("first 100 allocations of one process as JSON, {live} live"),
            1,
            page,
        ),
        figure(
            "alert_evaluation",
            &format!("the built-in alert rules evaluated once (every 5 s by default), {live} live"),
            1,
            alerts,
        ),
    ];
    let median = |n: &str| {
        figures
            .iter()
            .find(|f| f.name == n)
            .map(|f| f.median_ns)
            .unwrap_or(f64::NAN)
    };
    let target = Target::new;
    let targets = vec![
        target("drain events per second (churn)", churn_rate, ">=", 20e6),
        target("snapshot median ms", median("snapshot_totals") / 1e6, "<=", 1.0),
        target("first page median ms", median("process_first_page") / 1e6, "<=", 50.0),
        target(
            "alert evaluation median ms",
            median("alert_evaluation") / 1e6,
            "<=",
            250.0,
        ),
        target("daemon bytes per live allocation", bytes_per, "<=", 64.0),
    ];
    Ok(Report {
        bench: "daemon".into(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        figures,
        ratios: vec![
            ("drain events per second, churn".into(), churn_rate),
            ("drain events per second, build-up".into(), buildup_rate),
            ("daemon bytes per live allocation".into(), bytes_per),
        ],
        targets,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_daemon_bench_reports_every_figure() {
        let r = super::daemon(2_000, 2, &mut |_| {}).unwrap();
        let names: Vec<&str> = r.figures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "drain_churn",
                "drain_buildup",
                "snapshot_totals",
                "process_first_page",
                "alert_evaluation"
            ]
        );
        assert_eq!(r.targets.len(), 5);
        assert!(r.figures.iter().all(|f| f.median_ns > 0.0));
    }
}
