//! `ttmem export` end to end (issue 13 §2): a real daemon and workload process; the Perfetto
//! trace and the memory-viz pickle are parsed (the pickle by Python's own `pickle`, with
//! classes refused) and checked against the daemon's ledger, event by event.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// The ledger's view of a process: its flight recorder (with the daemon's clocks) and every
/// live allocation.
fn ledger(d: &Daemon, pid: u64) -> (Value, Vec<Value>) {
    let events = d.get(&format!("/api/v1/processes/{pid}/events"));
    let page = d.get(&format!("/api/v1/processes/{pid}/allocations?limit=10000"));
    assert_eq!(page["complete"], true, "{page}");
    (events, page["items"].as_array().unwrap().clone())
}

fn export(d: &Daemon, pid: u64, format: &str, extra: &[&str]) -> Vec<u8> {
    let out = d._dir.path().join(format!("export-{format}"));
    let run = ttmem(&d.regions)
        .args(["export", "--api-socket"])
        .arg(&d.socket)
        .args(["--pid", &pid.to_string(), "--format", format, "-o"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("wrote"));
    std::fs::read(&out).unwrap()
}

fn unix_us(events: &Value, time_ns: u64) -> i64 {
    let c = &events["clock"];
    let unix = c["unix_ns"].as_i64().unwrap() + time_ns as i64 - c["monotonic_ns"].as_i64().unwrap();
    unix / 1000
}

/// (device, category) → bytes live, from the allocation list.
fn live_sums(live: &[Value]) -> BTreeMap<(u64, String), u64> {
    let mut sums = BTreeMap::new();
    for a in live {
        let k = (
            a["device"].as_u64().unwrap(),
            a["category"].as_str().unwrap().to_string(),
        );
        *sums.entry(k).or_insert(0) += a["size"].as_u64().unwrap();
    }
    sums
}

#[test]
fn the_perfetto_trace_matches_the_ledger_event_by_event() {
    let (d, h, pid) = drained("training", "n150", 30);
    let (events, live) = ledger(&d, pid);
    let recorded = events["events"].as_array().unwrap();
    assert!(recorded.len() > 50, "a real workload's events: {}", recorded.len());
    assert!(recorded.len() < 200_000, "the recorder kept them all");

    let trace: Value = serde_json::from_slice(&export(&d, pid, "perfetto", &[])).unwrap();
    let all = trace["traceEvents"].as_array().unwrap();
    assert!(all.iter().all(|e| e["pid"] == pid), "one process");
    assert!(
        all.iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"].as_str().unwrap().contains(&pid.to_string()))
    );

    // One instant per recorded event, in order, with the same fields and time. The export and
    // the events answer each read the two clocks once, at moments a loaded machine may put
    // apart, so their Unix times may differ by one constant (and a microsecond of rounding).
    let instants: Vec<&Value> = all.iter().filter(|e| e["ph"] == "i").collect();
    assert_eq!(instants.len(), recorded.len());
    let skew = instants[0]["ts"].as_i64().unwrap() - unix_us(&events, recorded[0]["time_ns"].as_u64().unwrap());
    assert!(skew.abs() < 100_000, "the two answers' clocks are {skew} µs apart");
    for (i, e) in instants.iter().zip(recorded) {
        assert_eq!(i["name"], e["kind"]);
        for f in ["address", "size", "tag", "device", "category", "matched"] {
            assert_eq!(i["args"][f], e[f], "{f} of {i} vs {e}");
        }
        let want = unix_us(&events, e["time_ns"].as_u64().unwrap()) + skew;
        assert!((i["ts"].as_i64().unwrap() - want).abs() <= 1, "{i} vs {want}");
    }

    // Counters: from the value before the first event, each event moves its track by its
    // size, and each track ends at what is live now (the ledger's sum and ps's bytes).
    let counters: Vec<&Value> = all.iter().filter(|e| e["ph"] == "C").collect();
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    let mut at_events = counters
        .iter()
        .filter(|c| instants.iter().any(|i| i["ts"] == c["ts"]))
        .peekable();
    assert!(at_events.peek().is_some());
    for (e, instant) in recorded.iter().zip(&instants) {
        let track = format!("chip {} {}", e["device"], e["category"].as_str().unwrap());
        let v = running.entry(track.clone()).or_insert_with(|| {
            // The sample one microsecond before this track's first event, on the export's own
            // clock (the instant's time; the events answer read the clocks at another moment,
            // so its times may differ by some microseconds). It comes after any history sample
            // at that time.
            let first_ts = instant["ts"].as_i64().unwrap();
            counters
                .iter()
                .rev()
                .find(|c| c["name"] == track.as_str() && c["ts"].as_i64().unwrap() == first_ts - 1)
                .map(|c| c["args"]["bytes"].as_u64().unwrap())
                .unwrap_or_else(|| panic!("{track}: no sample just before its first event at {first_ts}"))
        });
        let size = e["size"].as_u64().unwrap();
        match e["kind"].as_str().unwrap() {
            "alloc" => *v += size,
            _ if e["matched"] == true => *v -= size,
            _ => {}
        }
    }
    let now_ts = all.iter().filter_map(|e| e["ts"].as_i64()).max().unwrap();
    for ((device, category), bytes) in live_sums(&live) {
        let track = format!("chip {device} {category}");
        let last = counters
            .iter()
            .filter(|c| c["name"] == track.as_str())
            .max_by_key(|c| c["ts"].as_i64().unwrap())
            .unwrap();
        assert_eq!(last["args"]["bytes"], bytes, "{track} now");
        assert_eq!(last["ts"], now_ts);
        if let Some(v) = running.get(&track) {
            assert_eq!(
                *v, bytes,
                "{track}: the counter walk over the events ends at the live sum"
            );
        }
        let ps = d.process(pid).unwrap();
        let chip = &ps["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == device)
            .unwrap()["categories"];
        let cat = chip
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == category.as_str())
            .unwrap();
        assert_eq!(cat["bytes"], bytes, "{track}: the export's live bytes are ps's");
    }

    // Slices: one per lifetime; every live allocation's ends now.
    let begins: Vec<&Value> = all.iter().filter(|e| e["ph"] == "b").collect();
    assert_eq!(begins.len(), all.iter().filter(|e| e["ph"] == "e").count());
    for a in &live {
        let open = begins
            .iter()
            .filter(|b| b["args"]["address"] == a["address"] && b["cat"] == a["category"] && b["tid"] == a["device"])
            .count();
        assert!(open >= 1, "a slice for {a}");
    }

    // --since after the last event keeps no events, only the value now (also once the
    // process has history, which ends before such a window starts).
    wait_until(|| {
        d.get(&format!("/api/v1/history?device=0&category=DRAM&pid={pid}"))["points"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    let later = (ttmem_model_now_s() + 5).to_string();
    let quiet: Value = serde_json::from_slice(&export(&d, pid, "perfetto", &["--since", &later])).unwrap();
    let quiet = quiet["traceEvents"].as_array().unwrap();
    assert_eq!(quiet.iter().filter(|e| e["ph"] == "i").count(), 0);
    assert_eq!(quiet.iter().filter(|e| e["ph"] == "C").count(), live_sums(&live).len());
    let whole: Value = serde_json::from_slice(&export(&d, pid, "perfetto", &["--since", "1h"])).unwrap();
    assert_eq!(
        whole["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "i")
            .count(),
        recorded.len()
    );
    drop(h);
}

/// A daemon whose flight recorder keeps every event, holding a workload it has drained (its
/// totals are the workload allocator's own).
fn drained(profile: &str, shape: &str, steps: u32) -> (Daemon, Held, u64) {
    let d = Daemon::start_with("flight_recorder_events = 200000\n");
    let h = hold(&d.regions, profile, shape, 0, steps);
    let pid = pid(&h);
    wait_until(|| {
        d.process(pid)
            .is_some_and(|p| assert_matches_model_quiet(&p, &h.summary))
    });
    (d, h, pid)
}

fn ttmem_model_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_matches_model_quiet(p: &Value, summary: &Value) -> bool {
    std::panic::catch_unwind(|| assert_matches_model(p, summary)).is_ok()
}

/// Python's own pickle reads the file with every class refused (so it holds only plain
/// dicts, lists, ints, strings and bools) and prints it as JSON.
fn unpickle(bytes: &[u8], dir: &std::path::Path) -> Value {
    let path = dir.join("snapshot.pickle");
    std::fs::write(&path, bytes).unwrap();
    let script = r#"
import json, pickle, sys
class Plain(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"a class in the snapshot: {module}.{name}")
with open(sys.argv[1], "rb") as f:
    data = Plain(f).load()
def check(v):
    assert isinstance(v, (dict, list, int, str, bool)), type(v)
    if isinstance(v, dict):
        assert all(isinstance(k, str) for k in v), v.keys()
        [check(x) for x in v.values()]
    if isinstance(v, list):
        [check(x) for x in v]
check(data)
json.dump(data, sys.stdout)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_memory_viz_snapshot_holds_the_live_buffers_and_the_events() {
    let (d, h, pid) = drained("llm-inference", "n300", 20);
    let (events, live) = ledger(&d, pid);
    let recorded = events["events"].as_array().unwrap();
    let snap = unpickle(&export(&d, pid, "memory-viz", &[]), d._dir.path());

    // Segments tile each chip's bank: blocks are contiguous and sum to total_size; the active
    // ones are exactly the live allocations, with their tags as frame names.
    let mut active = Vec::new();
    for seg in snap["segments"].as_array().unwrap() {
        let mut at = seg["address"].as_u64().unwrap();
        let mut allocated = 0;
        for b in seg["blocks"].as_array().unwrap() {
            assert_eq!(
                b["address"].as_u64().unwrap(),
                at,
                "contiguous blocks in {}",
                seg["category"]
            );
            at += b["size"].as_u64().unwrap();
            if b["state"] == "active_allocated" {
                allocated += b["size"].as_u64().unwrap();
                active.push((
                    seg["device"].as_u64().unwrap(),
                    seg["category"].as_str().unwrap().to_string(),
                    b["address"].as_u64().unwrap(),
                    b["size"].as_u64().unwrap(),
                    b["frames"][0]["name"].as_str().unwrap().to_string(),
                ));
            } else {
                assert_eq!(b["state"], "inactive");
            }
        }
        assert_eq!(
            at - seg["address"].as_u64().unwrap(),
            seg["total_size"].as_u64().unwrap()
        );
        assert_eq!(seg["allocated_size"].as_u64().unwrap(), allocated);
        for f in [
            "active_size",
            "requested_size",
            "stream",
            "segment_type",
            "is_expandable",
            "frames",
        ] {
            assert!(!seg[f].is_null(), "segment field {f}");
        }
    }
    // Addresses are flat: base + (address - base) * banks, the bank range and banks as the
    // daemon's map and fragmentation answers give them.
    let flat = |device: u64, category: &str, address: u64| {
        let map = d.get(&format!("/api/v1/devices/{device}/map?category={category}"));
        let frag = d.get(&format!("/api/v1/devices/{device}/fragmentation"));
        let banks = frag["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == category)
            .unwrap()["banks"]
            .as_u64()
            .unwrap()
            .max(1);
        let base = map["addr_base"].as_u64().unwrap();
        base + (address - base) * banks
    };
    let mut want: Vec<_> = live
        .iter()
        .map(|a| {
            let category = a["category"].as_str().unwrap().to_string();
            let tag = a["tag"]
                .as_str()
                .map_or(format!("{category} (untagged)"), str::to_string);
            let device = a["device"].as_u64().unwrap();
            let address = flat(device, &category, a["address"].as_u64().unwrap());
            (device, category, address, a["size"].as_u64().unwrap(), tag)
        })
        .collect();
    want.sort();
    active.sort();
    assert_eq!(active, want);
    assert!(
        snap["segments"].as_array().unwrap().iter().any(|s| s["device"] == 1),
        "both chips of the n300"
    );

    // device_traces: per chip, alloc for an allocation and free_requested + free_completed for
    // a free, in the recorder's order.
    let chips = snap["device_traces"].as_array().unwrap();
    for (chip, entries) in chips.iter().enumerate() {
        let mut expected = Vec::new();
        for e in recorded.iter().filter(|e| e["device"] == chip as u64) {
            let actions: &[&str] = if e["kind"] == "alloc" {
                &["alloc"]
            } else {
                &["free_requested", "free_completed"]
            };
            for a in actions {
                let address = flat(
                    chip as u64,
                    e["category"].as_str().unwrap(),
                    e["address"].as_u64().unwrap(),
                );
                expected.push((
                    a.to_string(),
                    address,
                    e["size"].as_u64().unwrap(),
                    e["category"].clone(),
                ));
            }
        }
        let got: Vec<_> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["action"].as_str().unwrap().to_string(),
                    t["addr"].as_u64().unwrap(),
                    t["size"].as_u64().unwrap(),
                    t["category"].clone(),
                )
            })
            .collect();
        assert_eq!(got, expected, "chip {chip}");
        assert!(
            entries
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["time_us"].as_u64().unwrap() > 1_700_000_000_000_000)
        );
    }
    assert!(chips.iter().map(|c| c.as_array().unwrap().len()).sum::<usize>() >= recorded.len());
    drop(h);
}

#[test]
fn export_errors_are_plain() {
    let d = Daemon::start();
    let run = |args: &[&str]| {
        let mut c = ttmem(&d.regions);
        c.arg("export").arg("--api-socket").arg(&d.socket).args(args);
        c.output().unwrap()
    };
    let missing = run(&["--pid", "999999999", "-o", "/dev/null"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no process with pid 999999999"));
    let bad_since = run(&["--pid", "1", "--since", "yesterday"]);
    assert_eq!(bad_since.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_since.stderr).contains("--since"));
    let bad_format = run(&["--pid", "1", "--format", "svg"]);
    assert_eq!(bad_format.status.code(), Some(2));
    let no_daemon = ttmem(&d.regions)
        .args(["export", "--pid", "1", "--api-socket", "/nonexistent/ttmem.sock"])
        .output()
        .unwrap();
    assert_eq!(no_daemon.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_daemon.stderr).contains("no ttmem daemon"),
        "{}",
        String::from_utf8_lossy(&no_daemon.stderr)
    );
    // A file that cannot be written is an error, and nothing half-written is left.
    let h = hold(&d.regions, "bursty", "n150", 0, 5);
    let p = pid(&h).to_string();
    wait_until(|| d.process(pid(&h)).is_some());
    let unwritable = run(&["--pid", &p, "-o", "/nonexistent-dir/x.json"]);
    assert_eq!(unwritable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("/nonexistent-dir/x.json"));
    let stdout = run(&["--pid", &p, "-o", "-"]);
    assert!(stdout.status.success());
    let v: Value = serde_json::from_slice(&stdout.stdout).unwrap();
    assert!(v["traceEvents"].as_array().is_some());
}
