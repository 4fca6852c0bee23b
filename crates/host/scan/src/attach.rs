//! Incremental reading of one region, for a reader that stays attached (the daemon): new
//! devices, new tags, exact counters, and the rings drained event by event.
//!
//! Reads are positional (`pread`), never a mapping: a hostile writer that truncates or rewrites
//! its file cannot fault the reader, only make its own data be refused. An event is accepted
//! only if its sequence word matches and the writer cannot have begun overwriting it while it
//! was copied (checked by re-reading the shard's head afterwards).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ttmem_region::decode::{self, Event, Header};
use ttmem_region::{EVENT_SIZE, SHARD_HEADER_SIZE, STRINGS_HEADER_SIZE};

use crate::{DeviceCounters, RegionError, ScanOptions, read_at};

/// Events copied and decoded at a time: 128 KiB, so a chunk stays in the CPU cache between
/// the copy and the decoding.
const CHUNK_EVENTS: usize = 2048;

/// What one drain pass found.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Events accepted.
    pub events: u64,
    /// Events that were overwritten before they could be read.
    pub lost: u64,
    /// Times a shard's head went backwards or jumped impossibly (a corrupt or hostile writer);
    /// the reader resynchronizes at the new head.
    pub anomalies: u64,
    /// After a loss or an anomaly: the latest ticks among the first events that shards yielded
    /// after their gaps. Every lost event was written before it.
    pub resync_ticks: Option<u64>,
    /// A shard lost events (or misbehaved) and yielded none after: its gap reaches the present,
    /// so only the time of this drain bounds the lost events.
    pub gap_open: bool,
}

impl DrainStats {
    /// Adds another pass's figures.
    pub fn absorb(&mut self, other: DrainStats) {
        self.events += other.events;
        self.lost = self.lost.saturating_add(other.lost);
        self.anomalies = self.anomalies.saturating_add(other.anomalies);
        self.resync_ticks = self.resync_ticks.max(other.resync_ticks);
        self.gap_open |= other.gap_open;
    }
}

/// A region the reader follows.
pub struct Attached {
    path: PathBuf,
    file: File,
    header: Header,
    /// Next event index to read, per shard.
    next: Vec<u64>,
    strings_seen: u64,
    devices_seen: u32,
    buf: Vec<u8>,
    missed_at_open: u64,
}

impl Attached {
    /// Opens and validates a region. Draining starts at the oldest event the rings still hold,
    /// so a reader that attaches late (or restarts) rebuilds what the rings remember.
    pub fn open(path: &Path) -> Result<Self, RegionError> {
        let file = crate::open_region(path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        let head = read_at(&file, 0, ttmem_region::HEADER_SIZE.min(len as usize))?;
        let header = decode::decode_header(&head, len)?;
        if header.state == ttmem_region::RegionState::Creating {
            return Err(RegionError::Creating);
        }
        // The same identity rule as the one-shot reader: the daemon must not be easier to fool.
        crate::check_identity(&meta, &header, path)?;
        let mut a = Attached {
            path: path.to_owned(),
            file,
            next: vec![0; header.geometry.max_shards as usize],
            header,
            strings_seen: 0,
            devices_seen: 0,
            buf: Vec::new(),
            missed_at_open: 0,
        };
        let cap = a.header.geometry.ring_events as u64;
        for s in 0..a.header.geometry.max_shards {
            let head = a.shard_head(s)?;
            a.next[s as usize] = head.saturating_sub(cap);
            a.missed_at_open = a.missed_at_open.saturating_add(head.saturating_sub(cap));
        }
        Ok(a)
    }

    /// Events the rings had already overwritten when the reader attached: the reader's detail
    /// lacks them, but nothing it reads afterwards depends on them.
    pub fn missed_at_open(&self) -> u64 {
        self.missed_at_open
    }

    /// Whether the file was removed (no name points to it any more): a writer's clean exit, or
    /// a copy deleted by its owner.
    pub fn is_unlinked(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// The header as read at open (geometry and identity never change).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shard_head(&self, s: u32) -> Result<u64, RegionError> {
        let b = read_at(&self.file, self.header.geometry.shard_offset(s), SHARD_HEADER_SIZE)?;
        Ok(decode::decode_shard(&b)?.head)
    }

    fn seq_now(&self, s: u32, index: u64) -> Result<u64, RegionError> {
        let b = read_at(&self.file, self.header.geometry.event_offset(s, index), 8)?;
        Ok(u64::from_le_bytes(b[..8].try_into().expect("8 bytes")))
    }

    /// Devices published since the last call.
    pub fn new_devices(&mut self) -> Result<Vec<(u32, decode::Device)>, RegionError> {
        let g = self.header.geometry;
        let h = read_at(&self.file, 0, ttmem_region::HEADER_SIZE)?;
        let n = u32::from_le_bytes(h[176..180].try_into().expect("4 bytes")).min(g.max_devices);
        let mut out = Vec::new();
        for i in self.devices_seen..n {
            let b = read_at(&self.file, g.device_offset(i), ttmem_region::DEVICE_ENTRY_SIZE)?;
            match decode::decode_device(&b)? {
                Some(d) => out.push((i, d)),
                None => break, // not published yet: try again next time
            }
            self.devices_seen = i + 1;
        }
        Ok(out)
    }

    /// Tags interned since the last call.
    pub fn new_tags(&mut self) -> Result<Vec<(u32, String)>, RegionError> {
        let g = self.header.geometry;
        let header = read_at(&self.file, g.strings_offset, STRINGS_HEADER_SIZE)?;
        let used = u64::from_le_bytes(header[..8].try_into().expect("8 bytes")).min(g.strings_bytes);
        if used <= self.strings_seen {
            return Ok(Vec::new());
        }
        // Only the part not read yet: a writer adding a tag at a time costs its own bytes, not
        // the whole table again.
        let new = read_at(
            &self.file,
            g.strings_data_offset() + self.strings_seen,
            (used - self.strings_seen) as usize,
        )?;
        let (entries, consumed) = decode::string_entries(&new, self.strings_seen);
        self.strings_seen += consumed as u64;
        Ok(entries)
    }

    /// The whole region as `ttmem ps` reads it (exact counters, shards, header), through the
    /// open file: it stays readable after its writer removed it at a clean exit.
    pub fn read(&self) -> Result<crate::ProcessRegion, RegionError> {
        crate::read_open_region(&self.file, &self.path, ScanOptions::default(), None)
    }

    /// The exact counters and the shards' control words, read again: what changes while the
    /// writer runs. Cheaper than [`Attached::read`], which a drain may call every millisecond:
    /// no string table, and no identity check against `/proc`, since the identity was checked
    /// at open and a header whose identity or geometry changed since is refused.
    pub fn refresh(&self) -> Result<crate::RegionCounters, RegionError> {
        let len = self.file.metadata()?.len();
        let head = read_at(&self.file, 0, ttmem_region::HEADER_SIZE.min(len as usize))?;
        let header = decode::decode_header(&head, len)?;
        let identity = |h: &Header| (h.uid, h.pid, h.start_time, h.boot_id, h.geometry);
        if identity(&header) != identity(&self.header) {
            return Err(RegionError::IdentityChanged);
        }
        crate::read_counters(&self.file, header)
    }

    /// The exact counters of every published device.
    pub fn counters(&self) -> Result<Vec<DeviceCounters>, RegionError> {
        self.read().map(|r| r.devices)
    }

    /// Appends new events (at most `max_per_shard` per shard) to `out`, with their shard.
    pub fn drain(&mut self, max_per_shard: u64, out: &mut Vec<(u32, Event)>) -> Result<DrainStats, RegionError> {
        self.drain_with(max_per_shard, |s, e| out.push((s, *e)))
    }

    /// Hands each new event (at most `max_per_shard` per shard) to `sink` with its shard, shard
    /// by shard, each shard's events in order. The daemon's drain: a caller that converts events
    /// as they come needs no intermediate buffer.
    pub fn drain_with(
        &mut self,
        max_per_shard: u64,
        mut sink: impl FnMut(u32, &Event),
    ) -> Result<DrainStats, RegionError> {
        let g = self.header.geometry;
        let cap = g.ring_events as u64;
        let shared = g.max_shards - 1;
        let mut stats = DrainStats::default();
        let table = read_at(&self.file, g.shards_offset, g.max_shards as usize * SHARD_HEADER_SIZE)?;
        for s in 0..g.max_shards {
            let head = decode::decode_shard(&table[s as usize * SHARD_HEADER_SIZE..])?.head;
            let mut next = self.next[s as usize];
            if head < next {
                stats.anomalies += 1;
                stats.gap_open = true;
                self.next[s as usize] = head;
                continue;
            }
            // Whether this shard lost events that no accepted event has followed yet.
            let mut gap = false;
            if head - next > cap {
                stats.lost = stats.lost.saturating_add(head - next - cap);
                next = head - cap;
                gap = true;
            }
            let end = head.min(next.saturating_add(max_per_shard));
            if end == next {
                self.next[s as usize] = next;
                stats.gap_open |= gap;
                continue;
            }
            // Copy [next, end) in chunks small enough to stay in the CPU cache while they are
            // decoded, each in at most two contiguous reads (the ring may wrap).
            let mut index = next;
            'chunks: while index < end {
                let count = ((end - index) as usize).min(CHUNK_EVENTS);
                self.buf.resize(count * EVENT_SIZE, 0);
                let first_slot = (index % cap) as usize;
                let first = count.min(cap as usize - first_slot);
                self.file
                    .read_exact_at(&mut self.buf[..first * EVENT_SIZE], g.event_offset(s, index))
                    .map_err(io_changed(&self.file))?;
                if first < count {
                    self.file
                        .read_exact_at(&mut self.buf[first * EVENT_SIZE..], g.ring_offset(s))
                        .map_err(io_changed(&self.file))?;
                }
                // The writer overwrites slot `i` when it writes event `i + cap`. Re-reading the
                // head after the copy tells which records may have changed under it: those
                // below `head_after - cap` certainly were (lost); the one at `head_after - cap`
                // may be being rewritten, so its sequence word is read again: the writer zeroes
                // it before touching any field, so an unchanged word proves the copy
                // consistent. Every later record is stable. Indices come from the file: no
                // arithmetic on them may overflow.
                let head_after = self.shard_head(s)?;
                let rewriting = head_after.checked_sub(cap);
                for rec in self.buf.chunks_exact(EVENT_SIZE) {
                    let this = index;
                    index = index.wrapping_add(1);
                    let stable = match rewriting {
                        Some(r) if this < r => false,
                        Some(r) if this == r => self.seq_now(s, this)? == this.wrapping_add(1),
                        _ => true,
                    };
                    if !stable {
                        stats.lost = stats.lost.saturating_add(1);
                        gap = true;
                        continue;
                    }
                    match decode::decode_event(rec, this) {
                        Some(e) => {
                            if gap {
                                stats.resync_ticks = stats.resync_ticks.max(Some(e.ticks));
                                gap = false;
                            }
                            sink(s, &e);
                            stats.events += 1;
                        }
                        // Not written yet by a thread of the shared shard (which claims slots
                        // before filling them): read it next time.
                        None if s == shared && decode::event_seq(rec) == 0 && rewriting.is_none_or(|r| this > r) => {
                            index = this;
                            break 'chunks;
                        }
                        None => {
                            stats.lost = stats.lost.saturating_add(1);
                            gap = true;
                        }
                    }
                }
            }
            stats.gap_open |= gap;
            self.next[s as usize] = index;
        }
        Ok(stats)
    }

    /// Event indices the reader will read next, per shard (for tests and statistics).
    pub fn positions(&self) -> &[u64] {
        &self.next
    }
}

fn io_changed(file: &File) -> impl Fn(std::io::Error) -> RegionError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            RegionError::Changed {
                now: file.metadata().map(|m| m.len()).unwrap_or(0),
            }
        } else {
            e.into()
        }
    }
}

/// Converts a region's event ticks to `CLOCK_MONOTONIC` nanoseconds.
#[derive(Copy, Clone, Debug)]
pub struct TickClock {
    tsc: bool,
    ticks0: u64,
    mono0: u64,
    /// Nanoseconds per tick, as a 32.32 fixed-point number (below `100 << 32`).
    ns_per_tick_fp: u64,
}

impl TickClock {
    /// Calibrates for a region: monotonic ns pass through; TSC ticks are converted with the
    /// header's (TSC, monotonic) pair and one taken now (same boot, constant TSC).
    pub fn for_header(h: &Header) -> Self {
        let tsc = h.flags & ttmem_region::FLAG_CLOCK_TSC != 0;
        let mut c = TickClock {
            tsc,
            ticks0: h.clock_ticks,
            mono0: h.clock_monotonic_ns,
            ns_per_tick_fp: 1 << 32,
        };
        if tsc {
            let (t1, m1) = now_tsc_and_mono();
            let dt = t1.saturating_sub(h.clock_ticks);
            let dm = m1.saturating_sub(h.clock_monotonic_ns);
            // The header is untrusted: accept only a physical rate (10 MHz to 100 GHz ticks).
            if dt > 0 && dm > 0 {
                let fp = ((dm as u128) << 32) / dt as u128;
                if ((1u128 << 32) / 100..=(100u128 << 32)).contains(&fp) {
                    c.ns_per_tick_fp = fp as u64;
                }
            }
        }
        c
    }

    /// Ticks to monotonic ns, saturating at both ends (ticks come from untrusted regions).
    #[inline]
    pub fn to_ns(&self, ticks: u64) -> u64 {
        if !self.tsc {
            return ticks;
        }
        // One widening multiply: a 64-bit tick distance times a rate below 2^39 fits in u128.
        let scale = |dt: u64| ((dt as u128 * self.ns_per_tick_fp as u128) >> 32).min(u64::MAX as u128) as u64;
        if ticks >= self.ticks0 {
            self.mono0.saturating_add(scale(ticks - self.ticks0))
        } else {
            self.mono0.saturating_sub(scale(self.ticks0 - ticks))
        }
    }
}

fn now_tsc_and_mono() -> (u64, u64) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: rdtsc is available on every x86-64 CPU and has no memory effects.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let tsc = monotonic_ns;
    let t0 = tsc();
    let m = monotonic_ns();
    let t1 = tsc();
    (t0 / 2 + t1 / 2, m)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}
