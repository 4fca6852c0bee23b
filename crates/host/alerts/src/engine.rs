//! The states of alerts: each evaluation asks the collector's [`Facts`] what every rule
//! watches, and moves each alert between pending, firing and resolved.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ttmem_history::forecast::{MIN_SAMPLES, Trend};
use ttmem_model::api::{Alert, AlertState, alert_fingerprint};
use ttmem_model::short_bytes;

use crate::rules::{Condition, Level, Rule};

/// A chip's buffer type, as the collector sees it now.
#[derive(Clone, Debug, PartialEq)]
pub struct ChipCategory {
    /// The `ps` device id.
    pub device: u32,
    /// The chip's stable hardware id.
    pub hw_id: String,
    /// The buffer type.
    pub category: String,
    /// Bytes used.
    pub used: u64,
    /// Capacity (0: none known; such a category is not watched).
    pub capacity: u64,
}

/// Free space of one bank of a chip's buffer type, from the per-buffer detail.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct FreeSpace {
    /// Free bytes of one bank.
    pub free_per_bank: u64,
    /// The largest free block of one bank.
    pub largest_free_per_bank: u64,
}

/// A process, as the collector sees it now.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessFacts {
    /// Process id.
    pub pid: u32,
    /// Start time (with the pid, the identity).
    pub start_time: u64,
    /// Its name.
    pub comm: String,
    /// Its user.
    pub user: String,
    /// Whether it runs.
    pub running: bool,
    /// Events it lost, in all.
    pub events_lost: u64,
    /// What it left allocated at exit (0 while it runs).
    pub left_behind_bytes: u64,
    /// The chips and buffer types it holds bytes on now: (device, category).
    pub holdings: Vec<(u32, String)>,
}

/// What rules are evaluated over. The collector answers from its device table, ledger and
/// history; tests answer from tables.
pub trait Facts {
    /// Every chip's buffer types.
    fn chips(&self) -> Vec<ChipCategory>;
    /// Every process the collector knows (running and exited).
    fn processes(&self) -> Vec<ProcessFacts>;
    /// A line through the chip's buffer type's use over the last `window_s` seconds.
    fn chip_trend(&self, device: u32, category: &str, window_s: u64) -> Option<Trend>;
    /// A line through a process's bytes on a chip's buffer type over the last `window_s`
    /// seconds.
    fn process_trend(&self, pid: u32, start_time: u64, device: u32, category: &str, window_s: u64) -> Option<Trend>;
    /// Free space of the chip's buffer type (None: no per-buffer detail to tell).
    fn free_space(&self, device: u32, category: &str) -> Option<FreeSpace>;
}

/// Resolved alerts kept in memory for the API (the database keeps every one).
pub const MAX_RESOLVED: usize = 256;
/// Transitions kept for readers of the stream that fell behind.
const MAX_LOG: usize = 1024;

/// One rule's verdict on one subject.
struct Verdict {
    labels: BTreeMap<String, String>,
    holds: bool,
    value: Option<f64>,
    summary: String,
}

/// Every rule's alerts.
pub struct Engine {
    rules: Vec<Rule>,
    /// Pending and firing, by fingerprint.
    active: BTreeMap<String, Alert>,
    resolved: VecDeque<Alert>,
    changes: Vec<Alert>,
    /// Transitions numbered from 1, the last [`MAX_LOG`] kept.
    log: VecDeque<(u64, Alert)>,
    seq: u64,
    /// Per process: events lost at the last look, and when the count last rose (ns).
    losses: HashMap<(u32, u64), (u64, u64)>,
}

impl Engine {
    /// An engine for these rules, with no alert yet.
    pub fn new(rules: Vec<Rule>) -> Engine {
        Engine {
            rules,
            active: BTreeMap::new(),
            resolved: VecDeque::new(),
            changes: Vec::new(),
            log: VecDeque::new(),
            seq: 0,
            losses: HashMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Takes back alerts that were pending or firing when the daemon last stopped (from the
    /// database), so that their start times survive a restart; the next evaluation resolves
    /// those whose condition no longer holds. Alerts of rules no longer configured are
    /// resolved at once.
    pub fn restore(&mut self, alerts: Vec<Alert>, now_unix_ns: u64) {
        for a in alerts.into_iter().filter(|a| a.state != AlertState::Resolved) {
            if self.rules.iter().any(|r| r.name == a.rule) {
                self.active.insert(a.fingerprint(), a);
            } else {
                self.end(a, now_unix_ns);
            }
        }
    }

    /// Pending and firing alerts, firing first, then by when they began.
    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.active.values().cloned().collect();
        v.sort_by_key(|a| (a.state != AlertState::Firing, a.active_since_unix_ns));
        v
    }

    /// The alerts firing now, by when they began (what Alertmanager is sent).
    pub fn firing(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self
            .active
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .cloned()
            .collect();
        v.sort_by_key(|a| a.active_since_unix_ns);
        v
    }

    /// Alerts resolved lately, newest first.
    pub fn resolved(&self) -> Vec<Alert> {
        self.resolved.iter().rev().cloned().collect()
    }

    /// Transitions since the last call (for the database and the notifiers).
    pub fn take_changes(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.changes)
    }

    /// The number of the latest transition (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Transitions after number `after`, with the latest number; those older than the log
    /// are gone (a reader that fell that far behind reads the active list instead).
    pub fn changes_since(&self, after: u64) -> (u64, Vec<Alert>) {
        let v = self
            .log
            .iter()
            .filter(|(n, _)| *n > after)
            .map(|(_, a)| a.clone())
            .collect();
        (self.seq, v)
    }

    fn record(&mut self, a: Alert) {
        self.seq += 1;
        self.log.push_back((self.seq, a.clone()));
        if self.log.len() > MAX_LOG {
            self.log.pop_front();
        }
        self.changes.push(a);
    }

    fn end(&mut self, mut a: Alert, now_unix_ns: u64) {
        a.state = AlertState::Resolved;
        a.resolved_unix_ns = Some(now_unix_ns);
        if a.firing_since_unix_ns.is_some() {
            self.resolved.push_back(a.clone());
            if self.resolved.len() > MAX_RESOLVED {
                self.resolved.pop_front();
            }
        }
        self.record(a);
    }

    /// Evaluates every rule at `now_unix_ns`.
    pub fn evaluate(&mut self, facts: &dyn Facts, now_unix_ns: u64) {
        let chips = facts.chips();
        let processes = facts.processes();
        self.update_losses(&processes, now_unix_ns);
        for i in 0..self.rules.len() {
            let rule = self.rules[i].clone();
            let verdicts = self.verdicts(&rule, facts, &chips, &processes, now_unix_ns);
            let mut seen = std::collections::HashSet::new();
            for v in verdicts {
                let fp = alert_fingerprint(&rule.name, &v.labels);
                seen.insert(fp.clone());
                self.apply(&rule, fp, v, now_unix_ns);
            }
            // Alerts of this rule whose subject is gone (a chip unplugged, a process forgotten).
            let gone: Vec<String> = self
                .active
                .iter()
                .filter(|(fp, a)| a.rule == rule.name && !seen.contains(*fp))
                .map(|(fp, _)| fp.clone())
                .collect();
            for fp in gone {
                if let Some(a) = self.active.remove(&fp) {
                    self.end(a, now_unix_ns);
                }
            }
        }
    }

    fn apply(&mut self, rule: &Rule, fp: String, v: Verdict, now: u64) {
        let for_ns = rule.for_s.saturating_mul(1_000_000_000);
        match self.active.get_mut(&fp) {
            Some(a) if v.holds => {
                a.value = v.value;
                a.summary = v.summary;
                if a.state == AlertState::Pending && now.saturating_sub(a.active_since_unix_ns) >= for_ns {
                    a.state = AlertState::Firing;
                    a.firing_since_unix_ns = Some(now);
                    let a = a.clone();
                    self.record(a);
                }
            }
            Some(_) => {
                if let Some(mut a) = self.active.remove(&fp) {
                    a.value = v.value;
                    a.summary = v.summary;
                    self.end(a, now);
                }
            }
            None if v.holds => {
                let firing = for_ns == 0;
                let a = Alert {
                    rule: rule.name.clone(),
                    kind: rule.condition.kind().into(),
                    severity: rule.severity.as_str().into(),
                    state: if firing {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    },
                    labels: v.labels,
                    summary: v.summary,
                    value: v.value,
                    active_since_unix_ns: now,
                    firing_since_unix_ns: firing.then_some(now),
                    resolved_unix_ns: None,
                };
                self.active.insert(fp, a.clone());
                self.record(a);
            }
            None => {}
        }
    }

    fn update_losses(&mut self, processes: &[ProcessFacts], now: u64) {
        let mut seen = std::collections::HashSet::new();
        for p in processes {
            let key = (p.pid, p.start_time);
            seen.insert(key);
            let e = self.losses.entry(key).or_insert((0, 0));
            if p.events_lost > e.0 {
                *e = (p.events_lost, now);
            }
        }
        self.losses.retain(|k, _| seen.contains(k));
    }

    fn verdicts(
        &self,
        rule: &Rule,
        facts: &dyn Facts,
        chips: &[ChipCategory],
        processes: &[ProcessFacts],
        now: u64,
    ) -> Vec<Verdict> {
        let watched = |c: &ChipCategory, category: &Option<String>| {
            c.capacity > 0
                && category
                    .as_ref()
                    .is_none_or(|want| want.eq_ignore_ascii_case(&c.category))
        };
        let chip_labels = |c: &ChipCategory| {
            BTreeMap::from([
                ("device".to_string(), c.device.to_string()),
                ("hw_id".to_string(), c.hw_id.clone()),
                ("category".to_string(), c.category.clone()),
            ])
        };
        let process_labels = |p: &ProcessFacts| {
            BTreeMap::from([
                ("pid".to_string(), p.pid.to_string()),
                ("start_time".to_string(), p.start_time.to_string()),
                ("comm".to_string(), p.comm.clone()),
                ("user".to_string(), p.user.clone()),
            ])
        };
        let is_active =
            |labels: &BTreeMap<String, String>| self.active.contains_key(&alert_fingerprint(&rule.name, labels));
        let mut out = Vec::new();
        match &rule.condition {
            Condition::Threshold {
                category,
                above,
                clear_below,
            } => {
                let bytes = matches!(above, Level::Bytes(_));
                // A share needs a capacity; bytes apply to every chip, even one no source gives
                // a capacity for.
                let applies = |c: &ChipCategory| {
                    category
                        .as_ref()
                        .is_none_or(|want| want.eq_ignore_ascii_case(&c.category))
                        && (bytes || c.capacity > 0)
                };
                for c in chips.iter().filter(|c| applies(c)) {
                    let pct = c.used as f64 * 100.0 / c.capacity.max(1) as f64;
                    let labels = chip_labels(c);
                    let line = if is_active(&labels) { *clear_below } else { *above };
                    let holds = match line {
                        Level::Percent(p) => pct >= p,
                        Level::Bytes(b) => c.used >= b,
                    };
                    let used = if c.capacity > 0 {
                        format!(
                            "{pct:.1}% used ({} of {})",
                            short_bytes(c.used),
                            short_bytes(c.capacity)
                        )
                    } else {
                        format!("{} used", short_bytes(c.used))
                    };
                    out.push(Verdict {
                        holds,
                        value: Some(if bytes { c.used as f64 } else { pct }),
                        summary: format!(
                            "{} of chip {} ({}) is {used}; the rule fires at {above}",
                            c.category, c.device, c.hw_id
                        ),
                        labels,
                    });
                }
            }
            Condition::Forecast {
                category,
                within_s,
                window_s,
                min_r2,
            } => {
                for c in chips.iter().filter(|c| watched(c, category)) {
                    let trend = facts.chip_trend(c.device, &c.category, *window_s);
                    let eta = trend.and_then(|t| time_to_full(&t, c.used, c.capacity, *min_r2));
                    let labels = chip_labels(c);
                    out.push(Verdict {
                        holds: eta.is_some_and(|s| s < *within_s as f64),
                        value: eta,
                        summary: match (eta, trend) {
                            (Some(s), Some(t)) => format!(
                                "{} of chip {} ({}) will be full in {} at {}/s (R² {:.2} over {window_s} s); {} of {} used",
                                c.category,
                                c.device,
                                c.hw_id,
                                duration(s),
                                short_bytes(t.slope_per_s.max(0.0) as u64),
                                t.r2,
                                short_bytes(c.used),
                                short_bytes(c.capacity)
                            ),
                            _ => format!("{} of chip {} ({}) has no forecast", c.category, c.device, c.hw_id),
                        },
                        labels,
                    });
                }
            }
            Condition::Fragmentation {
                category,
                largest_free_below_percent,
                free_above_percent,
            } => {
                for c in chips.iter().filter(|c| watched(c, category)) {
                    let free_pct = c.capacity.saturating_sub(c.used) as f64 * 100.0 / c.capacity as f64;
                    // The detail is looked at only where the counters say enough is free.
                    let space = (free_pct > *free_above_percent)
                        .then(|| facts.free_space(c.device, &c.category))
                        .flatten()
                        .filter(|s| s.free_per_bank > 0);
                    let largest_pct = space.map(|s| s.largest_free_per_bank as f64 * 100.0 / s.free_per_bank as f64);
                    out.push(Verdict {
                        holds: largest_pct.is_some_and(|p| p < *largest_free_below_percent),
                        value: largest_pct,
                        summary: match space {
                            Some(s) => format!(
                                "{} of chip {} ({}) is fragmented: its largest free block is {} of {} free per bank ({:.1}%), with {free_pct:.0}% of the chip free",
                                c.category,
                                c.device,
                                c.hw_id,
                                short_bytes(s.largest_free_per_bank),
                                short_bytes(s.free_per_bank),
                                largest_pct.unwrap_or(100.0)
                            ),
                            None => format!("{} of chip {} ({}) is not fragmented", c.category, c.device, c.hw_id),
                        },
                        labels: chip_labels(c),
                    });
                }
            }
            Condition::LeftBehind { min_bytes } => {
                for p in processes.iter().filter(|p| !p.running) {
                    out.push(Verdict {
                        holds: p.left_behind_bytes >= *min_bytes,
                        value: Some(p.left_behind_bytes as f64),
                        summary: format!(
                            "{} (pid {}, user {}) exited leaving {} allocated",
                            p.comm,
                            p.pid,
                            p.user,
                            short_bytes(p.left_behind_bytes)
                        ),
                        labels: process_labels(p),
                    });
                }
            }
            Condition::LeakSuspect {
                window_s,
                min_growth_bytes,
                min_r2,
            } => {
                for p in processes.iter().filter(|p| p.running) {
                    for (device, category) in &p.holdings {
                        let trend = facts.process_trend(p.pid, p.start_time, *device, category, *window_s);
                        // Most of the window must be history: a young process is not judged on
                        // a line drawn through its first seconds.
                        let growth = trend
                            .filter(|t| t.samples as u64 >= (*window_s / 2).max(MIN_SAMPLES as u64) && t.r2 >= *min_r2)
                            .map(|t| t.slope_per_s * t.samples.saturating_sub(1) as f64)
                            .unwrap_or(0.0);
                        let mut labels = process_labels(p);
                        labels.insert("device".into(), device.to_string());
                        labels.insert("category".into(), category.clone());
                        out.push(Verdict {
                            holds: growth >= *min_growth_bytes as f64,
                            value: Some(growth),
                            summary: format!(
                                "{} (pid {}, user {}) grew by {} on chip {device} {category} over {window_s} s, steadily",
                                p.comm,
                                p.pid,
                                p.user,
                                short_bytes(growth.max(0.0) as u64)
                            ),
                            labels,
                        });
                    }
                }
            }
            Condition::EventLoss { quiet_s } => {
                for p in processes {
                    let Some(&(lost, since)) = self.losses.get(&(p.pid, p.start_time)) else {
                        continue;
                    };
                    if lost == 0 {
                        continue;
                    }
                    out.push(Verdict {
                        holds: now.saturating_sub(since) < quiet_s.saturating_mul(1_000_000_000),
                        value: Some(lost as f64),
                        summary: format!(
                            "{} (pid {}, user {}) lost {lost} events: its per-buffer detail is incomplete (a larger TTMEM_RING_EVENTS helps)",
                            p.comm, p.pid, p.user
                        ),
                        labels: process_labels(p),
                    });
                }
            }
        }
        out
    }
}

/// Seconds until `used` reaches `capacity` on `trend`, for a growing series fitted at least
/// `min_r2` well over enough samples; 0 when full.
fn time_to_full(trend: &Trend, used: u64, capacity: u64, min_r2: f64) -> Option<f64> {
    if used >= capacity {
        return Some(0.0);
    }
    (trend.slope_per_s > 0.0 && trend.r2 >= min_r2 && trend.samples >= MIN_SAMPLES)
        .then(|| (capacity - used) as f64 / trend.slope_per_s)
}

/// A duration in words a person reads at a glance (`45 s`, `12 min`, `3.5 h`).
fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}
