//! When will a series reach a limit? A least-squares line through the series over a window,
//! like Prometheus' `predict_linear`, with the fit's quality (R²) so that a flat or noisy series
//! makes no forecast.

use serde::{Deserialize, Serialize};

/// A line fitted to a series.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Growth, in the series' unit per second (negative: shrinking).
    pub slope_per_s: f64,
    /// Share of the series' variance the line explains, 0 to 1 (0 for a flat series).
    pub r2: f64,
    /// Samples the fit used.
    pub samples: usize,
}

/// The least fit quality and samples a forecast needs.
pub const MIN_R2: f64 = 0.8;
/// See [`MIN_R2`].
pub const MIN_SAMPLES: usize = 10;

/// Fits a line to the step function `points` (as [`crate::History::query`] returns it),
/// sampled every `step_s` seconds over `[from_s, to_s]`; None with fewer than two samples.
pub fn trend(points: &[(u64, u64)], from_s: u64, to_s: u64, step_s: u64) -> Option<Trend> {
    let step_s = step_s.max(1);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut i = 0;
    let mut value: Option<u64> = None;
    let mut t = from_s;
    while t <= to_s {
        while i < points.len() && points[i].0 <= t {
            value = Some(points[i].1);
            i += 1;
        }
        if let Some(v) = value {
            samples.push(((t - from_s) as f64, v as f64));
        }
        t = match t.checked_add(step_s) {
            Some(next) => next,
            None => break,
        };
    }
    let n = samples.len();
    if n < 2 {
        return None;
    }
    let (mx, my) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n as f64, b + y / n as f64));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &samples {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy == 0.0 {
        0.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Trend {
        slope_per_s: slope,
        r2,
        samples: n,
    })
}

impl Trend {
    /// Seconds until `used` reaches `capacity` at this trend, when the series grows and the fit
    /// is good enough to say so ([`MIN_R2`], [`MIN_SAMPLES`]); 0 when it is already full.
    pub fn time_to_full(&self, used: u64, capacity: u64) -> Option<f64> {
        if used >= capacity {
            return Some(0.0);
        }
        (self.slope_per_s > 0.0 && self.r2 >= MIN_R2 && self.samples >= MIN_SAMPLES)
            .then(|| (capacity - used) as f64 / self.slope_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_climb_is_forecast_and_flat_or_noisy_series_are_not() {
        // 1 MiB a second for a minute, recorded as a step function.
        let climb: Vec<(u64, u64)> = (0..60).map(|s| (1000 + s, s << 20)).collect();
        let t = trend(&climb, 1000, 1059, 1).unwrap();
        assert!((t.slope_per_s - (1 << 20) as f64).abs() < 1.0, "{t:?}");
        assert!(t.r2 > 0.999);
        let eta = t.time_to_full(59 << 20, 159 << 20).unwrap();
        assert!((eta - 100.0).abs() < 0.01, "{eta}");
        // Flat: no trend worth a forecast.
        let flat = trend(&[(1000, 5 << 20)], 1000, 1059, 1).unwrap();
        assert_eq!(flat.r2, 0.0);
        assert_eq!(flat.time_to_full(5 << 20, 10 << 20), None);
        // Bursts up and down around a level: a poor fit, no forecast.
        let bursty: Vec<(u64, u64)> = (0..60)
            .map(|s| (1000 + s, if s % 10 < 2 { 900 << 20 } else { 100 << 20 }))
            .collect();
        let b = trend(&bursty, 1000, 1059, 1).unwrap();
        assert!(b.r2 < MIN_R2, "{b:?}");
        assert_eq!(b.time_to_full(100 << 20, 1 << 30), None);
        // Shrinking never fills; full is full.
        let down: Vec<(u64, u64)> = (0..60).map(|s| (1000 + s, (60 - s) << 20)).collect();
        assert_eq!(
            trend(&down, 1000, 1059, 1).unwrap().time_to_full(1 << 20, 2 << 20),
            None
        );
        assert_eq!(t.time_to_full(5, 5), Some(0.0));
        // Too few samples, or none.
        assert!(trend(&[], 0, 100, 1).is_none());
        assert!(trend(&[(0, 1)], 0, 0, 1).is_none());
        let short = trend(&climb[..5], 1000, 1004, 1).unwrap();
        assert_eq!(short.time_to_full(0, u64::MAX), None);
        // Extreme values and steps do not overflow.
        assert!(trend(&[(u64::MAX - 1, u64::MAX)], u64::MAX - 3, u64::MAX, u64::MAX).is_none());
    }
}
