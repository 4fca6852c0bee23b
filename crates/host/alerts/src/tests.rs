//! The engine over facts given as tables, stepped second by second.

use std::collections::HashMap;

use ttmem_history::forecast::{Trend, trend};
use ttmem_model::api::AlertState;

use super::*;

const S: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

#[derive(Default)]
struct Table {
    chips: Vec<ChipCategory>,
    processes: Vec<ProcessFacts>,
    /// (device, category) → samples (second, bytes).
    chip_history: HashMap<(u32, String), Vec<(u64, u64)>>,
    process_history: HashMap<(u32, u32, String), Vec<(u64, u64)>>,
    free: HashMap<(u32, String), FreeSpace>,
    now_s: u64,
}

impl Facts for Table {
    fn chips(&self) -> Vec<ChipCategory> {
        self.chips.clone()
    }
    fn processes(&self) -> Vec<ProcessFacts> {
        self.processes.clone()
    }
    fn chip_trend(&self, device: u32, category: &str, window_s: u64) -> Option<Trend> {
        let points = self.chip_history.get(&(device, category.to_string()))?;
        trend(points, self.now_s.saturating_sub(window_s), self.now_s, 1)
    }
    fn process_trend(&self, pid: u32, _start: u64, device: u32, category: &str, window_s: u64) -> Option<Trend> {
        let points = self.process_history.get(&(pid, device, category.to_string()))?;
        trend(points, self.now_s.saturating_sub(window_s), self.now_s, 1)
    }
    fn free_space(&self, device: u32, category: &str) -> Option<FreeSpace> {
        self.free.get(&(device, category.to_string())).copied()
    }
}

fn chip(used: u64) -> ChipCategory {
    ChipCategory {
        device: 0,
        hw_id: "0xab".into(),
        category: "DRAM".into(),
        used,
        capacity: 10 * GIB,
    }
}

fn process(running: bool) -> ProcessFacts {
    ProcessFacts {
        pid: 42,
        start_time: 7,
        comm: "python3".into(),
        user: "ada".into(),
        running,
        events_lost: 0,
        left_behind_bytes: 0,
        holdings: vec![(0, "DRAM".into())],
    }
}

fn rule(name: &str, for_s: u64, condition: Condition) -> Rule {
    Rule {
        name: name.into(),
        severity: Severity::Warning,
        for_s,
        condition,
    }
}

fn threshold() -> Rule {
    rule(
        "hot",
        3,
        Condition::Threshold {
            category: Some("DRAM".into()),
            above: Level::Percent(90.0),
            clear_below: Level::Percent(80.0),
        },
    )
}

#[test]
fn a_threshold_is_pending_then_fires_then_resolves_with_hysteresis() {
    let mut e = Engine::new(vec![threshold()]);
    let mut t = Table {
        chips: vec![chip(9 * GIB + GIB / 2)], // 95 %
        ..Table::default()
    };
    e.evaluate(&t, 100 * S);
    let a = &e.active()[0];
    assert_eq!(a.state, AlertState::Pending);
    assert_eq!(a.labels["category"], "DRAM");
    assert!(a.summary.contains("95.0% used"), "{}", a.summary);
    e.evaluate(&t, 102 * S);
    assert_eq!(e.active()[0].state, AlertState::Pending, "held 2 s of 3");
    e.evaluate(&t, 103 * S);
    let a = e.active()[0].clone();
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(
        (a.active_since_unix_ns, a.firing_since_unix_ns),
        (100 * S, Some(103 * S))
    );
    // Between the lines: still firing (85 % is above the 80 % that clears it).
    t.chips = vec![chip(8 * GIB + GIB / 2)];
    e.evaluate(&t, 104 * S);
    assert_eq!(e.active()[0].state, AlertState::Firing);
    // Below the clearing line: resolved.
    t.chips = vec![chip(7 * GIB)];
    e.evaluate(&t, 105 * S);
    assert!(e.active().is_empty());
    let r = &e.resolved()[0];
    assert_eq!(r.state, AlertState::Resolved);
    assert_eq!(r.resolved_unix_ns, Some(105 * S));
    let states: Vec<AlertState> = e.take_changes().iter().map(|a| a.state).collect();
    assert_eq!(states, [AlertState::Pending, AlertState::Firing, AlertState::Resolved]);
    assert!(e.take_changes().is_empty());
    // And 85 % from below does not fire again: the line to cross is 90 %.
    t.chips = vec![chip(8 * GIB + GIB / 2)];
    e.evaluate(&t, 106 * S);
    assert!(e.active().is_empty());
}

#[test]
fn a_threshold_in_bytes_watches_chips_without_a_capacity() {
    let r = rule(
        "big",
        0,
        Condition::Threshold {
            category: None,
            above: Level::Bytes(GIB),
            clear_below: Level::Bytes(GIB / 2),
        },
    );
    let mut e = Engine::new(vec![r, threshold()]);
    let mut c = chip(2 * GIB);
    c.capacity = 0; // as TT-Metal's counter files describe a chip
    let t = Table {
        chips: vec![c],
        ..Table::default()
    };
    e.evaluate(&t, S);
    let active = e.active();
    assert_eq!(active.len(), 1, "the percentage rule needs a capacity");
    assert_eq!(active[0].value, Some((2 * GIB) as f64));
    assert!(
        active[0].summary.contains("is 2.0G used; the rule fires at 1.0G"),
        "{}",
        active[0].summary
    );
}

#[test]
fn a_pending_alert_that_clears_never_fires_and_is_not_listed_as_resolved() {
    let mut e = Engine::new(vec![threshold()]);
    let mut t = Table {
        chips: vec![chip(10 * GIB)],
        ..Table::default()
    };
    e.evaluate(&t, 10 * S);
    t.chips = vec![chip(GIB)];
    e.evaluate(&t, 11 * S);
    assert!(e.active().is_empty());
    assert!(e.resolved().is_empty());
    let changes = e.take_changes();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].firing_since_unix_ns, None);
}

#[test]
fn a_steady_climb_forecasts_and_bursts_do_not() {
    let forecast = rule(
        "soon",
        0,
        Condition::Forecast {
            category: None,
            within_s: 600,
            window_s: 120,
            min_r2: 0.8,
        },
    );
    let mut e = Engine::new(vec![forecast]);
    // 10 MiB/s from 5 GiB: 512 s to full.
    let climb: Vec<(u64, u64)> = (0..=120)
        .map(|s| (1000 + s, 5 * GIB - 1200 * (10 << 20) / 10 + s * (10 << 20)))
        .collect();
    let now_used = climb.last().unwrap().1;
    let mut t = Table {
        chips: vec![chip(now_used)],
        now_s: 1120,
        ..Table::default()
    };
    t.chip_history.insert((0, "DRAM".into()), climb);
    e.evaluate(&t, 1120 * S);
    let a = &e.active()[0];
    assert_eq!(a.state, AlertState::Firing);
    let eta = (10 * GIB - now_used) as f64 / (10 << 20) as f64;
    assert!((a.value.unwrap() - eta).abs() < 1.0, "{:?} vs {eta}", a.value);
    assert!(a.summary.contains("will be full in"), "{}", a.summary);
    // Bursts between 1 and 9 GiB: a poor fit, no alert.
    let mut e = Engine::new(e.rules().to_vec());
    let bursty: Vec<(u64, u64)> = (0..=120)
        .map(|s| (1000 + s, if s % 10 < 3 { 9 * GIB } else { GIB }))
        .collect();
    t.chip_history.insert((0, "DRAM".into()), bursty);
    t.chips = vec![chip(GIB)];
    e.evaluate(&t, 1120 * S);
    assert!(e.active().is_empty());
}

#[test]
fn fragmentation_fires_only_when_much_is_free_in_small_blocks() {
    let frag = rule(
        "frag",
        0,
        Condition::Fragmentation {
            category: None,
            largest_free_below_percent: 10.0,
            free_above_percent: 25.0,
        },
    );
    let mut e = Engine::new(vec![frag]);
    let mut t = Table {
        chips: vec![chip(5 * GIB)],
        ..Table::default()
    };
    t.free.insert(
        (0, "DRAM".into()),
        FreeSpace {
            free_per_bank: 400 << 20,
            largest_free_per_bank: 20 << 20,
        },
    );
    e.evaluate(&t, S);
    assert_eq!(e.active().len(), 1);
    assert!((e.active()[0].value.unwrap() - 5.0).abs() < 1e-9);
    // Little free: fragmentation does not matter then (the threshold rule speaks instead).
    t.chips = vec![chip(9 * GIB)];
    e.evaluate(&t, 2 * S);
    assert!(e.active().is_empty());
}

#[test]
fn process_rules_left_behind_leak_and_loss() {
    let rules = vec![
        rule("left", 0, Condition::LeftBehind { min_bytes: 1 }),
        rule(
            "leak",
            0,
            Condition::LeakSuspect {
                window_s: 100,
                min_growth_bytes: 64 << 20,
                min_r2: 0.9,
            },
        ),
        rule("loss", 0, Condition::EventLoss { quiet_s: 5 }),
    ];
    let mut e = Engine::new(rules);
    let mut t = Table {
        processes: vec![process(true)],
        now_s: 1100,
        ..Table::default()
    };
    // 1 MiB a second for 100 s: 100 MiB, steadily.
    t.process_history
        .insert((42, 0, "DRAM".into()), (0..=100).map(|s| (1000 + s, s << 20)).collect());
    t.processes[0].events_lost = 10;
    e.evaluate(&t, 1100 * S);
    let rules: Vec<String> = e.active().iter().map(|a| a.rule.clone()).collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules.contains(&"leak".to_string()) && rules.contains(&"loss".to_string()));
    let leak = e.active().into_iter().find(|a| a.rule == "leak").unwrap();
    assert_eq!(leak.labels["pid"], "42");
    assert_eq!(leak.labels["device"], "0");
    // No new loss for 5 s: the loss alert resolves.
    e.evaluate(&t, 1105 * S);
    assert!(e.active().iter().all(|a| a.rule != "loss"));
    // A young process (20 s of history) is not judged on a 100 s window.
    let mut young = Engine::new(e.rules().to_vec());
    t.process_history.insert(
        (42, 0, "DRAM".into()),
        (80..=100).map(|s| (1000 + s, s << 22)).collect(),
    );
    young.evaluate(&t, 1100 * S);
    assert!(young.active().iter().all(|a| a.rule != "leak"));
    // It exits leaving 3 GiB: left behind fires, the leak resolves (it no longer runs).
    t.processes = vec![ProcessFacts {
        left_behind_bytes: 3 * GIB,
        ..process(false)
    }];
    e.evaluate(&t, 1106 * S);
    let active = e.active();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].rule, "left");
    assert!(active[0].summary.contains("3.0G"), "{}", active[0].summary);
    // Forgotten: resolved.
    t.processes.clear();
    e.evaluate(&t, 1107 * S);
    assert!(e.active().is_empty());
    assert_eq!(e.resolved().len(), 3);
}

#[test]
fn restored_alerts_keep_their_start_and_resolve_when_the_condition_is_gone() {
    let mut e = Engine::new(vec![threshold()]);
    let t = Table {
        chips: vec![chip(10 * GIB)],
        ..Table::default()
    };
    e.evaluate(&t, 10 * S);
    e.evaluate(&t, 20 * S);
    let firing = e.active();
    let mut orphan = firing[0].clone();
    orphan.rule = "removed-from-config".into();
    let mut again = Engine::new(vec![threshold()]);
    again.restore(vec![firing[0].clone(), orphan], 30 * S);
    assert_eq!(again.active().len(), 1);
    assert_eq!(again.resolved()[0].rule, "removed-from-config");
    again.evaluate(&t, 31 * S);
    assert_eq!(
        again.active()[0].active_since_unix_ns,
        10 * S,
        "the start survives a restart"
    );
    again.evaluate(&Table::default(), 32 * S);
    assert!(again.active().is_empty(), "the chip is gone");
}

#[test]
fn the_stream_reads_transitions_after_a_number() {
    let mut e = Engine::new(vec![threshold()]);
    let t = Table {
        chips: vec![chip(10 * GIB)],
        ..Table::default()
    };
    assert_eq!(e.changes_since(0), (0, vec![]));
    e.evaluate(&t, 10 * S);
    e.evaluate(&t, 20 * S);
    let (n, all) = e.changes_since(0);
    assert_eq!((n, all.len()), (2, 2));
    let (_, later) = e.changes_since(1);
    assert_eq!(later[0].state, AlertState::Firing);
    assert_eq!(e.seq(), 2);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the use does, an alert is firing only after holding for its duration, each
        /// transition moves forward (pending → firing → resolved), and a resolved alert fired.
        #[test]
        fn states_only_move_forward(uses in proptest::collection::vec(0u64..=100, 1..200), for_s in 0u64..5) {
            let mut r = threshold();
            r.for_s = for_s;
            let mut e = Engine::new(vec![r]);
            let mut t = Table::default();
            let mut last: Option<AlertState> = None;
            for (i, pct) in uses.iter().enumerate() {
                t.chips = vec![chip(10 * GIB * pct / 100)];
                e.evaluate(&t, (i as u64 + 1) * S);
                for c in e.take_changes() {
                    match (last, c.state) {
                        (None | Some(AlertState::Resolved), s) => prop_assert!(s != AlertState::Resolved),
                        (Some(AlertState::Pending), _) => {}
                        (Some(AlertState::Firing), s) => prop_assert_eq!(s, AlertState::Resolved),
                    }
                    if c.state == AlertState::Firing {
                        let held = c.firing_since_unix_ns.unwrap() - c.active_since_unix_ns;
                        prop_assert!(held >= for_s * S);
                    }
                    last = Some(c.state);
                }
                prop_assert!(e.active().len() <= 1);
            }
        }
    }
}
