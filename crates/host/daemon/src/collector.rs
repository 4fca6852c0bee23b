//! The collector: discovers regions, drains them into the ledger, keeps each process's exact
//! counters, and follows process lifecycles. Synchronous and clock-free (callers pass the
//! time), so tests drive it tick by tick; the daemon runs it on its own thread.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use ttmem_history::{History, SeriesKey};
use ttmem_ledger::{DeviceInfo, Event, EventKind, Ledger, ProcKey};
use ttmem_region::decode;
use ttmem_scan::attach::{Attached, TickClock};
use ttmem_scan::{Liveness, ProcessRegion, Scan};
use ttmem_store::ProcessRecord;

mod legacy;
pub use legacy::{ConnectionEvent, Dump, DumpEntry, LegacyStats, MAX_DUMP_ENTRIES, Peer};

/// The collector's own statistics (`/api/v1/stats`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CollectorStats {
    /// Regions attached since start.
    pub regions_attached: u64,
    /// Region files refused (invalid, other users').
    pub regions_refused: u64,
    /// Events drained into the ledger.
    pub events: u64,
    /// Events lost to ring overflow before they were read.
    pub events_lost: u64,
    /// Shard heads that went backwards or leapt (corrupt or hostile writers).
    pub anomalies: u64,
    /// Processes seen to die.
    pub deaths: u64,
    /// Region files removed after their process died.
    pub regions_removed: u64,
    /// Ticks run.
    pub ticks: u64,
}

struct Proc {
    attached: Option<Attached>,
    /// The latest exact view (what `ps` shows).
    view: ProcessRegion,
    /// Process-local device index → ledger device.
    devices: Vec<Option<ttmem_ledger::DeviceKey>>,
    clock: TickClock,
    pidfd: Option<OwnedFd>,
    exited_at_ns: Option<u64>,
    dirty: bool,
    /// A client of the legacy socket (no region): its book of buffers.
    legacy: Option<Box<legacy::LegacyProc>>,
}

/// What the collector was told at creation.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Where regions are.
    pub region_dir: PathBuf,
    /// How long exited processes stay.
    pub retention: Duration,
    /// Remove dead processes' region files.
    pub remove_dead_regions: bool,
}

/// See the module docs.
pub struct Collector {
    cfg: CollectorConfig,
    ledger: Ledger,
    procs: HashMap<ProcKey, Proc>,
    by_path: HashMap<PathBuf, ProcKey>,
    refused: HashMap<PathBuf, (Option<SystemTime>, String)>,
    not_permitted: usize,
    next_key: ProcKey,
    stats: CollectorStats,
    /// One drain round's events, converted for the ledger.
    events: Vec<Event>,
    dir_exists: bool,
    history: History,
    last_sample_s: u64,
    records: Vec<ProcessRecord>,
    generation: u64,
    legacy: legacy::LegacyHub,
}

/// Events drained per tick at most, per region (bounds the time one tick can take).
const MAX_EVENTS_PER_SHARD: u64 = 1 << 16;
/// Events per shard drained per round (a round's events stay in the CPU cache).
const ROUND_EVENTS_PER_SHARD: u64 = 2048;

impl Collector {
    /// A collector with an empty ledger whose ages count from `now_ns`.
    pub fn new(cfg: CollectorConfig, now_ns: u64) -> Self {
        Collector {
            cfg,
            ledger: Ledger::new(now_ns),
            procs: HashMap::new(),
            by_path: HashMap::new(),
            refused: HashMap::new(),
            not_permitted: 0,
            next_key: 1,
            stats: CollectorStats::default(),
            events: Vec::new(),
            dir_exists: false,
            history: History::new(),
            last_sample_s: 0,
            records: Vec::new(),
            generation: 0,
            legacy: legacy::LegacyHub::default(),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Statistics.
    pub fn stats(&self) -> CollectorStats {
        self.stats
    }

    /// Moves whenever anything a snapshot shows may have changed (events, counters, devices,
    /// processes appearing, dying or expiring): equal generations mean equal snapshots.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The region directory.
    pub fn region_dir(&self) -> &Path {
        &self.cfg.region_dir
    }

    /// One round: discover, drain, check liveness, expire old records, and once per
    /// wall-clock second sample history.
    pub fn tick(&mut self, now_ns: u64) {
        self.stats.ticks += 1;
        self.discover();
        self.drain_all();
        self.check_liveness(now_ns);
        self.expire(now_ns);
        let wall_s = unix_ns() / 1_000_000_000;
        if wall_s != self.last_sample_s {
            self.last_sample_s = wall_s;
            // Ages in a snapshot move with time: a cached snapshot lives at most a second.
            self.generation += 1;
            self.sample(wall_s);
        }
    }

    /// Records one history sample of every device category and of every running process's
    /// device categories.
    pub fn sample(&mut self, wall_s: u64) {
        let snap = self.snapshot();
        let device_key = |id: u32| {
            snap.devices
                .iter()
                .find(|d| d.id == id)
                .map(|d| format!("{}:{}", d.kind, d.hw_id))
        };
        for d in &snap.devices {
            let dev = format!("{}:{}", d.kind, d.hw_id);
            for c in &d.categories {
                self.history.record(
                    &SeriesKey {
                        device: dev.clone(),
                        category: c.name.clone(),
                        process: None,
                    },
                    wall_s,
                    c.used,
                );
            }
        }
        for p in snap.processes.iter().filter(|p| p.state == "running") {
            for pd in &p.devices {
                let Some(dev) = device_key(pd.id) else { continue };
                for c in &pd.categories {
                    let key = SeriesKey {
                        device: dev.clone(),
                        category: c.name.clone(),
                        process: Some((p.pid, p.start_time)),
                    };
                    self.history.record(&key, wall_s, c.bytes);
                }
            }
        }
        self.history.prune(wall_s);
    }

    /// The history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The history, to load persisted points or take pending ones.
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// Process records to persist since the last call (starts and exits).
    pub fn take_records(&mut self) -> Vec<ProcessRecord> {
        std::mem::take(&mut self.records)
    }

    fn record_of(&self, key: ProcKey, exited_unix_ns: Option<u64>) -> Option<ProcessRecord> {
        let p = self.procs.get(&key)?;
        let snap = ttmem_report::Snapshot::from_scan(&Scan {
            regions: vec![p.view.clone()],
            ..Default::default()
        });
        let row = snap.processes.first()?;
        Some(ProcessRecord {
            pid: row.pid,
            start_time: row.start_time,
            uid: row.uid,
            name: row.name.clone(),
            cmdline: row.cmdline.clone(),
            started_unix_ns: p.view.header.clock_realtime_ns,
            exited_unix_ns,
            peak_bytes: row.peak_bytes,
            left_behind: if exited_unix_ns.is_some() {
                serde_json::to_value(&row.devices).unwrap_or_default()
            } else {
                serde_json::Value::Array(vec![])
            },
        })
    }

    /// Attaches to region files not seen before.
    pub fn discover(&mut self) {
        let entries = match std::fs::read_dir(&self.cfg.region_dir) {
            Ok(e) => {
                self.dir_exists = true;
                e
            }
            Err(_) => {
                self.dir_exists = false;
                return;
            }
        };
        let mut not_permitted = 0;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != ttmem_region::REGION_EXTENSION) || self.by_path.contains_key(&path)
            {
                continue;
            }
            let mtime = entry.metadata().ok().and_then(|m| m.modified().ok());
            if let Some((seen, _)) = self.refused.get(&path)
                && *seen == mtime
            {
                continue; // refused before and unchanged since
            }
            match Attached::open(&path) {
                Ok(a) => self.attach(path, a),
                Err(ttmem_scan::RegionError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(ttmem_scan::RegionError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    not_permitted += 1
                }
                Err(e) if e.is_transient(&path) => {} // still being created: next tick
                Err(e) => {
                    tracing::warn!(path = %path.display(), "refusing region: {e}");
                    self.stats.regions_refused += 1;
                    self.refused.insert(path, (mtime, e.to_string()));
                    self.generation += 1;
                }
            }
        }
        if self.not_permitted != not_permitted {
            self.generation += 1;
        }
        self.not_permitted = not_permitted;
    }

    fn attach(&mut self, path: PathBuf, attached: Attached) {
        let h = attached.header().clone();
        let key = self.next_key;
        self.next_key += 1;
        self.ledger.add_process(key);
        let pidfd = open_pidfd(h.pid, h.start_time);
        let view = ProcessRegion {
            path: path.clone(),
            liveness: ttmem_scan::liveness(&h, ttmem_scan::current_boot_id()),
            header: h.clone(),
            devices: Vec::new(),
            shards: Vec::new(),
            strings: Default::default(),
            events: Vec::new(),
        };
        tracing::info!(pid = h.pid, exe = %h.exe, path = %path.display(), "attached region");
        self.refused.remove(&path);
        self.stats.regions_attached += 1;
        self.by_path.insert(path, key);
        self.procs.insert(
            key,
            Proc {
                clock: TickClock::for_header(&h),
                attached: Some(attached),
                view,
                devices: Vec::new(),
                pidfd,
                exited_at_ns: None,
                dirty: true,
                legacy: None,
            },
        );
        self.generation += 1;
        // Remember that it started (the record is completed when it exits).
        if let Some(r) = self.record_of(key, None) {
            self.records.push(r);
        }
    }

    /// Drains every attached region into the ledger and refreshes changed counters.
    pub fn drain_all(&mut self) {
        let keys: Vec<ProcKey> = self.procs.keys().copied().collect();
        for key in keys {
            if let Err(e) = self.drain_one(key) {
                tracing::warn!(process = key, "region became unreadable: {e}");
                if let Some(p) = self.procs.get_mut(&key) {
                    p.attached = None;
                }
            }
        }
    }

    fn drain_one(&mut self, key: ProcKey) -> Result<(), ttmem_scan::RegionError> {
        let Some(p) = self.procs.get_mut(&key) else {
            return Ok(());
        };
        let Some(a) = p.attached.as_mut() else { return Ok(()) };
        for (index, d) in a.new_devices()? {
            let dk = self.ledger.add_device(ledger_info(&d));
            if p.devices.len() <= index as usize {
                p.devices.resize(index as usize + 1, None);
            }
            p.devices[index as usize] = Some(dk);
            p.dirty = true;
        }
        let tags = a.new_tags()?;
        if !tags.is_empty() {
            self.ledger.set_tags(key, tags);
        }
        // Drain in rounds small enough that each round's events stay in the CPU cache through
        // copying, conversion, ordering and the ledger, up to a bound per tick. Events are
        // converted as the region yields them: only alloc and free of a published device
        // reach the ledger.
        let mut s = ttmem_scan::attach::DrainStats::default();
        let mut drained = 0u64;
        loop {
            self.events.clear();
            let (devices, clock, events) = (&p.devices, p.clock, &mut self.events);
            let mut in_order = true;
            let mut last_ns = 0u64;
            let round = a.drain_with(ROUND_EVENTS_PER_SHARD, |_, e| {
                let kind = match e.kind {
                    ttmem_region::EventKind::Alloc => EventKind::Alloc,
                    ttmem_region::EventKind::Free => EventKind::Free,
                    _ => return,
                };
                let Some(Some(device)) = devices.get(e.device as usize) else {
                    return;
                };
                let time_ns = clock.to_ns(e.ticks);
                in_order &= time_ns >= last_ns;
                last_ns = time_ns;
                events.push(Event {
                    kind,
                    device: *device,
                    category: e.category,
                    address: e.address,
                    size: e.size,
                    time_ns,
                    tag: e.tag,
                });
            })?;
            s.events += round.events;
            s.lost = s.lost.saturating_add(round.lost);
            s.anomalies = s.anomalies.saturating_add(round.anomalies);
            // Merge the shards' events by time; a stable sort keeps each shard's own order (and
            // is skipped when the round is already in order, as when one shard wrote it all).
            if !in_order {
                self.events.sort_by_key(|e| e.time_ns);
            }
            self.ledger.apply_batch(key, &self.events);
            self.stats.events += self.events.len() as u64;
            drained += round.events + round.lost;
            if round.events + round.lost == 0 || drained >= MAX_EVENTS_PER_SHARD {
                break;
            }
        }
        self.stats.events_lost = self.stats.events_lost.saturating_add(s.lost);
        self.stats.anomalies = self.stats.anomalies.saturating_add(s.anomalies);
        if s.lost > 0 {
            self.ledger.mark_lost(key, s.lost);
        }
        // Counters change with every event, including the ones lost to overflow.
        if s.events > 0 || s.lost > 0 || s.anomalies > 0 || p.dirty {
            let region = a.read()?;
            p.view.devices = region.devices;
            p.view.shards = region.shards;
            p.view.header = region.header;
            p.dirty = false;
            self.generation += 1;
        }
        Ok(())
    }

    /// Checks which running processes died (pidfd readiness, else `/proc` start time) and
    /// records their deaths.
    pub fn check_liveness(&mut self, now_ns: u64) {
        let boot = ttmem_scan::current_boot_id();
        let dead: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exited_at_ns.is_none())
            .filter(|(_, p)| match &p.pidfd {
                Some(fd) => pidfd_exited(fd.as_raw_fd()),
                None => ttmem_scan::liveness(&p.view.header, boot) == Liveness::Exited,
            })
            .map(|(&k, _)| k)
            .collect();
        for key in dead {
            self.process_died(key, now_ns);
        }
    }

    /// Records a death: a last drain (the ring is still readable), then the process's memory
    /// leaves the totals and stays as what it left behind; its region file is removed.
    pub fn process_died(&mut self, key: ProcKey, now_ns: u64) {
        if let Err(e) = self.drain_one(key) {
            tracing::debug!(process = key, "last drain failed: {e}");
        }
        let Some(p) = self.procs.get_mut(&key) else { return };
        if p.exited_at_ns.is_some() {
            return;
        }
        p.exited_at_ns = Some(now_ns);
        p.view.liveness = Liveness::Exited;
        self.generation += 1;
        p.pidfd = None;
        self.ledger.process_exited(key, now_ns);
        self.stats.deaths += 1;
        if let Some(r) = self.record_of(key, Some(unix_ns())) {
            self.records.push(r);
        }
        let Some(p) = self.procs.get_mut(&key) else { return };
        tracing::info!(pid = p.view.header.pid, exe = %p.view.header.exe, "process exited");
        if let Some(a) = p.attached.take()
            && self.cfg.remove_dead_regions
        {
            match std::fs::remove_file(a.path()) {
                Ok(()) => self.stats.regions_removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // a clean exit removed it
                Err(e) => tracing::debug!(path = %a.path().display(), "cannot remove region: {e}"),
            }
        }
    }

    /// Forgets exited processes older than the retention period.
    pub fn expire(&mut self, now_ns: u64) {
        let retention = self.cfg.retention.as_nanos() as u64;
        let old: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exited_at_ns.is_some_and(|t| now_ns.saturating_sub(t) >= retention))
            .map(|(&k, _)| k)
            .collect();
        for k in old {
            self.generation += 1;
            if let Some(p) = self.procs.remove(&k) {
                if p.legacy.is_some() {
                    self.legacy.forget(p.view.header.pid, p.view.header.start_time);
                } else {
                    self.by_path.remove(&p.view.path);
                }
                self.history.remove_process(p.view.header.pid, p.view.header.start_time);
            }
            self.ledger.remove_process(k);
        }
    }

    /// Pidfds of running processes, for a poll loop that wakes on deaths.
    pub fn pidfds(&self) -> Vec<RawFd> {
        self.procs
            .values()
            .filter_map(|p| p.pidfd.as_ref().map(|f| f.as_raw_fd()))
            .collect()
    }

    /// The process key of a pid: the running process with it, else the latest exited one.
    pub fn key_of_pid(&self, pid: u32) -> Option<ProcKey> {
        self.procs
            .iter()
            .filter(|(_, p)| p.view.header.pid == pid)
            .max_by_key(|(k, p)| (p.exited_at_ns.is_none(), **k))
            .map(|(&k, _)| k)
    }

    /// The pid of a process key.
    pub fn pid_of(&self, key: ProcKey) -> Option<u32> {
        self.procs.get(&key).map(|p| p.view.header.pid)
    }

    /// The daemon's device table: device identities in id order (the ids `ps` shows).
    pub fn device_identities(&self) -> Vec<ttmem_report::DeviceIdentity> {
        ttmem_report::device_table(self.procs.values().map(|p| &p.view))
            .into_keys()
            .collect()
    }

    /// The `ps` snapshot (schema 1) of everything the collector knows, from exact counters.
    pub fn snapshot(&self) -> ttmem_report::Snapshot {
        let scan = Scan {
            dir: self.cfg.region_dir.clone(),
            dir_exists: self.dir_exists,
            regions: self.procs.values().map(|p| p.view.clone()).collect(),
            skipped: self
                .refused
                .iter()
                .map(|(path, (_, reason))| ttmem_scan::Skipped {
                    path: path.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            not_permitted: self.not_permitted,
        };
        let mut s = ttmem_report::Snapshot::from_scan(&scan);
        s.source = "daemon".into();
        // Events the daemon itself lost (its rings overflowed between drains) count as lost:
        // the process's detail is incomplete, its totals (from the counters) are not.
        for row in &mut s.processes {
            if let Some(key) = self
                .procs
                .iter()
                .find(|(_, p)| p.view.header.pid == row.pid && p.view.header.start_time == row.start_time)
                .map(|(&k, _)| k)
                && let Some((lost, _)) = self.ledger.completeness(key)
            {
                row.events.lost = row.events.lost.max(lost);
            }
        }
        s
    }
}

/// A device as the ledger keeps it (regions and legacy clients declare devices alike).
fn ledger_info(d: &decode::Device) -> DeviceInfo {
    DeviceInfo {
        kind: d.kind.code(),
        hw_id: d.hw_id,
        arch: d.arch.clone(),
        name: d.name.clone(),
        remote: d.flags & ttmem_region::DEVICE_FLAG_REMOTE != 0,
        categories: d
            .categories
            .iter()
            .map(|c| ttmem_ledger::CategoryInfo {
                name: c.name.clone(),
                capacity: c.capacity,
                addr_base: c.addr_base,
                addr_end: c.addr_end,
                banks: c.banks,
                alignment: c.alignment,
            })
            .collect(),
    }
}

/// Wall clock, ns since the epoch.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Opens a pidfd for `pid` and checks it still names the process that started at
/// `start_time` (so a reused pid is never followed). None if it cannot be opened.
fn open_pidfd(pid: u32, start_time: u64) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    (ttmem_scan::start_time_of(pid) == Some(start_time)).then_some(fd)
}

/// Whether the process behind a pidfd has exited (its pidfd is readable).
fn pidfd_exited(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}
