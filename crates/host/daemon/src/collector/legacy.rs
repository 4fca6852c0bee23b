//! The legacy allocation-server protocol as a source of the collector: each client process (by
//! its peer credentials) becomes a process like a region's, with exact counters from its
//! [`Book`] and per-buffer detail in the ledger, so `ps`, the API, history, lifecycle and fit
//! see it. Replies to QUERY and DEVICE_INFO_QUERY come from the daemon's device table.
//!
//! Device ids: a legacy device id d names the d-th chip regions declare (legacy devices sort
//! after them, so that is its `ps` id), else a `tt-legacy` device of its own. The first message
//! that names an id fixes what it means for the daemon's lifetime, so one client's ALLOC, FREE
//! and QUERY always agree even when devices appear later and the table is renumbered; two ids
//! never name the same chip.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use hashbrown::HashMap;
use serde::Serialize;
use ttmem_ledger::{DeviceKey, Event, EventKind, ProcKey};
use ttmem_legacy::book::{Book, BookStats, Category, Effect};
use ttmem_legacy::{Message, MsgType, Version};
use ttmem_region::decode;
use ttmem_scan::{DeviceCounters, Liveness, ProcessRegion};

use super::{Collector, Proc, ledger_info, open_pidfd, unix_ns};

/// Who is on the other end of a connection (from `SO_PEERCRED`, never from the messages).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Process id in the daemon's pid namespace (0: not visible).
    pub pid: u32,
    /// User id.
    pub uid: u32,
}

/// Legacy-protocol statistics (`/api/v1/legacy`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LegacyStats {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections per detected version.
    pub connections_by_version: std::collections::BTreeMap<String, u64>,
    /// Connections closed because their stream could not be framed.
    pub closed_unframeable: u64,
    /// Connections closed because they buffered too many unread replies.
    pub closed_backlog: u64,
    /// Messages received.
    pub messages: u64,
    /// Messages per type name.
    pub messages_by_type: std::collections::BTreeMap<String, u64>,
    /// Messages whose padding was not zero (used anyway).
    pub padding_errors: u64,
    /// Messages ignored for an invalid field.
    pub invalid: u64,
    /// Messages whose process_id named another process than the peer (attributed to the peer).
    pub pid_mismatches: u64,
    /// State-changing messages from peers whose process could not be identified (ignored).
    pub unidentified: u64,
    /// Replies sent.
    pub replies: u64,
    /// Client processes seen.
    pub processes: u64,
    /// Semantics counters summed over every client process.
    pub book: BookStats,
}

/// A DUMP_REMAINING or DUMP_KERNELS answer, kept for the API.
#[derive(Clone, Debug, Serialize)]
pub struct Dump {
    /// `remaining` or `kernels`.
    pub kind: &'static str,
    /// Wall clock of the request, ns since the epoch.
    pub at_unix_ns: u64,
    /// The requesting process.
    pub requested_by: u32,
    /// Entries in total (the list below stops at [`MAX_DUMP_ENTRIES`]).
    pub total: usize,
    /// The entries.
    pub entries: Vec<DumpEntry>,
}

/// One live buffer or kernel in a dump.
#[derive(Clone, Debug, Serialize)]
pub struct DumpEntry {
    /// Owner.
    pub pid: u32,
    /// Device id as the client numbers it.
    pub device: i32,
    /// Buffer id, CB address or kernel id.
    pub id: u64,
    /// Category name.
    pub category: &'static str,
    /// Bytes.
    pub size: u64,
    /// References.
    pub refs: u32,
    /// Buffer type byte (kernel kind for kernels).
    pub kind: u8,
}

/// Entries a dump keeps for the API.
pub const MAX_DUMP_ENTRIES: usize = 10_000;
/// Entries a dump writes to the log.
const MAX_DUMP_LOG_LINES: usize = 200;
/// Dumps kept.
const MAX_DUMPS: usize = 8;

/// What a legacy device id resolved to.
#[derive(Clone)]
struct Resolved {
    /// The device as the process's view declares it (every legacy category present).
    device: decode::Device,
    /// Ledger device.
    ledger: DeviceKey,
    /// Ledger category index of each legacy category (None: the ledger's device lacks it).
    ledger_cat: [Option<u8>; 7],
    /// Index in `device.categories` of each legacy category.
    view_cat: [usize; 7],
}

/// Per client process.
pub(super) struct LegacyProc {
    book: Book,
    /// View device index per legacy device id.
    view_index: HashMap<i32, u32>,
}

/// Warnings per second at most; the rest are counted.
struct RateLimit {
    window: Instant,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    fn allow(&mut self) -> bool {
        if self.window.elapsed().as_secs() >= 1 {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "legacy socket: further warnings suppressed"
                );
            }
            self.window = Instant::now();
            self.used = 0;
            self.suppressed = 0;
        }
        self.used += 1;
        if self.used > 10 {
            self.suppressed += 1;
            return false;
        }
        true
    }
}

/// The collector's legacy state.
pub(super) struct LegacyHub {
    devices: HashMap<i32, Resolved>,
    procs: HashMap<(u32, u64), ProcKey>,
    stats: LegacyStats,
    dumps: VecDeque<Dump>,
    limit: RateLimit,
    /// Messages per type byte (13: any other byte).
    by_type: [u64; 14],
    /// Shown as the processes' region.
    pub(super) source: PathBuf,
}

impl LegacyHub {
    /// Forgets an expired client process.
    pub(super) fn forget(&mut self, pid: u32, start_time: u64) {
        self.procs.remove(&(pid, start_time));
    }
}

impl Default for LegacyHub {
    fn default() -> Self {
        LegacyHub {
            devices: HashMap::new(),
            procs: HashMap::new(),
            stats: LegacyStats::default(),
            dumps: VecDeque::new(),
            by_type: [0; 14],
            limit: RateLimit {
                window: Instant::now(),
                used: 0,
                suppressed: 0,
            },
            source: PathBuf::from("legacy socket"),
        }
    }
}

/// Architecture code of the protocol for an arch name.
fn arch_code(arch: &str) -> u32 {
    let a = arch.to_ascii_lowercase();
    if a.starts_with("grayskull") {
        1
    } else if a.starts_with("wormhole") {
        2
    } else if a.starts_with("blackhole") {
        3
    } else if a.starts_with("quasar") {
        4
    } else {
        0
    }
}

fn legacy_device(d: i32) -> decode::Device {
    decode::Device {
        kind: ttmem_region::DeviceKind::LegacySocket,
        hw_id: d as u64 + 1,
        logical_id: d,
        flags: 0,
        arch: "unknown".into(),
        name: format!("legacy:{d}"),
        categories: Category::ALL
            .iter()
            .map(|c| decode::Category {
                name: c.name().into(),
                capacity: 0,
                addr_base: 0,
                addr_end: 0,
                banks: 1,
                alignment: 0,
            })
            .collect(),
    }
}

/// Reads a short `/proc/<pid>/` file, bounded.
fn proc_text(pid: u32, file: &str) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/{file}")) {
        let _ = f.take(4096).read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out)
        .trim_end_matches(['\n', '\0'])
        .replace('\0', " ")
}

impl Collector {
    /// Sets how legacy processes name their source (the listener's path).
    pub fn set_legacy_source(&mut self, path: PathBuf) {
        self.legacy.source = path;
    }

    /// Legacy-protocol statistics.
    pub fn legacy_stats(&self) -> LegacyStats {
        let mut s = self.legacy.stats.clone();
        for (b, &n) in self.legacy.by_type.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = MsgType::from_u8(b as u8).map_or("OTHER", |k| k.name());
            *s.messages_by_type.entry(name.into()).or_default() += n;
        }
        s.book = BookStats::default();
        for p in self.procs.values() {
            if let Some(l) = &p.legacy {
                let b = l.book.stats();
                s.book.reallocs += b.reallocs;
                s.book.partial_frees += b.partial_frees;
                s.book.unknown_frees += b.unknown_frees;
                s.book.unknown_cb_frees += b.unknown_cb_frees;
                s.book.unknown_kernel_unloads += b.unknown_kernel_unloads;
                s.book.invalid += b.invalid;
                s.book.unknown_kernel_kinds += b.unknown_kernel_kinds;
            }
        }
        s
    }

    /// The latest DUMP_REMAINING and DUMP_KERNELS answers, oldest first.
    pub fn legacy_dumps(&self) -> Vec<Dump> {
        self.legacy.dumps.iter().cloned().collect()
    }

    /// Connection bookkeeping from the listener.
    pub fn legacy_connection(&mut self, event: ConnectionEvent) {
        let s = &mut self.legacy.stats;
        match event {
            ConnectionEvent::Accepted => {
                s.connections_accepted += 1;
                s.connections_open += 1;
            }
            ConnectionEvent::Refused => s.connections_refused += 1,
            ConnectionEvent::Detected(v) => *s.connections_by_version.entry(v.name().into()).or_default() += 1,
            ConnectionEvent::Closed { unframeable, backlog } => {
                s.connections_open = s.connections_open.saturating_sub(1);
                s.closed_unframeable += unframeable as u64;
                s.closed_backlog += backlog as u64;
            }
            ConnectionEvent::PaddingErrors(n) => s.padding_errors += n,
        }
    }

    /// Applies one connection's messages in order and appends the replies (in the connection's
    /// own layout) to `replies`.
    pub fn legacy_apply(&mut self, peer: Peer, version: Version, msgs: &[Message], now_ns: u64, replies: &mut Vec<u8>) {
        let mut events: Vec<Event> = Vec::new();
        let mut key: Option<ProcKey> = None;
        let mut changed = false;
        for m in msgs {
            self.legacy.stats.messages += 1;
            self.legacy.by_type[m.msg_type.min(13) as usize] += 1;
            if m.process_id != 0 && m.process_id as u32 != peer.pid {
                self.legacy.stats.pid_mismatches += 1;
                if self.legacy.limit.allow() {
                    tracing::warn!(
                        peer = peer.pid,
                        claimed = m.process_id,
                        "legacy message names process {} but comes from {}; attributed to the peer",
                        m.process_id,
                        peer.pid
                    );
                }
            }
            match m.kind() {
                Some(MsgType::Query) => {
                    self.legacy_flush(key, &mut events, &mut changed);
                    self.reply_query(m.device_id).encode_into(version, replies);
                    self.legacy.stats.replies += 1;
                }
                Some(MsgType::DeviceInfoQuery) => {
                    self.legacy_flush(key, &mut events, &mut changed);
                    self.reply_device_info(m.device_id).encode_into(version, replies);
                    self.legacy.stats.replies += 1;
                }
                Some(MsgType::DumpRemaining) => {
                    self.legacy_flush(key, &mut events, &mut changed);
                    self.dump(peer, false);
                }
                Some(MsgType::DumpKernels) => {
                    self.legacy_flush(key, &mut events, &mut changed);
                    self.dump(peer, true);
                }
                _ => {
                    let k = match key {
                        Some(k) => k,
                        None => match self.legacy_process(peer, m) {
                            Some(k) => {
                                key = Some(k);
                                k
                            }
                            None => continue,
                        },
                    };
                    self.legacy_message(k, m, now_ns, &mut events, &mut changed);
                }
            }
        }
        self.legacy_flush(key, &mut events, &mut changed);
    }

    /// The process of a peer, created on its first state-changing message.
    fn legacy_process(&mut self, peer: Peer, m: &Message) -> Option<ProcKey> {
        let start_time = ttmem_scan::start_time_of(peer.pid);
        let Some(start_time) = start_time else {
            self.legacy.stats.unidentified += 1;
            if self.legacy.limit.allow() {
                tracing::warn!(
                    pid = peer.pid,
                    "legacy client's process is not visible in /proc; its {} is ignored",
                    m.kind().map_or("message", |k| k.name())
                );
            }
            return None;
        };
        if let Some(&k) = self.legacy.procs.get(&(peer.pid, start_time))
            && self.procs.get(&k).is_some_and(|p| p.exited_at_ns.is_none())
        {
            return Some(k);
        }
        let geometry = ttmem_region::Geometry::new(1, 2, ttmem_region::limits::MIN_RING_EVENTS, 64).ok()?;
        let key = self.next_key;
        self.next_key += 1;
        let exe = proc_text(peer.pid, "comm");
        let header = decode::Header {
            geometry,
            state: ttmem_region::RegionState::Live,
            flags: 0,
            pid: peer.pid,
            uid: peer.uid,
            start_time,
            boot_id: ttmem_scan::current_boot_id().unwrap_or_default(),
            clock_realtime_ns: unix_ns(),
            clock_monotonic_ns: 0,
            clock_ticks: 0,
            clock_ticks_per_sec: 0,
            clock_resolution_us: 0,
            num_devices: 0,
            shards_used: 0,
            reader_pid: 0,
            lib_version: "legacy-socket".into(),
            exe: exe.clone(),
            cmdline: proc_text(peer.pid, "cmdline"),
        };
        self.ledger.add_process(key);
        let view = ProcessRegion {
            path: self.legacy.source.clone(),
            header: header.clone(),
            liveness: Liveness::Running,
            devices: Vec::new(),
            shards: Vec::new(),
            strings: Default::default(),
            events: Vec::new(),
        };
        self.procs.insert(
            key,
            Proc {
                attached: None,
                view,
                devices: Vec::new(),
                clock: ttmem_scan::attach::TickClock::for_header(&header),
                pidfd: open_pidfd(peer.pid, start_time),
                exited_at_ns: None,
                dirty: false,
                legacy: Some(Box::new(LegacyProc {
                    book: Book::default(),
                    view_index: HashMap::new(),
                })),
            },
        );
        self.legacy.procs.insert((peer.pid, start_time), key);
        self.legacy.stats.processes += 1;
        self.generation += 1;
        tracing::info!(pid = peer.pid, exe = %exe, "legacy client reporting");
        if let Some(r) = self.record_of(key, None) {
            self.records.push(r);
        }
        Some(key)
    }

    fn legacy_message(&mut self, key: ProcKey, m: &Message, now_ns: u64, events: &mut Vec<Event>, changed: &mut bool) {
        let Some(l) = self.procs.get_mut(&key).and_then(|p| p.legacy.as_mut()) else {
            return;
        };
        let effect = match l.book.apply(m) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(why) => {
                self.legacy.stats.invalid += 1;
                if self.legacy.limit.allow() {
                    tracing::warn!(
                        pid = self.procs.get(&key).map_or(0, |p| p.view.header.pid),
                        "legacy {} ignored: {why}",
                        m.kind().map_or("message", |k| k.name())
                    );
                }
                return;
            }
        };
        *changed = true;
        let (kind, device, category, id, size) = match effect {
            Effect::Alloc {
                device,
                category,
                id,
                size,
            } => (EventKind::Alloc, device, category, id, size),
            Effect::Free {
                device,
                category,
                id,
                size,
            } => (EventKind::Free, device, category, id, size),
        };
        let (ledger, ledger_cat) = match self.legacy.devices.get(&device) {
            Some(r) => (r.ledger, r.ledger_cat),
            None => {
                let r = self.resolve(device);
                (r.ledger, r.ledger_cat)
            }
        };
        let Some(cat) = ledger_cat[category as usize] else {
            return;
        };
        events.push(Event {
            kind,
            device: ledger,
            category: cat,
            address: id,
            size,
            time_ns: now_ns,
            tag: 0,
        });
    }

    /// What a legacy device id means (fixed at first use).
    fn resolve(&mut self, d: i32) -> Resolved {
        if let Some(r) = self.legacy.devices.get(&d) {
            return r.clone();
        }
        // The d-th chip that regions declare (legacy devices sort after them, so this is also
        // its `ps` id), unless another legacy id already names it: two ids never share a chip.
        let table = ttmem_report::device_table(self.procs.values().map(|p| &p.view));
        let taken: Vec<(u32, u64)> = self
            .legacy
            .devices
            .values()
            .map(|r| (r.device.kind.code(), r.device.hw_id))
            .collect();
        let mut device = usize::try_from(d)
            .ok()
            .and_then(|i| {
                table
                    .values()
                    .map(|(_, dev)| *dev)
                    .filter(|dev| dev.kind != ttmem_region::DeviceKind::LegacySocket)
                    .nth(i)
            })
            .filter(|dev| dev.hw_id != 0 && !taken.contains(&(dev.kind.code(), dev.hw_id)))
            .cloned()
            .unwrap_or_else(|| legacy_device(d));
        let ledger = self.ledger.add_device(ledger_info(&device));
        let ledger_names: Vec<String> = self
            .ledger
            .devices()
            .find(|(k, _, _)| *k == ledger)
            .map(|(_, info, _)| info.categories.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let mut ledger_cat = [None; 7];
        let mut view_cat = [0usize; 7];
        for c in Category::ALL {
            ledger_cat[c as usize] = ledger_names.iter().position(|n| n == c.name()).map(|i| i as u8);
            view_cat[c as usize] = match device.categories.iter().position(|x| x.name == c.name()) {
                Some(i) => i,
                None => {
                    // The chip does not declare it: the process still shows it.
                    device.categories.push(decode::Category {
                        name: c.name().into(),
                        capacity: 0,
                        addr_base: 0,
                        addr_end: 0,
                        banks: 1,
                        alignment: 0,
                    });
                    device.categories.len() - 1
                }
            };
        }
        let r = Resolved {
            device,
            ledger,
            ledger_cat,
            view_cat,
        };
        self.legacy.devices.insert(d, r.clone());
        r
    }

    /// Applies pending ledger events and refreshes the process's exact view.
    fn legacy_flush(&mut self, key: Option<ProcKey>, events: &mut Vec<Event>, changed: &mut bool) {
        let Some(key) = key else { return };
        if !events.is_empty() {
            self.ledger.apply_batch(key, events);
            self.stats.events += events.len() as u64;
            events.clear();
        }
        if !std::mem::take(changed) {
            return;
        }
        let ids: Vec<i32> = match self.procs.get(&key).and_then(|p| p.legacy.as_ref()) {
            Some(l) => l.book.counters().keys().copied().collect(),
            None => return,
        };
        let resolved: Vec<(i32, Resolved)> = ids.into_iter().map(|d| (d, self.resolve(d))).collect();
        let Some(p) = self.procs.get_mut(&key) else { return };
        let Some(l) = p.legacy.as_mut() else { return };
        for (d, r) in resolved {
            let counters = &l.book.counters()[&d];
            let index = match l.view_index.get(&d) {
                Some(&i) => i,
                None => {
                    let i = p.view.devices.len() as u32;
                    p.view.devices.push(DeviceCounters {
                        index: i,
                        device: r.device.clone(),
                        counters: vec![decode::Counters::default(); r.device.categories.len()],
                    });
                    l.view_index.insert(d, i);
                    p.view.header.num_devices = p.view.devices.len() as u32;
                    i
                }
            };
            let dc = &mut p.view.devices[index as usize];
            for c in Category::ALL {
                let src = counters[c as usize];
                if let Some(dst) = dc.counters.get_mut(r.view_cat[c as usize]) {
                    *dst = decode::Counters {
                        live_bytes: src.live_bytes.min(i64::MAX as u64) as i64,
                        live_count: src.live_count.min(i64::MAX as u64) as i64,
                        allocs: src.allocs,
                        frees: src.frees,
                        alloc_bytes: 0,
                        free_bytes: 0,
                        peak_bytes: src.peak_bytes.min(i64::MAX as u64) as i64,
                    };
                }
            }
        }
        self.generation += 1;
    }

    /// The device a legacy id names for a query (no new mapping is made): its fixed meaning,
    /// else the device with that id in the table.
    fn query_device(&self, d: i32) -> Option<ttmem_report::DeviceIdentity> {
        if let Some(r) = self.legacy.devices.get(&d) {
            return Some((r.device.kind.code(), r.device.hw_id, 0, 0));
        }
        let i = usize::try_from(d).ok()?;
        self.device_identities().get(i).copied()
    }

    /// Live bytes per category name of one device over running processes.
    fn device_usage(&self, id: ttmem_report::DeviceIdentity) -> (Option<decode::Device>, HashMap<String, u64>) {
        let mut used: HashMap<String, u64> = HashMap::new();
        let mut first = None;
        for p in self.procs.values() {
            for d in &p.view.devices {
                if ttmem_report::device_identity(p.view.header.pid, d.index, &d.device) != id {
                    continue;
                }
                if first.is_none() {
                    first = Some(d.device.clone());
                }
                if p.exited_at_ns.is_some() || p.view.liveness != Liveness::Running {
                    continue;
                }
                for (c, desc) in d.counters.iter().zip(&d.device.categories) {
                    let e = used.entry(desc.name.clone()).or_default();
                    *e = e.saturating_add(c.live_bytes.max(0) as u64);
                }
            }
        }
        (first, used)
    }

    fn reply_query(&self, d: i32) -> Message {
        let mut r = Message {
            msg_type: MsgType::Response as u8,
            device_id: d,
            ..Message::default()
        };
        if let Some(id) = self.query_device(d) {
            let (_, used) = self.device_usage(id);
            let get = |n: &str| used.get(n).copied().unwrap_or(0);
            r.dram_allocated = get("DRAM");
            r.l1_allocated = get("L1");
            r.l1_small_allocated = get("L1_SMALL");
            r.trace_allocated = get("TRACE");
            r.cb_allocated = get("CB");
            r.kernel_allocated = get("KERNEL");
        }
        r
    }

    fn reply_device_info(&self, d: i32) -> Message {
        let n = self
            .device_identities()
            .len()
            .max(self.legacy.devices.keys().map(|&k| k as usize + 1).max().unwrap_or(0)) as u32;
        let mut r = Message {
            msg_type: MsgType::DeviceInfoResponse as u8,
            device_id: d,
            num_devices: n,
            ..Message::default()
        };
        if d < 0 {
            r.is_available = (n > 0) as u32;
            return r;
        }
        let Some(dev) = self.query_device(d).and_then(|id| self.device_usage(id).0) else {
            return r;
        };
        let cat = |name: &str| dev.categories.iter().find(|c| c.name == name);
        let clamp = |x: u64| x.min(u32::MAX as u64) as u32;
        r.arch_type = arch_code(&dev.arch);
        r.is_available = 1;
        if let Some(c) = cat("DRAM") {
            r.total_dram_size = c.capacity;
            r.num_dram_channels = c.banks;
            r.dram_size_per_channel = clamp(c.capacity / c.banks.max(1) as u64);
        }
        if let Some(c) = cat("L1") {
            r.total_l1_size = c.capacity;
            r.l1_size_per_core = clamp(if c.addr_end > 0 {
                c.addr_end
            } else {
                c.capacity / c.banks.max(1) as u64
            });
        }
        r
    }

    fn dump(&mut self, peer: Peer, kernels: bool) {
        let mut entries = Vec::new();
        let mut total = 0usize;
        for p in self.procs.values() {
            let Some(l) = &p.legacy else { continue };
            if p.exited_at_ns.is_some() {
                continue;
            }
            let live: Box<dyn Iterator<Item = _>> = if kernels {
                Box::new(l.book.live_kernels())
            } else {
                Box::new(l.book.live_buffers())
            };
            for (&(device, id), b) in live {
                total += 1;
                if entries.len() < MAX_DUMP_ENTRIES {
                    entries.push(DumpEntry {
                        pid: p.view.header.pid,
                        device,
                        id,
                        category: b.category.name(),
                        size: b.size,
                        refs: b.refs,
                        kind: b.kind,
                    });
                }
            }
        }
        entries.sort_by_key(|e| (e.pid, e.device, e.category, e.id));
        let kind = if kernels { "kernels" } else { "remaining" };
        tracing::info!(
            requested_by = peer.pid,
            total,
            "legacy DUMP_{}: {total} live {}",
            kind.to_uppercase(),
            if kernels { "kernels" } else { "buffers" }
        );
        for e in entries.iter().take(MAX_DUMP_LOG_LINES) {
            tracing::info!(
                pid = e.pid,
                device = e.device,
                id = format_args!("{:#x}", e.id),
                category = e.category,
                size = e.size,
                refs = e.refs,
                kind = e.kind,
                "live"
            );
        }
        if total > MAX_DUMP_LOG_LINES {
            tracing::info!("... and {} more (GET /api/v1/legacy/dumps)", total - MAX_DUMP_LOG_LINES);
        }
        if self.legacy.dumps.len() == MAX_DUMPS {
            self.legacy.dumps.pop_front();
        }
        self.legacy.dumps.push_back(Dump {
            kind,
            at_unix_ns: unix_ns(),
            requested_by: peer.pid,
            total,
            entries,
        });
    }
}

/// What the listener tells the collector about connections.
#[derive(Copy, Clone, Debug)]
pub enum ConnectionEvent {
    /// A connection was accepted.
    Accepted,
    /// A connection was refused (limit).
    Refused,
    /// A connection's version was detected.
    Detected(Version),
    /// A connection closed.
    Closed {
        /// Because its stream could not be framed.
        unframeable: bool,
        /// Because it left too many replies unread.
        backlog: bool,
    },
    /// Messages with non-zero padding were framed.
    PaddingErrors(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::CollectorConfig;
    use proptest::prelude::*;

    fn collector(dir: &std::path::Path) -> Collector {
        Collector::new(
            CollectorConfig {
                region_dir: dir.into(),
                retention: std::time::Duration::from_secs(60),
                remove_dead_regions: false,
            },
            0,
        )
    }

    fn me() -> Peer {
        Peer {
            pid: std::process::id(),
            // SAFETY: getuid has no preconditions.
            uid: unsafe { libc::getuid() },
        }
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            prop::sample::select(vec![1u8, 1, 2, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 0, 200]),
            prop_oneof![6 => 0i32..3, 1 => -3i32..3000],
            prop_oneof![6 => 0u64..1 << 24, 1 => any::<u64>()],
            0u8..8,
            0u64..16,
            any::<i32>(),
        )
            .prop_map(|(t, device_id, size, buffer_type, id, process_id)| Message {
                msg_type: t,
                device_id,
                size,
                buffer_type,
                buffer_id: id,
                process_id,
                ..Message::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any messages, in any version, leave the ledger's per-buffer detail equal to the
        /// exact counters the process shows, and every reply the size of its version.
        #[test]
        fn any_messages_leave_the_ledger_and_the_counters_in_agreement(
            v in prop::sample::select(Version::ALL.to_vec()),
            batches in prop::collection::vec(prop::collection::vec(message(), 0..40), 1..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut c = collector(dir.path());
            let mut replies = Vec::new();
            let mut expected_replies = 0;
            for b in &batches {
                expected_replies += b.iter().filter(|m| matches!(m.kind(), Some(MsgType::Query | MsgType::DeviceInfoQuery))).count();
                c.legacy_apply(me(), v, b, 1, &mut replies);
            }
            prop_assert_eq!(replies.len(), expected_replies * v.size());
            let Some(&key) = c.legacy.procs.values().next() else { return Ok(()) };
            let p = &c.procs[&key];
            let l = p.legacy.as_ref().unwrap();
            prop_assert!(l.book.check_consistency().is_ok());
            // Ledger bytes per (device, category) equal the book's counters.
            let mut ledger: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
            for (d, cat, t) in c.ledger.process_totals(key) {
                *ledger.entry((d, cat)).or_default() += t.bytes;
            }
            let mut book: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
            for (dev, counters) in l.book.counters() {
                let r = &c.legacy.devices[dev];
                for cat in Category::ALL {
                    if let Some(lc) = r.ledger_cat[cat as usize] {
                        let e = book.entry((r.ledger, lc)).or_default();
                        *e = e.saturating_add(counters[cat as usize].live_bytes);
                    }
                }
            }
            book.retain(|_, b| *b > 0);
            ledger.retain(|_, b| *b > 0);
            prop_assert_eq!(ledger, book);
        }
    }
}
