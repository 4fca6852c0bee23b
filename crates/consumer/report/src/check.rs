//! `ttmem check`: thresholds, leaks and device presence evaluated over a [`Snapshot`], for CI
//! gates and health checks. Pure: the caller gets the snapshot (daemon or regions) and maps
//! the outcome to an exit code (0 ok, 1 a limit was crossed, 2 could not check).

use serde::Serialize;

use ttmem_model::Snapshot;

use crate::short_bytes;

/// A limit's value.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// Percent of the category's total.
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

/// `--max [CHIP:]CATEGORY=VALUE`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Limit {
    /// One chip (the host-wide id), or every chip.
    pub device: Option<u32>,
    /// Category name (any case).
    pub category: String,
    /// The most allowed.
    pub max: Threshold,
}

impl Limit {
    /// Parses `[CHIP:]CATEGORY=N%` or `[CHIP:]CATEGORY=SIZE` (bytes, or with a unit: K, M, G,
    /// T, KiB, MiB, GiB, TiB; powers of 1024).
    pub fn parse(spec: &str) -> Result<Limit, String> {
        let (lhs, rhs) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected [CHIP:]CATEGORY=VALUE, e.g. dram=90% or 0:l1=32MiB"))?;
        let (device, category) = match lhs.split_once(':') {
            Some((d, c)) => (
                Some(
                    d.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("{spec:?}: {d:?} is not a chip id"))?,
                ),
                c,
            ),
            None => (None, lhs),
        };
        let category = category.trim();
        if category.is_empty() {
            return Err(format!("{spec:?}: no category"));
        }
        let rhs = rhs.trim();
        let max =
            if let Some(p) = rhs.strip_suffix('%') {
                let v: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("{spec:?}: {p:?} is not a percentage"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(format!("{spec:?}: a percentage must be between 0 and 100"));
                }
                Threshold::Percent(v)
            } else {
                Threshold::Bytes(parse_size(rhs).ok_or_else(|| {
                    format!("{spec:?}: {rhs:?} is not a size (e.g. 8GiB, 512M, 1048576) or a percentage")
                })?)
            };
        Ok(Limit {
            device,
            category: category.to_string(),
            max,
        })
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = v * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// What to check.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Checks {
    /// Usage limits.
    pub limits: Vec<Limit>,
    /// Fail if an exited process left memory behind.
    pub no_leaks: bool,
    /// Fail with fewer devices.
    pub require_devices: Option<usize>,
}

/// One failed condition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// `limit`, `leak` or `devices`.
    pub kind: String,
    /// The chip, where one is concerned.
    pub device: Option<u32>,
    /// The process, for a leak.
    pub pid: Option<u32>,
    /// What, in words.
    pub message: String,
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// 0 passed, 1 a condition failed, 2 could not check.
    pub exit_code: u8,
    /// One line for people.
    pub summary: String,
    /// Failed conditions.
    pub violations: Vec<Violation>,
    /// Why checking was impossible (a limit names a category or chip no device has, ...).
    pub errors: Vec<String>,
    /// Devices seen.
    pub devices: usize,
    /// Running processes seen.
    pub running: usize,
    /// Where the data came from.
    pub source: String,
}

/// Evaluates `checks` over `s`.
pub fn check(s: &Snapshot, checks: &Checks) -> CheckReport {
    let mut violations = Vec::new();
    let mut errors = Vec::new();
    for l in &checks.limits {
        let devices: Vec<_> = s
            .devices
            .iter()
            .filter(|d| l.device.is_none_or(|id| id == d.id))
            .collect();
        if devices.is_empty() {
            if let Some(id) = l.device {
                errors.push(format!("no device {id}"));
            }
            continue;
        }
        let mut found = false;
        for d in devices {
            let Some(c) = d.categories.iter().find(|c| c.name.eq_ignore_ascii_case(&l.category)) else {
                continue;
            };
            found = true;
            let (over, shown) = match l.max {
                Threshold::Percent(p) => {
                    if c.total == 0 {
                        errors.push(format!(
                            "device {} does not report a capacity for {}: use a size, not a percentage",
                            d.id, c.name
                        ));
                        continue;
                    }
                    let pct = 100.0 * c.used as f64 / c.total as f64;
                    (pct > p, format!("{:.1}% > {p}%", pct))
                }
                Threshold::Bytes(b) => (c.used > b, format!("{} > {}", short_bytes(c.used), short_bytes(b))),
            };
            if over {
                violations.push(Violation {
                    kind: "limit".into(),
                    device: Some(d.id),
                    pid: None,
                    message: format!("device {} ({}) {} at {shown}", d.id, d.name, c.name),
                });
            }
        }
        if !found {
            errors.push(format!(
                "no device{} has a category {:?}",
                l.device.map(|d| format!(" {d}")).unwrap_or_else(|| "".into()),
                l.category
            ));
        }
    }
    if checks.no_leaks {
        for p in s.processes.iter().filter(|p| p.left_behind) {
            let bytes: u64 = p.totals.iter().map(|t| t.bytes).sum();
            violations.push(Violation {
                kind: "leak".into(),
                device: None,
                pid: Some(p.id.pid),
                message: format!(
                    "pid {} ({}) exited leaving {} behind",
                    p.id.pid,
                    p.id.name,
                    short_bytes(bytes)
                ),
            });
        }
    }
    if let Some(n) = checks.require_devices
        && s.devices.len() < n
    {
        violations.push(Violation {
            kind: "devices".into(),
            device: None,
            pid: None,
            message: format!(
                "{} device{} seen, {n} required",
                s.devices.len(),
                if s.devices.len() == 1 { "" } else { "s" }
            ),
        });
    }
    let running = s.running().count();
    let (exit_code, summary) = if !errors.is_empty() {
        (2, format!("ttmem check: COULD NOT CHECK: {}", errors.join("; ")))
    } else if !violations.is_empty() {
        (
            1,
            format!(
                "ttmem check: FAILED: {}",
                violations
                    .iter()
                    .map(|v| v.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    } else {
        (
            0,
            format!(
                "ttmem check: OK: {} device{}, {running} running process{}, {} condition{} met",
                s.devices.len(),
                if s.devices.len() == 1 { "" } else { "s" },
                if running == 1 { "" } else { "es" },
                checks.limits.len() + checks.no_leaks as usize + checks.require_devices.is_some() as usize,
                if checks.limits.len() + checks.no_leaks as usize + checks.require_devices.is_some() as usize == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        )
    };
    CheckReport {
        exit_code,
        summary,
        violations,
        errors,
        devices: s.devices.len(),
        running,
        source: s.source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttmem_model::{
        DeviceCategory, DeviceRow, EventStats, ProcState, ProcessCategory, ProcessIdentity, ProcessRow, SourceKind,
    };

    fn snap() -> Snapshot {
        let dev = |id: u32, dram: u64| DeviceRow {
            id,
            hw_id: format!("{id:#x}"),
            kind: "tt-sim".into(),
            arch: "wormhole_b0".into(),
            name: format!("chip{id}"),
            remote: false,
            categories: vec![
                DeviceCategory {
                    name: "DRAM".into(),
                    used: dram,
                    total: 1000,
                    count: 1,
                },
                DeviceCategory {
                    name: "L1".into(),
                    used: 10,
                    total: 0,
                    count: 1,
                },
            ],
            processes: 1,

            sources: vec![],
        };
        let proc_ = |pid: u32, state: ProcState, left: bool| ProcessRow {
            id: ProcessIdentity {
                pid,
                start_time: 1,
                uid: 0,
                user: "root".into(),
                name: "sim".into(),
                cmdline: String::new(),
            },
            state,
            left_behind: left,
            age_s: 1.0,
            devices: vec![],
            totals: vec![ProcessCategory {
                name: "DRAM".into(),
                bytes: 300 << 20,
                count: 3,
                peak: 0,
                allocs: 3,
                frees: 0,
            }],
            peak_bytes: 0,
            events: EventStats {
                written: 0,
                lost: 0,
                ring_capacity: 16,
            },
            rejected: 0,
            region: String::new(),
            device_ids: vec![],
            source: SourceKind::Region,
            holds: vec![],
            updated_unix_ns: None,
        };
        Snapshot {
            schema: 1,
            source: "regions".into(),
            region_dir: "/x".into(),
            timestamp_ns: 0,
            devices: vec![dev(0, 950), dev(1, 100)],
            processes: vec![proc_(10, ProcState::Running, false), proc_(11, ProcState::Exited, true)],
            skipped: vec![],
            not_permitted: 0,
            notes: vec![],
        }
    }

    fn run(limits: &[&str], no_leaks: bool, require: Option<usize>) -> CheckReport {
        let checks = Checks {
            limits: limits.iter().map(|l| Limit::parse(l).unwrap()).collect(),
            no_leaks,
            require_devices: require,
        };
        check(&snap(), &checks)
    }

    #[test]
    fn limits_parse() {
        assert_eq!(
            Limit::parse("dram=90%").unwrap(),
            Limit {
                device: None,
                category: "dram".into(),
                max: Threshold::Percent(90.0)
            }
        );
        assert_eq!(Limit::parse("3:L1=32MiB").unwrap().max, Threshold::Bytes(32 << 20));
        assert_eq!(Limit::parse("dram=1.5G").unwrap().max, Threshold::Bytes(3 << 29));
        assert_eq!(Limit::parse("dram=4096").unwrap().max, Threshold::Bytes(4096));
        for bad in ["dram", "=5%", "x:dram=5%", "dram=150%", "dram=lots", "dram=5XB"] {
            assert!(Limit::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Limit::parse("dram")
                .unwrap_err()
                .contains("expected [CHIP:]CATEGORY=VALUE")
        );
    }

    #[test]
    fn each_condition_sets_its_exit_code() {
        let ok = run(&["dram=96%", "1:dram=200"], false, Some(2));
        assert_eq!(ok.exit_code, 0, "{}", ok.summary);
        assert_eq!(
            ok.summary,
            "ttmem check: OK: 2 devices, 1 running process, 3 conditions met"
        );
        let over = run(&["dram=90%"], false, None);
        assert_eq!(over.exit_code, 1);
        assert_eq!(
            over.summary,
            "ttmem check: FAILED: device 0 (chip0) DRAM at 95.0% > 90%"
        );
        assert_eq!(
            run(&["1:DRAM=50"], false, None).violations[0].message,
            "device 1 (chip1) DRAM at 100B > 50B"
        );
        let leak = run(&[], true, None);
        assert_eq!((leak.exit_code, leak.violations[0].pid), (1, Some(11)));
        assert!(leak.summary.contains("pid 11 (sim) exited leaving 300M behind"));
        assert_eq!(
            run(&[], false, Some(3)).violations[0].message,
            "2 devices seen, 3 required"
        );
        let cannot = run(&["gpu=5%"], false, None);
        assert_eq!(cannot.exit_code, 2);
        assert!(cannot.summary.contains("no device has a category \"gpu\""));
        assert_eq!(run(&["7:dram=5%"], false, None).errors, ["no device 7"]);
        assert!(run(&["l1=5%"], false, None).errors[0].contains("does not report a capacity for L1"));
        assert_eq!(
            run(&["l1=5"], false, None).exit_code,
            1,
            "sizes work without a capacity"
        );
    }
}
