//! Any request through the API's router (what the fuzz target in `crates/host/daemon/fuzz` does
//! with libFuzzer, here with proptest on stable): paths and queries built from the API's own
//! vocabulary with hostile values, and raw bytes. The answer is never a server error, always
//! JSON, and every refusal carries a reason (`ttmem_daemon::api::fuzzing::check`).

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_daemon::api::{Shared, TcpAccess, fuzzing};
use ttmem_daemon::collector::{Collector, CollectorConfig, Now};
use ttmem_sim::allocator::Policy;
use ttmem_sim::chip::{Arch, ChipModel};

/// A daemon's shared state over one real region with tagged allocations on two chips.
fn shared() -> (tempfile::TempDir, Tracker, Arc<Shared>) {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::new(Config {
        dir: dir.path().into(),
        ..Config::default()
    });
    for (hw, name) in [(0x91u64, "a"), (0, "b")] {
        let spec: DeviceSpec = ChipModel::new(Arch::WormholeB0, name, false, hw, 0, Policy::FirstFit).device_spec();
        let d = t.register_device(&spec).unwrap();
        let _tag = t.tag("layer.0");
        for i in 0..20u64 {
            t.alloc(d, tt::DRAM, i << 20, 1 << 20);
            t.alloc(d, tt::L1, 0x1000 + i * 4096, 4096);
        }
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
    let shared = Arc::new(Shared::new(c, TcpAccess::default()));
    (dir, t, shared)
}

const ENDPOINTS: &[&str] = &[
    "/api/v1/health",
    "/api/v1/stats",
    "/api/v1/snapshot",
    "/api/v1/devices",
    "/api/v1/devices/{}/fragmentation",
    "/api/v1/devices/{}/map",
    "/api/v1/maps",
    "/api/v1/processes",
    "/api/v1/processes/{}/allocations",
    "/api/v1/processes/{}/events",
    "/api/v1/processes/{}/export",
    "/api/v1/fit",
    "/api/v1/forecast",
    "/api/v1/leaks",
    "/api/v1/history",
    "/api/v1/process-records",
    "/api/v1/legacy",
    "/api/v1/legacy/dumps",
    "/api/v1/nope",
    "/metrics",
    "/",
];

const KEYS: &[&str] = &[
    "device",
    "category",
    "bytes",
    "sort",
    "offset",
    "limit",
    "min_age_s",
    "cells",
    "detail",
    "resolution",
    "from",
    "to",
    "pid",
    "since_s",
    "format",
    "x",
];

/// Values a hostile or careless client sends.
fn value(me: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(me.to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("DRAM".to_string()),
        Just("l1".to_string()),
        Just("size".to_string()),
        Just("totals".to_string()),
        Just("1s".to_string()),
        Just("memory-viz".to_string()),
        Just("perfetto".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999999999".to_string()),
        Just("1e9".to_string()),
        Just("NaN".to_string()),
        Just(String::new()),
        Just("%00".to_string()),
        Just("%ZZ".to_string()),
        Just("%E2%82%AC".to_string()),
        "[a-zA-Z0-9%+.-]{0,12}",
        any::<u64>().prop_map(|v| v.to_string()),
    ]
}

fn target(me: u32) -> impl Strategy<Value = String> {
    (
        proptest::sample::select(ENDPOINTS),
        value(me),
        proptest::collection::vec((proptest::sample::select(KEYS), value(me)), 0..5),
    )
        .prop_map(|(path, id, query)| {
            let path = path.replace("{}", &id);
            let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            if query.is_empty() {
                path
            } else {
                format!("{path}?{}", query.join("&"))
            }
        })
}

fn peer() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(65534)),
        any::<u32>().prop_map(Some)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_is_answered_with_json_and_never_a_server_error(
        t in target(std::process::id()),
        uid in peer(),
    ) {
        thread_local! {
            static STATE: (tempfile::TempDir, Tracker, Arc<Shared>) = shared();
            static RUNTIME: tokio::runtime::Runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        }
        let result = STATE.with(|(_, _, s)| RUNTIME.with(|rt| rt.block_on(fuzzing::check(s, t.as_bytes(), uid))));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn raw_bytes_after_the_prefix_are_answered_too(
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        uid in peer(),
    ) {
        thread_local! {
            static STATE: (tempfile::TempDir, Tracker, Arc<Shared>) = shared();
            static RUNTIME: tokio::runtime::Runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        }
        let mut t = b"/api/v1/".to_vec();
        t.extend(tail);
        let result = STATE.with(|(_, _, s)| RUNTIME.with(|rt| rt.block_on(fuzzing::check(s, &t, uid))));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
