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
            if let Some(p) = self.procs.remove(&key) {
                tracing::info!(
                    pid = p.view.id.pid,
                    "region file removed while its process runs; no longer followed"
                );
                if let Source::Region(r) = &p.source {
                    self.regions.forget(r.path());
                }
                self.history.remove_process(p.view.id.pid, p.view.id.start_time);
            }
            self.ledger.remove_process(key);
            self.generation += 1;
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
            let mtime = entry.metadata().ok().and_then(|m| mtime(&m));
            if let Some((seen, _)) = self.regions.refused.get(&path)
                && *seen == mtime
            {
                continue; // refused before and unchanged since
            }
            match Attached::open(&path) {
                Ok(a) => self.attach(path, a),
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
        };
        let pidfd = lifecycle::open_pidfd(h.pid, h.start_time);
        let key = self.add_process(view, Source::Region(Box::new(source)), pidfd);
        self.regions.by_path.insert(path, key);
    }

    /// Drains every attached region into the ledger and refreshes changed counters.
    pub fn drain_all(&mut self) {
        let keys: Vec<ProcKey> = self.procs.keys().copied().collect();
        for key in keys {
            if let Err(e) = self.drain_one(key) {
                tracing::warn!(process = key.0, "region became unreadable: {e}");
                if let Some(Source::Region(r)) = self.procs.get_mut(&key).map(|p| &mut p.source) {
                    r.attached = None;
                }
            }
        }
    }

    /// Drains one process's region (nothing for other sources).
    pub(super) fn drain_one(&mut self, key: ProcKey) -> Result<(), RegionError> {
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
        let mut s = ttmem_scan::attach::DrainStats::default();
        let mut drained = 0u64;
        let mut events: Vec<Event> = std::mem::take(&mut self.events);
        loop {
            events.clear();
            let (devices, clock) = (&r.devices, r.clock);
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
            });
            let round = match round {
                Ok(r) => r,
                Err(e) => {
                    self.events = events;
                    return Err(e);
                }
            };
            s.events += round.events;
            s.lost = s.lost.saturating_add(round.lost);
            s.anomalies = s.anomalies.saturating_add(round.anomalies);
            // Merge the shards' events by time; a stable sort keeps each shard's own order (and
            // is skipped when the round is already in order, as when one shard wrote it all).
            if !in_order {
                events.sort_by_key(|e| e.time_ns);
            }
            self.ledger.apply_batch(key, &events);
            self.stats.events += events.len() as u64;
            drained += round.events + round.lost;
            if round.events + round.lost == 0 || drained >= MAX_EVENTS_PER_SHARD {
                break;
            }
        }
        self.events = events;
        self.stats.events_lost = self.stats.events_lost.saturating_add(s.lost);
        self.stats.anomalies = self.stats.anomalies.saturating_add(s.anomalies);
        if s.lost > 0 {
            self.ledger.mark_lost(key, s.lost);
        }
        // Counters change with every event, including the ones lost to overflow.
        if s.events > 0 || s.lost > 0 || s.anomalies > 0 || r.dirty {
            let region = a.read()?;
            let v = &mut p.view;
            v.events.written = region.events_written();
            // Events the daemon itself lost (its rings overflowed between drains) count as
            // lost: the process's detail is incomplete, its totals (from the counters) are not.
            let daemon_lost = self.ledger.completeness(key).map_or(0, |(lost, _)| lost);
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
