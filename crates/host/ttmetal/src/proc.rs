//! Whether a counter-file slot's owner still runs, read from a proc root (`/proc`, or a tree a
//! test fabricates).
//!
//! TT-Metal records a pid and the time of the slot's last update, nothing else. The owner runs
//! when that pid exists and its process started before the slot's last update: a pid reused by
//! a process that started later fails the test, so a dead owner's bytes are never credited to a
//! stranger.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Slack for the start-time comparison when the boot time comes from `uptime` (known to about
/// a hundredth of a second) and process start times are known to a clock tick.
const START_SLACK_NS: u64 = 100_000_000;
/// The slack when only `btime` (whole seconds) is known.
const START_SLACK_BTIME_NS: u64 = 1_100_000_000;

/// Facts about the processes of one proc root, read once per reading.
#[derive(Clone, Debug)]
pub struct ProcRoot {
    root: PathBuf,
    /// Boot time, ns since the epoch (None: unknown, so start times cannot be compared).
    boot_ns: Option<u64>,
    /// How far the boot time may be off.
    slack_ns: u64,
    ticks_per_sec: u64,
}

/// A live process, as the proc root shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// Start time in clock ticks since boot (with the pid, the process's identity).
    pub start_time: u64,
    /// Real user id.
    pub uid: u32,
    /// The process name (comm).
    pub comm: String,
    /// The command line, NULs as spaces.
    pub cmdline: String,
}

/// Reads a small proc file, bounded.
fn small(path: &Path) -> Option<String> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(16 * 1024)
        .read_to_end(&mut out)
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl ProcRoot {
    /// A proc root (`/proc` on a real host).
    pub fn new(root: &Path) -> ProcRoot {
        // Now minus the time since boot (`uptime`, to a hundredth of a second) is the precise
        // boot time; `btime` (whole seconds) is the fallback.
        let from_uptime = small(&root.join("uptime"))
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|u| u.is_finite() && *u >= 0.0)
            .and_then(|u| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_nanos() as u64;
                now.checked_sub((u * 1e9) as u64)
            });
        let from_btime = || {
            small(&root.join("stat")).and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| s.saturating_mul(1_000_000_000))
            })
        };
        let (boot_ns, slack_ns) = match from_uptime {
            Some(b) => (Some(b), START_SLACK_NS),
            None => (from_btime(), START_SLACK_BTIME_NS),
        };
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ProcRoot {
            root: root.into(),
            boot_ns,
            slack_ns,
            ticks_per_sec: if ticks > 0 { ticks as u64 } else { 100 },
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The process with this pid, if one runs.
    pub fn process(&self, pid: u32) -> Option<Live> {
        let dir = self.root.join(pid.to_string());
        let stat = small(&dir.join("stat"))?;
        // Fields after the last ')' (the comm may contain anything, including parentheses).
        let after = stat.rsplit_once(')')?.1;
        let start_time = after.split_whitespace().nth(19)?.parse().ok()?;
        let status = small(&dir.join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX);
        let comm = small(&dir.join("comm")).unwrap_or_default().trim_end().to_string();
        let cmdline = small(&dir.join("cmdline"))
            .unwrap_or_default()
            .trim_end_matches('\0')
            .replace('\0', " ");
        Some(Live {
            start_time,
            uid,
            comm,
            cmdline,
        })
    }

    /// When a process that started at `start_time` ticks after boot started, ns since the
    /// epoch (None when the boot time is unknown).
    pub fn started_ns(&self, start_time: u64) -> Option<u64> {
        let since_boot = (start_time as u128 * 1_000_000_000 / self.ticks_per_sec as u128).min(u64::MAX as u128) as u64;
        self.boot_ns.map(|b| b.saturating_add(since_boot))
    }

    /// The owner of a slot, if it still runs: the pid exists and started no later than the
    /// slot's last update (a slot never updated cannot be checked, so the pid decides).
    pub fn slot_owner(&self, pid: u32, last_update_ns: u64) -> Option<Live> {
        let live = self.process(pid)?;
        if last_update_ns == 0 {
            return Some(live);
        }
        match self.started_ns(live.start_time) {
            Some(started) if started > last_update_ns.saturating_add(self.slack_ns) => None,
            _ => Some(live),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fabricated proc root: boot at 1000 s, 100 ticks a second.
    fn root(procs: &[(u32, u64)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stat"), "cpu 1 2 3\nbtime 1000\n").unwrap();
        for &(pid, start) in procs {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            let mut fields = vec!["0".to_string(); 25];
            fields[18] = start.to_string(); // field 22 of stat: the 20th after the comm
            std::fs::write(p.join("stat"), format!("{pid} (py (thon)) S {}", fields.join(" "))).unwrap();
            std::fs::write(p.join("status"), "Name:\tpython\nUid:\t1000\t1000\t1000\t1000\n").unwrap();
            std::fs::write(p.join("comm"), "python\n").unwrap();
            std::fs::write(p.join("cmdline"), "python\0model.py\0").unwrap();
        }
        d
    }

    #[test]
    fn a_slot_belongs_to_a_live_process_only_if_it_started_before_the_slots_last_update() {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let d = root(&[(10, 5 * tck), (11, 500 * tck)]);
        let r = ProcRoot::new(d.path());
        let s = 1_000_000_000u64;
        // Pid 10 started at 1005 s; its slot was updated at 1100 s.
        let live = r.slot_owner(10, 1100 * s).unwrap();
        assert_eq!(
            (live.uid, live.comm.as_str(), live.cmdline.as_str()),
            (1000, "python", "python model.py")
        );
        assert_eq!(live.start_time, 5 * tck);
        // Pid 11 started at 1500 s, long after its slot's last update at 1100 s: a reused pid.
        assert!(r.slot_owner(11, 1100 * s).is_none());
        // No such pid: dead.
        assert!(r.slot_owner(12, 1100 * s).is_none());
        // A slot never updated: the pid decides.
        assert!(r.slot_owner(11, 0).is_some());
    }
}
