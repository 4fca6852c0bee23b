//! Any request target (path and query, any bytes) through the API's router, as any peer:
//! never a server error, always JSON, every refusal with a reason
//! (`ttmem_daemon::api::fuzzing::check`). The daemon's state is one real region with tagged
//! allocations on a chip, so that handlers reach their lookups.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ttmem_client::{CategorySpec, Config, DeviceSpec, Tracker, tt};
use ttmem_daemon::api::{Shared, TcpAccess, fuzzing};
use ttmem_daemon::collector::{Collector, CollectorConfig, Now};

struct State {
    _dir: tempfile::TempDir,
    _tracker: Tracker,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::new(Config {
            dir: dir.path().into(),
            ..Config::default()
        });
        let dram = CategorySpec {
            name: "DRAM".into(),
            capacity: 1 << 30,
            addr_base: 0,
            addr_end: 1 << 30,
            banks: 12,
            alignment: 64,
        };
        let spec = DeviceSpec::tenstorrent(
            ttmem_region::DeviceKind::SimulatedTenstorrent,
            0xF0,
            0,
            "wormhole_b0",
            "fuzz",
            vec![dram],
        );
        let d = t.register_device(&spec).unwrap();
        let _tag = t.tag("layer.0");
        for i in 0..32u64 {
            t.alloc(d, tt::DRAM, i << 20, 1 << 20);
        }
        let mut c = Collector::new(
            CollectorConfig {
                retention: Duration::from_secs(60),
                remove_dead_regions: false,
                ..CollectorConfig::new(dir.path().into())
            },
            0,
        );
        c.tick(Now::system());
        c.sample(1);
        State {
            shared: Arc::new(Shared::new(c, TcpAccess::default())),
            _dir: dir,
            _tracker: t,
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = state();
    // The first byte picks the peer: TCP, root, or one of two other users.
    let (peer, target) = data.split_first().map_or((0, data), |(p, t)| (*p, t));
    let uid = match peer % 4 {
        0 => None,
        1 => Some(0),
        2 => Some(65534),
        _ => Some(1000),
    };
    let mut full = b"/api/v1/".to_vec();
    full.extend_from_slice(target);
    if let Err(e) = s.runtime.block_on(fuzzing::check(&s.shared, &full, uid)) {
        panic!("{e}");
    }
});
