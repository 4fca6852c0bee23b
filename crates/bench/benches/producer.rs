//! Criterion benches of the producer hot path (complements `ttmem bench producer`).
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_region::DeviceKind;

fn producer(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("ttmem-criterion-{}", std::process::id()));
    let t = Tracker::new(Config {
        dir: dir.clone(),
        ..Config::default()
    });
    let d = t
        .register_device(&DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            1,
            0,
            "wormhole_b0",
            "bench",
            tt::wormhole_categories(),
        ))
        .expect("register");
    let mut g = c.benchmark_group("producer");
    let mut a = 0u64;
    g.bench_function("tracked alloc+free pair", |b| {
        b.iter(|| {
            a = a.wrapping_add(64);
            t.alloc(d, tt::DRAM, black_box(a), 4096);
            t.free(d, tt::DRAM, black_box(a), 4096);
        })
    });
    g.bench_function("untracked pair", |b| {
        b.iter(|| {
            a = a.wrapping_add(64);
            black_box((a, tt::DRAM, 4096u64));
            black_box((a, tt::DRAM, 4096u64));
        })
    });
    let shm = ttmem_bench::baselines::SharedCounters::new().expect("shm");
    g.bench_function("shm atomic baseline pair", |b| {
        b.iter(|| {
            shm.record(0, true, 4096);
            shm.record(0, false, 4096);
        })
    });
    g.finish();
    drop(t);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, producer);
criterion_main!(benches);
