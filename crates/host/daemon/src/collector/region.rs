//! ttmem regions as a source: discovery of region files, attaching, and draining each ring
//! into the ledger while keeping the process's counters view exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ttmem_ledger::{DeviceKey, Event, EventKind, ProcKey};
use ttmem_model::{DeviceIdentity, ProcState, ProcessIdentity, ProcessView};
use ttmem_region::decode;
use ttmem_scan::attach::{Attached, TickClock};
use ttmem_scan::{Liveness, RegionError};

use super::{Collector, Source, lifecycle, mtime};

/// Events drained per tick at most, per region (bounds the time one tick can take).
const MAX_EVENTS_PER_SHARD: u64 = 1 << 16;
/// Events per shard drained per round (a round's events stay in the CPU cache).
const ROUND_EVENTS_PER_SHARD: u64 = 2048;

/// What the directory scan knows: attached files, refused ones, unreadable ones.
pub(super) struct Discovery {
    by_path: HashMap<PathBuf, ProcKey>,
    refused: HashMap<PathBuf, (Option<SystemTime>, String)>,
    not_permitted: usize,
    /// Refusal warnings in the current window, and those suppressed.
    warnings: (std::time::Instant, u32, u64),
}

/// Refusal warnings logged per window at most (a directory of junk must not flood the log).
const MAX_WARNINGS: u32 = 10;
/// The window.
const WARNING_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl Discovery {
    /// Whether a refusal may be logged now; counts those that may not and says so once the
    /// window ends.
    fn may_warn(&mut self) -> bool {
        let (start, used, suppressed) = &mut self.warnings;
        if start.elapsed() >= WARNING_WINDOW {
            if *suppressed > 0 {
                tracing::warn!("{suppressed} more region files refused (see /api/v1/snapshot's skipped)");
            }
            (*start, *used, *suppressed) = (std::time::Instant::now(), 0, 0);
        }
        *used += 1;
        if *used > MAX_WARNINGS {
            *suppressed += 1;
            return false;
        }
        true
    }
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            by_path: HashMap::new(),
            refused: HashMap::new(),
            not_permitted: 0,
            warnings: (std::time::Instant::now(), 0, 0),
        }
    }
}

impl Discovery {
    /// Forgets an expired process's file, so a new file at the path is attached afresh.
    pub(super) fn forget(&mut self, path: &Path) {
        self.by_path.remove(path);
    }

    /// Files refused, with the reason.
    pub(super) fn refused(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.refused.iter().map(|(p, (_, r))| (p.as_path(), r.as_str()))
    }

    /// Files of other users this daemon may not read.
    pub(super) fn not_permitted(&self) -> usize {
        self.not_permitted
    }
}

/// One attached region.
pub(super) struct RegionSource {
    attached: Option<Attached>,
    path: PathBuf,
    header: decode::Header,
    /// Process-local device index → ledger device.
    devices: Vec<Option<DeviceKey>>,
    clock: TickClock,
    /// Counters must be re-read although no event came (a new device).
    dirty: bool,
    /// When the file was first seen removed while its process still ran (monotonic ns).
    unlinked_since: Option<u64>,
    /// Events drained but not applied yet: later than what another shard may still hold.
    carry: Vec<Event>,
    /// How fast its busiest ring fills, and when to drain it next (see [`DrainPace`]).
    pace: DrainPace,
}

/// When a region is drained next, from how fast its busiest ring fills: often enough that no
/// ring gets more than a quarter full between drains at the rate seen lately, and no more
/// often than that (an idle region costs nothing between ticks).
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct DrainPace {
    /// Events per second into the busiest shard: the latest drain's, or the decaying memory of
    /// a faster one (bursts recur).
    rate: f64,
    /// Monotonic ns of the last drain.
    last_ns: u64,
    /// Monotonic ns of the next drain due (0: at the next tick).
    next_ns: u64,
}

/// How long a burst's rate is remembered (its weight falls by e over this time).
const RATE_MEMORY_NS: f64 = 2e9;
/// The soonest a region is drained again, and the part of its ring it may fill in between.
const MIN_DRAIN_GAP_NS: u64 = 1_000_000;
const RING_FRACTION: f64 = 0.25;

/// The most of one core a region's drains may take: a region whose drains cost more (a hostile
/// writer making its reader read garbage) is drained less often, and its own ring overflows.
const MAX_DUTY: f64 = 0.2;

impl DrainPace {
    /// Charges a drain that took `spent_ns` from `now_ns`: the next one waits until the region
    /// has used at most [`MAX_DUTY`] of a core.
    fn charge(&mut self, spent_ns: u64, now_ns: u64) {
        let earliest = now_ns.saturating_add((spent_ns as f64 / MAX_DUTY) as u64);
        self.next_ns = self.next_ns.max(earliest);
    }

    /// Takes one drain's figures: the most events one shard yielded (`busiest`, lost ones
    /// included) of a ring of `ring` events, at `now_ns`; the next drain falls due in at most
    /// `max_gap_ns`.
    fn update(&mut self, busiest: u64, lost: bool, ring: u64, now_ns: u64, max_gap_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns).max(1) as f64;
        let mut sample = busiest as f64 * 1e9 / dt;
        if lost {
            // The ring overflowed: it filled in less than dt.
            sample = sample.max(ring as f64 * 1e9 / dt);
        }
        let remembered = self.rate * (-dt / RATE_MEMORY_NS).exp();
        self.rate = sample.max(remembered);
        self.last_ns = now_ns;
        let gap = if self.rate < 1.0 {
            max_gap_ns
        } else {
            ((ring as f64 * RING_FRACTION / self.rate * 1e9) as u64).clamp(MIN_DRAIN_GAP_NS, max_gap_ns)
        };
        self.next_ns = now_ns.saturating_add(gap);
    }
}

/// How long a removed region of a running process is still followed: a clean exit removes the
/// file just before the process ends, which its pidfd then reports.
const UNLINKED_GRACE_NS: u64 = 1_000_000_000;

impl RegionSource {
    /// The header as last read.
    pub(super) fn header(&self) -> &decode::Header {
        &self.header
    }

    /// The region file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Stops reading and removes the file of a dead process; true if this removed it.
    pub(super) fn detach_and_remove(&mut self) -> bool {
        let Some(a) = self.attached.take() else { return false };
        match std::fs::remove_file(a.path()) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false, // a clean exit removed it
            Err(e) => {
                tracing::debug!(path = %a.path().display(), "cannot remove region: {e}");
                false
            }
        }
    }
}

impl Collector {
    /// Lets go of running processes whose region file was removed more than a second ago (its
    /// figures are no longer anyone's to read, and a removed copy must not count on).
    pub(super) fn let_go_of_unlinked(&mut self, monotonic_ns: u64) {
        let mut gone = Vec::new();
        for (&key, p) in &mut self.procs {
            let Source::Region(r) = &mut p.source else { continue };
            let unlinked = p.exited_at_ns.is_none() && r.attached.as_ref().is_some_and(Attached::is_unlinked);
            match (unlinked, r.unlinked_since) {
                (false, _) => r.unlinked_since = None,
                (true, None) => r.unlinked_since = Some(monotonic_ns),
                (true, Some(t)) if monotonic_ns.saturating_sub(t) >= UNLINKED_GRACE_NS => gone.push(key),
                (true, Some(_)) => {}
            }
        }
        for key in gone {
            if let Some(p) = self.procs.get(&key) {
                tracing::info!(
                    pid = p.view.id.pid,
                    "region file removed while its process runs; no longer followed"
                );
            }
            self.forget_region_process(key);
        }
    }

    /// Attaches to region files not seen before.
    pub fn discover(&mut self) {
        let entries = match std::fs::read_dir(&self.cfg.region_dir) {
            Ok(e) => e,
            Err(_) => return,
        };
        let mut not_permitted = 0;
        let mut present: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
        // Regions followed per user: a user's processes are bounded, and so are its regions.
        let mut per_user: HashMap<u32, usize> = HashMap::new();
        for p in self.procs.values() {
            if matches!(&p.source, Source::Region(r) if r.attached.is_some()) {
                *per_user.entry(p.view.id.uid).or_default() += 1;
            }
        }
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != ttmem_region::REGION_EXTENSION)
                || self.regions.by_path.contains_key(&path)
            {
                continue;
            }
            if self.regions.refused.contains_key(&path) {
                present.insert(path.clone());
            }
            let meta = entry.metadata().ok();
            let mtime = meta.as_ref().and_then(mtime);
            if let Some((seen, _)) = self.regions.refused.get(&path)
                && *seen == mtime
            {
                continue; // refused before and unchanged since
            }
            let owner = meta.as_ref().map_or(0, std::os::unix::fs::MetadataExt::uid);
            let cap = self.cfg.max_regions_per_user;
            if owner != 0 && per_user.get(&owner).copied().unwrap_or(0) >= cap {
                if self.regions.may_warn() {
                    tracing::warn!(path = %path.display(), uid = owner, "refusing region: its user has {cap} already");
                }
                self.stats.regions_refused += 1;
                present.insert(path.clone());
                let reason = format!("its user (uid {owner}) has {cap} regions followed already");
                // No time stamp: looked at again at the next listing, when the user may have fewer.
                self.regions.refused.insert(path, (None, reason));
                self.generation += 1;
                continue;
            }
            match Attached::open(&path) {
                Ok(a) => {
                    *per_user.entry(a.header().uid).or_default() += 1;
                    self.attach(path, a)
                }
                Err(RegionError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(RegionError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => not_permitted += 1,
                // Still being created: look again at the next tick (creation raises no further
                // inotify event).
                Err(e) if e.is_transient(&path) => self.rescan_requested = true,
                Err(e) => {
                    if self.regions.may_warn() {
                        tracing::warn!(path = %path.display(), "refusing region: {e}");
                    }
                    self.stats.regions_refused += 1;
                    present.insert(path.clone());
                    self.regions.refused.insert(path, (mtime, e.to_string()));
                    self.generation += 1;
                }
            }
        }
        if self.regions.not_permitted != not_permitted {
            self.generation += 1;
        }
        self.regions.not_permitted = not_permitted;
        // Refused files that are gone are forgotten: the set cannot grow without bound.
        let before = self.regions.refused.len();
        self.regions.refused.retain(|p, _| present.contains(p));
        if self.regions.refused.len() != before {
            self.generation += 1;
        }
    }

    fn attach(&mut self, path: PathBuf, attached: Attached) {
        let h = attached.header().clone();
        let missed = attached.missed_at_open();
        let liveness = ttmem_scan::liveness(&h, ttmem_scan::current_boot_id());
        let view = ProcessView {
            id: ProcessIdentity {
                pid: h.pid,
                start_time: h.start_time,
                uid: h.uid,
                user: ttmem_scan::user_name(h.uid).unwrap_or_else(|| h.uid.to_string()),
                name: h.exe.clone(),
                cmdline: h.cmdline.clone(),
            },
            started_unix_ns: h.clock_realtime_ns,
            state: match liveness {
                Liveness::Running => ProcState::Running,
                Liveness::Exited => ProcState::Exited,
            },
            source: ttmem_model::SourceKind::Region,
            origin: path.display().to_string(),
            devices: Vec::new(),
            events: ttmem_model::EventStats {
                ring_capacity: h.geometry.ring_events,
                ..Default::default()
            },
            rejected: 0,
            holds: Vec::new(),
            updated_unix_ns: None,
        };
        tracing::info!(pid = h.pid, exe = %h.exe, path = %path.display(), "attached region");
        self.regions.refused.remove(&path);
        self.stats.regions_attached += 1;
        let source = RegionSource {
            clock: TickClock::for_header(&h),
            attached: Some(attached),
            path: path.clone(),
            devices: Vec::new(),
            dirty: true,
            header: h.clone(),
            unlinked_since: None,
            carry: Vec::new(),
            pace: DrainPace::default(),
        };
        let pidfd = lifecycle::open_pidfd(h.pid, h.start_time);
        let key = self.add_process(view, Source::Region(Box::new(source)), pidfd);
        if missed > 0 {
            // Overwritten before this reader could read them: lost to it, though nothing it
            // lists depends on them.
            self.ledger.missed(key, missed);
            self.stats.events_lost = self.stats.events_lost.saturating_add(missed);
        }
        self.regions.by_path.insert(path, key);
    }

    /// Drains every attached region into the ledger and refreshes changed counters.
    pub fn drain_all(&mut self, monotonic_ns: u64) {
        let keys: Vec<ProcKey> = self.procs.keys().copied().collect();
        for key in keys {
            self.drain_region(key, monotonic_ns);
        }
    }

    /// The regions due for a drain at `monotonic_ns` (see [`DrainPace`]).
    pub fn due_regions(&self, monotonic_ns: u64) -> Vec<ProcKey> {
        self.procs
            .iter()
            .filter(|(_, p)| matches!(&p.source, Source::Region(r) if r.attached.is_some() && r.pace.next_ns <= monotonic_ns))
            .map(|(&k, _)| k)
            .collect()
    }

    /// Drains the regions whose pace says they are due.
    pub fn drain_due(&mut self, monotonic_ns: u64) {
        for key in self.due_regions(monotonic_ns) {
            self.drain_region(key, monotonic_ns);
        }
    }

    /// Drains one process's region, charging its pace with the time that took. A region that
    /// can no longer be read (its writer broke it, or it outgrew what a reader reads) is let go
    /// of and listed as refused, with the reason.
    pub fn drain_region(&mut self, key: ProcKey, monotonic_ns: u64) {
        let started = std::time::Instant::now();
        let result = self.drain_one(key, monotonic_ns);
        let spent_ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        match result {
            Ok(()) => {
                if let Some(Source::Region(r)) = self.procs.get_mut(&key).map(|p| &mut p.source) {
                    r.pace.charge(spent_ns, monotonic_ns);
                }
            }
            Err(e) => {
                tracing::warn!(process = key.0, "region became unreadable, no longer followed: {e}");
                let path = match self.procs.get(&key).map(|p| &p.source) {
                    Some(Source::Region(r)) => r.path.clone(),
                    _ => return,
                };
                self.forget_region_process(key);
                if let Ok(meta) = std::fs::metadata(&path) {
                    self.stats.regions_refused += 1;
                    self.regions.refused.insert(path, (mtime(&meta), e.to_string()));
                }
            }
        }
    }

    /// Forgets a process whose region is no longer followed: its figures are no longer anyone's.
    fn forget_region_process(&mut self, key: ProcKey) {
        if let Some(p) = self.procs.remove(&key) {
            if let Source::Region(r) = &p.source {
                self.regions.forget(r.path());
            }
            self.history.remove_process(p.view.id.pid, p.view.id.start_time);
        }
        self.ledger.remove_process(key);
        self.generation += 1;
    }

    /// Monotonic ns when the next region falls due for a drain (None: none is attached).
    pub fn next_drain_ns(&self) -> Option<u64> {
        self.procs
            .values()
            .filter_map(|p| match &p.source {
                Source::Region(r) if r.attached.is_some() => Some(r.pace.next_ns),
                _ => None,
            })
            .min()
    }

    /// Drains one process's region (nothing for other sources).
    pub(super) fn drain_one(&mut self, key: ProcKey, monotonic_ns: u64) -> Result<(), RegionError> {
        let Some(p) = self.procs.get_mut(&key) else {
            return Ok(());
        };
        let Source::Region(r) = &mut p.source else {
            return Ok(());
        };
        let Some(a) = r.attached.as_mut() else { return Ok(()) };
        let mut new_devices = Vec::new();
        for (index, d) in a.new_devices()? {
            new_devices.push((index, d));
        }
        for (index, d) in new_devices {
            let identity = DeviceIdentity::of(r.header.pid, index, &d);
            let dk = self.ledger.add_device(d);
            self.identities.insert(dk, identity);
            if r.devices.len() <= index as usize {
                r.devices.resize(index as usize + 1, None);
            }
            r.devices[index as usize] = Some(dk);
            r.dirty = true;
        }
        let tags = a.new_tags()?;
        if !tags.is_empty() {
            self.ledger.set_tags(key, tags);
        }
        // Drain in rounds small enough that each round's events stay in the CPU cache through
        // copying, conversion, ordering and the ledger, up to a bound per tick. Events are
        // converted as the region yields them: only alloc and free of a published device
        // reach the ledger.
        //
        // Shards are merged by time: a thread may free what another allocated, so a free must
        // never reach the ledger before its allocation. A shard that filled its round may hold
        // older events than another shard's latest, so only events up to the earliest such
        // shard's last time (the frontier) are applied; later ones wait for the next round
        // (or the next drain) in `carry`. Events of different threads within one clock tick
        // cannot be ordered; the ledger resolves a free that comes before its allocation in
        // the same tick.
        let mut s = ttmem_scan::attach::DrainStats::default();
        let mut drained = 0u64;
        let mut events: Vec<Event> = std::mem::take(&mut self.events);
        events.clear();
        events.append(&mut r.carry);
        // Per shard: (events this round, the last one's time, events this drain).
        let mut per_shard = std::mem::take(&mut self.shard_scratch);
        per_shard.clear();
        per_shard.resize(r.header.geometry.max_shards as usize, (0, 0, 0));
        loop {
            let (devices, clock) = (&r.devices, r.clock);
            for x in per_shard.iter_mut() {
                x.0 = 0;
            }
            let round = a.drain_with(ROUND_EVENTS_PER_SHARD, |shard, e| {
                // Every event counts towards its shard's round, converted or not.
                let time_ns = clock.to_ns(e.ticks);
                if let Some(x) = per_shard.get_mut(shard as usize) {
                    *x = (x.0 + 1, time_ns, x.2 + 1);
                }
                let kind = match e.kind {
                    ttmem_region::EventKind::Alloc => EventKind::Alloc,
                    ttmem_region::EventKind::Free => EventKind::Free,
                    _ => return,
                };
                let Some(Some(device)) = devices.get(e.device as usize) else {
                    return;
                };
                events.push(Event {
                    kind,
                    device: *device,
                    category: e.category,
                    address: e.address,
                    size: e.size,
                    time_ns,
                    tag: e.tag,
                    stream: shard as u16,
                });
            });
            let round = match round {
                Ok(r) => r,
                Err(e) => {
                    r.carry = events;
                    self.shard_scratch = per_shard;
                    return Err(e);
                }
            };
            s.absorb(round);
            drained += round.events + round.lost;
            let more = round.events + round.lost > 0 && drained < MAX_EVENTS_PER_SHARD;
            // A loss is reported before the events after it: every lost event was written
            // before the first event its shard yielded after the gap (or before this drain),
            // and the ledger drops every allocation made by then (it may have been freed by one
            // of them).
            if round.lost > 0 || round.gap_open {
                let after_gap = round.resync_ticks.map(|t| clock.to_ns(t));
                let until = if round.gap_open {
                    after_gap.unwrap_or(0).max(monotonic_ns)
                } else {
                    after_gap.unwrap_or(monotonic_ns)
                };
                self.ledger.lost_until(key, round.lost, until);
            }
            // A stable sort keeps each shard's own order (skipped when one shard wrote it all).
            if !events.is_sorted_by_key(|e| e.time_ns) {
                events.sort_by_key(|e| e.time_ns);
            }
            let frontier = per_shard
                .iter()
                .filter(|(n, _, _)| *n >= ROUND_EVENTS_PER_SHARD)
                .map(|&(_, t, _)| t)
                .min()
                .unwrap_or(u64::MAX);
            // Up to the frontier itself: a full shard may hold more events stamped with its
            // last time, and the ledger keeps such ties open across batches.
            let ready = events.partition_point(|e| e.time_ns <= frontier);
            self.ledger.apply_batch(key, &events[..ready]);
            self.stats.events += ready as u64;
            r.carry.extend_from_slice(&events[ready..]);
            events.clear();
            if !more {
                break;
            }
            events.append(&mut r.carry);
        }
        self.events = events;
        let ring = r.header.geometry.ring_events as u64;
        let busiest = per_shard.iter().map(|x| x.2).max().unwrap_or(0);
        self.shard_scratch = per_shard;
        r.pace.update(
            busiest,
            s.lost > 0,
            ring,
            monotonic_ns,
            self.cfg.drain_interval.as_nanos() as u64,
        );
        self.stats.events_lost = self.stats.events_lost.saturating_add(s.lost);
        self.stats.anomalies = self.stats.anomalies.saturating_add(s.anomalies);
        // Counters change with every event, including the ones lost to overflow.
        if s.events > 0 || s.lost > 0 || s.anomalies > 0 || r.dirty {
            let region = a.refresh()?;
            let v = &mut p.view;
            v.events.written = region.events_written();
            // Events the daemon itself lost (its rings overflowed between drains) count as
            // lost: the process's detail is incomplete, its totals (from the counters) are not.
            let daemon_lost = self.ledger.completeness(key).map_or(0, |c| c.lost);
            v.events.lost = region.events_lost().max(daemon_lost);
            v.rejected = region.rejected();
            v.devices = region.devices;
            r.header = region.header;
            r.dirty = false;
            self.generation += 1;
        }
        Ok(())
    }
}
