//! Multi-resolution history of memory use, per device × category and per process × device ×
//! category.
//!
//! Every series keeps three tiers ([`TIERS`]): 1 s buckets for an hour, 10 s for a day and
//! 1 min for a month (the daemon keeps a day of the last tier in memory and the month in
//! SQLite). A bucket holds the *highest* value sampled in it (for memory, the peak within an
//! interval is what matters), and a bucket is stored only when its value differs from the
//! previous stored one: a series is a step function, and an idle series costs nothing.
//! Pure logic; the caller samples and persists.

#![deny(missing_docs)]

use std::collections::VecDeque;

pub mod forecast;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// One resolution.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tier {
    /// Name used by the API (`1s`, `10s`, `1m`).
    pub name: &'static str,
    /// Bucket width in seconds.
    pub step_s: u64,
    /// How far back this tier reaches, in seconds.
    pub window_s: u64,
    /// How far back it is kept in memory (the rest is in the store).
    pub memory_s: u64,
}

/// The tiers, finest first.
pub const TIERS: [Tier; 3] = [
    Tier {
        name: "1s",
        step_s: 1,
        window_s: 3600,
        memory_s: 3600,
    },
    Tier {
        name: "10s",
        step_s: 10,
        window_s: 86_400,
        memory_s: 86_400,
    },
    Tier {
        name: "1m",
        step_s: 60,
        window_s: 30 * 86_400,
        memory_s: 86_400,
    },
];

/// The tier with this name.
pub fn tier_by_name(name: &str) -> Option<usize> {
    TIERS.iter().position(|t| t.name == name)
}

/// What a series measures. Device and process identities are stable across daemon restarts
/// (hardware ids, pid with start time), so persisted history reattaches to them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The device's stable key, e.g. `tt-sim:0x5157000000000000`.
    pub device: String,
    /// Category name.
    pub category: String,
    /// `(pid, start time)` for a process series; None for the device total.
    pub process: Option<(u32, u64)>,
}

#[derive(Clone, Debug, Default)]
struct TierData {
    /// Completed buckets: (bucket start, highest value), only where the value changed.
    points: VecDeque<(u64, u64)>,
    /// The bucket being filled.
    current: Option<(u64, u64)>,
}

/// A completed bucket not yet written to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Series.
    pub key: SeriesKey,
    /// Tier index.
    pub tier: usize,
    /// Bucket start (seconds since the epoch).
    pub t: u64,
    /// Highest value in the bucket.
    pub value: u64,
}

/// All series.
#[derive(Default)]
pub struct History {
    series: HashMap<SeriesKey, [TierData; 3]>,
    pending: Vec<Pending>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a sample of `value` at `now_s` (seconds since the epoch).
    pub fn record(&mut self, key: &SeriesKey, now_s: u64, value: u64) {
        let tiers = match self.series.get_mut(key) {
            Some(t) => t,
            None => self.series.entry(key.clone()).or_default(),
        };
        for (i, (tier, data)) in TIERS.iter().zip(tiers.iter_mut()).enumerate() {
            let bucket = now_s / tier.step_s * tier.step_s;
            match &mut data.current {
                Some((b, v)) if *b == bucket => *v = (*v).max(value),
                Some((b, _)) if bucket < *b => {} // the clock went back: ignore the sample
                current => {
                    if let Some((b, v)) = current.take()
                        && data.points.back().is_none_or(|&(_, last)| last != v)
                    {
                        data.points.push_back((b, v));
                        self.pending.push(Pending {
                            key: key.clone(),
                            tier: i,
                            t: b,
                            value: v,
                        });
                    }
                    data.current = Some((bucket, value));
                }
            }
        }
    }

    /// Points of one series and tier in `[from_s, to_s]`, as a step function: the first point
    /// carries the value in force at `from_s` (if any), then every change. The bucket being
    /// filled is included.
    pub fn query(&self, key: &SeriesKey, tier: usize, from_s: u64, to_s: u64) -> Vec<(u64, u64)> {
        let Some(data) = self.series.get(key).and_then(|t| t.get(tier)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut before: Option<(u64, u64)> = None;
        let all = data.points.iter().copied().chain(
            data.current
                .filter(|&(_, v)| data.points.back().is_none_or(|&(_, l)| l != v)),
        );
        for (t, v) in all {
            if t < from_s {
                before = Some((from_s, v));
            } else if t <= to_s {
                if let Some(b) = before.take() {
                    out.push(b);
                }
                out.push((t, v));
            }
        }
        if let Some(b) = before {
            out.push(b);
        }
        out
    }

    /// The oldest time a tier of a series holds in memory.
    pub fn oldest(&self, key: &SeriesKey, tier: usize) -> Option<u64> {
        let data = self.series.get(key)?.get(tier)?;
        data.points.front().map(|p| p.0).or(data.current.map(|c| c.0))
    }

    /// Loads persisted points (oldest first) in front of what is in memory, e.g. at start.
    pub fn load(&mut self, key: &SeriesKey, tier: usize, points: &[(u64, u64)]) {
        let data = &mut self.series.entry(key.clone()).or_default()[tier];
        let first = data
            .points
            .front()
            .map(|p| p.0)
            .or(data.current.map(|c| c.0))
            .unwrap_or(u64::MAX);
        for &(t, v) in points.iter().rev().filter(|p| p.0 < first) {
            data.points.push_front((t, v));
        }
    }

    /// Completed buckets since the last call, for the store.
    pub fn take_pending(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.pending)
    }

    /// Drops points that left each tier's memory window (keeping the one in force at the
    /// window's start), and series with nothing left.
    pub fn prune(&mut self, now_s: u64) {
        for tiers in self.series.values_mut() {
            for (tier, data) in TIERS.iter().zip(tiers.iter_mut()) {
                let start = now_s.saturating_sub(tier.memory_s);
                while data.points.len() >= 2 && data.points[1].0 <= start {
                    data.points.pop_front();
                }
            }
        }
    }

    /// Forgets the series of a process (its record expired).
    pub fn remove_process(&mut self, pid: u32, start_time: u64) {
        self.series.retain(|k, _| k.process != Some((pid, start_time)));
    }

    /// Series keys, sorted.
    pub fn keys(&self) -> Vec<SeriesKey> {
        let mut k: Vec<_> = self.series.keys().cloned().collect();
        k.sort();
        k
    }

    /// Points held in memory (for statistics).
    pub fn points(&self) -> usize {
        self.series
            .values()
            .flat_map(|t| t.iter())
            .map(|d| d.points.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dram() -> SeriesKey {
        SeriesKey {
            device: "tt:0x1".into(),
            category: "DRAM".into(),
            process: None,
        }
    }

    #[test]
    fn buckets_keep_the_peak_and_only_changes() {
        let mut h = History::new();
        let k = dram();
        for (t, v) in [(100, 5), (100, 9), (100, 7), (101, 9), (102, 9), (103, 4), (110, 4)] {
            h.record(&k, t, v);
        }
        // 1 s tier: 100→9 (peak), 101 and 102 unchanged (not stored), 103→4, 110 is current and
        // unchanged from 103.
        assert_eq!(h.query(&k, 0, 0, 1000), vec![(100, 9), (103, 4)]);
        // 10 s tier: bucket 100 peaked at 9; bucket 110 is current at 4.
        assert_eq!(h.query(&k, 1, 0, 1000), vec![(100, 9), (110, 4)]);
        let pending = h.take_pending();
        assert_eq!(
            pending
                .iter()
                .filter(|p| p.tier == 0)
                .map(|p| (p.t, p.value))
                .collect::<Vec<_>>(),
            vec![(100, 9), (103, 4)]
        );
        assert_eq!(pending.iter().filter(|p| p.tier == 1).count(), 1);
        assert!(h.take_pending().is_empty());
    }

    #[test]
    fn queries_carry_the_value_in_force_into_the_range() {
        let mut h = History::new();
        let k = dram();
        for t in 0..100 {
            h.record(&k, t, if t < 50 { 1 } else { 2 });
        }
        assert_eq!(
            h.query(&k, 0, 60, 70),
            vec![(60, 2)],
            "no change in range: the value in force"
        );
        assert_eq!(h.query(&k, 0, 40, 70), vec![(40, 1), (50, 2)]);
        assert_eq!(h.query(&k, 0, 200, 300), vec![(200, 2)]);
        assert!(
            h.query(
                &SeriesKey {
                    category: "L1".into(),
                    ..dram()
                },
                0,
                0,
                100
            )
            .is_empty()
        );
    }

    #[test]
    fn prune_drops_old_points_and_load_prepends_persisted_ones() {
        let mut h = History::new();
        let k = dram();
        for t in 0..10_000 {
            h.record(&k, t, t);
        }
        h.prune(10_000);
        assert_eq!(h.oldest(&k, 0), Some(10_000 - 3600));
        let q = h.query(&k, 0, 0, 20_000);
        assert_eq!(q.first(), Some(&(6400, 6400)));
        h.load(&k, 0, &[(1, 1), (2, 2), (9_000, 0)]);
        assert_eq!(
            h.oldest(&k, 0),
            Some(1),
            "older persisted points go in front; overlapping ones are ignored"
        );
        h.remove_process(1, 1);
        assert_eq!(h.keys(), vec![k.clone()]);
        let p = SeriesKey {
            process: Some((1, 1)),
            ..k
        };
        h.record(&p, 1, 1);
        h.remove_process(1, 1);
        assert_eq!(h.keys().len(), 1);
    }

    #[test]
    fn an_idle_series_costs_nothing_and_a_busy_one_is_bounded() {
        let mut h = History::new();
        let idle = dram();
        let busy = SeriesKey {
            category: "L1".into(),
            ..dram()
        };
        for t in 0..(2 * 86_400u64) {
            h.record(&idle, t, 42);
            h.record(&busy, t, t % 7);
            if t % 3600 == 0 {
                h.prune(t);
            }
        }
        h.prune(2 * 86_400);
        let idle_points: usize = (0..3).map(|tier| h.query(&idle, tier, 0, u64::MAX).len()).sum();
        assert!(idle_points <= 3, "{idle_points}");
        assert!(h.points() <= 3600 + 8640 + 1440 + 3, "{}", h.points());
        assert_eq!(tier_by_name("10s"), Some(1));
        assert_eq!(tier_by_name("1h"), None);
    }
}
