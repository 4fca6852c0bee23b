//! The legacy allocation-server socket as a source of the collector: each client process (by
//! its peer credentials) becomes a process with exact counters from its [`Book`] and
//! per-buffer detail in the ledger, so `ps`, the API, history, lifecycle and fit see it. The
//! protocol's own semantics (replies, dumps, statistics) are in `ttmem-legacy`; this is the glue.
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
use ttmem_ledger::{DeviceKey, Event, EventKind, ProcKey};
use ttmem_legacy::book::{Book, BookStats, Category, Effect};
use ttmem_legacy::dump::{Dump, DumpKind};
use ttmem_legacy::reply::{ChipFacts, Space, device_info_reply, query_reply};
use ttmem_legacy::{Message, MsgType, Version};
use ttmem_model::api::LegacyStats;
use ttmem_model::{DeviceIdentity, EventStats, ProcState, ProcessIdentity, ProcessView, SourceKind};
use ttmem_region::decode;
use ttmem_scan::DeviceCounters;

use super::{Collector, Now, Proc, Source, lifecycle};

/// Who is on the other end of a connection (from `SO_PEERCRED`, never from the messages).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Process id in the daemon's pid namespace (0: not visible).
    pub pid: u32,
    /// User id.
    pub uid: u32,
}

/// Entries a dump writes to the log.
const MAX_DUMP_LOG_LINES: usize = 200;
/// Dumps kept.
const MAX_DUMPS: usize = 8;

/// What a legacy device id resolved to.
#[derive(Clone)]
struct Resolved {
    /// The device as the process's view declares it (every legacy category present).
    device: decode::Device,
    /// Its place in the device table.
    identity: DeviceIdentity,
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
    view_index: HashMap<i32, usize>,
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
    /// Shown as the processes' origin.
    source: PathBuf,
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

/// A legacy device id that names no chip: a device of its own, with every legacy category.
fn legacy_device(d: i32) -> decode::Device {
    decode::Device {
        kind: ttmem_region::DeviceKind::LegacySocket,
        hw_id: d as u64 + 1,
        logical_id: d,
        flags: 0,
        arch: "unknown".into(),
        name: format!("legacy:{d}"),
        categories: Category::ALL.iter().map(|c| undeclared(c.name())).collect(),
    }
}

/// An empty category of a device that does not declare it.
fn undeclared(name: &str) -> decode::Category {
    decode::Category {
        name: name.into(),
        capacity: 0,
        addr_base: 0,
        addr_end: 0,
        banks: 1,
        alignment: 0,
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

/// A legacy client's book and view (None: no such process, or not a legacy client).
fn legacy_proc(
    procs: &mut std::collections::HashMap<ProcKey, Proc>,
    key: ProcKey,
) -> Option<(&mut LegacyProc, &mut ProcessView)> {
    match procs.get_mut(&key)? {
        Proc {
            source: Source::Legacy(l),
            view,
            ..
        } => Some((l, view)),
        _ => None,
    }
}

/// The counters of one book category as the view shows them.
fn view_counters(c: ttmem_legacy::book::Counter) -> decode::Counters {
    let clamp = |x: u64| x.min(i64::MAX as u64) as i64;
    decode::Counters {
        live_bytes: clamp(c.live_bytes),
        live_count: clamp(c.live_count),
        allocs: c.allocs,
        frees: c.frees,
        alloc_bytes: 0,
        free_bytes: 0,
        peak_bytes: clamp(c.peak_bytes),
    }
}

impl Collector {
    /// Sets how legacy processes name their origin (the listener's path).
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
            if let Source::Legacy(l) = &p.source {
                s.book += l.book.stats();
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
    pub fn legacy_apply(&mut self, peer: Peer, version: Version, msgs: &[Message], now: Now, replies: &mut Vec<u8>) {
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
                    self.dump(peer, DumpKind::Remaining, now);
                }
                Some(MsgType::DumpKernels) => {
                    self.legacy_flush(key, &mut events, &mut changed);
                    self.dump(peer, DumpKind::Kernels, now);
                }
                _ => {
                    let k = match key {
                        Some(k) => k,
                        None => match self.legacy_process(peer, m, now) {
                            Some(k) => {
                                key = Some(k);
                                k
                            }
                            None => continue,
                        },
                    };
                    self.legacy_message(k, m, now.monotonic_ns, &mut events, &mut changed);
                }
            }
        }
        self.legacy_flush(key, &mut events, &mut changed);
    }

    /// The process of a peer, created on its first state-changing message.
    fn legacy_process(&mut self, peer: Peer, m: &Message, now: Now) -> Option<ProcKey> {
        let Some(start_time) = ttmem_scan::start_time_of(peer.pid) else {
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
        let name = proc_text(peer.pid, "comm");
        tracing::info!(pid = peer.pid, exe = %name, "legacy client reporting");
        let view = ProcessView {
            id: ProcessIdentity {
                pid: peer.pid,
                start_time,
                uid: peer.uid,
                user: ttmem_scan::user_name(peer.uid).unwrap_or_else(|| peer.uid.to_string()),
                name,
                cmdline: proc_text(peer.pid, "cmdline"),
            },
            started_unix_ns: now.unix_ns,
            state: ProcState::Running,
            source: SourceKind::LegacySocket,
            origin: self.legacy.source.display().to_string(),
            devices: Vec::new(),
            events: EventStats::default(),
            rejected: 0,
            holds: Vec::new(),
            updated_unix_ns: None,
        };
        let source = Source::Legacy(Box::new(LegacyProc {
            book: Book::default(),
            view_index: HashMap::new(),
        }));
        let key = self.add_process(view, source, lifecycle::open_pidfd(peer.pid, start_time));
        self.legacy.procs.insert((peer.pid, start_time), key);
        self.legacy.stats.processes += 1;
        Some(key)
    }

    fn legacy_message(&mut self, key: ProcKey, m: &Message, now_ns: u64, events: &mut Vec<Event>, changed: &mut bool) {
        let Some((l, view)) = legacy_proc(&mut self.procs, key) else {
            return;
        };
        let effect = match l.book.apply(m) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(why) => {
                self.legacy.stats.invalid += 1;
                if self.legacy.limit.allow() {
                    tracing::warn!(
                        pid = view.id.pid,
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
        let r = self.resolve(device);
        let Some(cat) = r.ledger_cat[category as usize] else {
            return;
        };
        events.push(Event {
            kind,
            device: r.ledger,
            category: cat,
            address: id,
            size,
            time_ns: now_ns,
            tag: 0,
            // A connection's messages arrive in order.
            stream: 0,
        });
    }

    /// What a legacy device id means (fixed at first use).
    fn resolve(&mut self, d: i32) -> &Resolved {
        if !self.legacy.devices.contains_key(&d) {
            let r = self.resolve_new(d);
            self.legacy.devices.insert(d, r);
        }
        &self.legacy.devices[&d]
    }

    fn resolve_new(&mut self, d: i32) -> Resolved {
        // The d-th chip that regions declare (legacy devices sort after them, so this is also
        // its `ps` id), unless another legacy id already names it: two ids never share a chip.
        let table = self.device_table();
        let taken: Vec<DeviceIdentity> = self.legacy.devices.values().map(|r| r.identity).collect();
        let chip = usize::try_from(d).ok().and_then(|i| {
            (0..table.len() as u32)
                .filter_map(|id| Some((table.identity(id)?, table.device(id)?)))
                .filter(|(_, dev)| dev.kind != ttmem_region::DeviceKind::LegacySocket)
                .nth(i)
        });
        let (identity, mut device) = match chip {
            Some((identity, dev)) if dev.hw_id != 0 && !taken.contains(&identity) => (identity, dev.clone()),
            _ => {
                let dev = legacy_device(d);
                (DeviceIdentity::chip(dev.kind.code(), dev.hw_id), dev)
            }
        };
        let ledger = self.ledger.add_device(device.clone());
        self.identities.insert(ledger, identity);
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
                    device.categories.push(undeclared(c.name()));
                    device.categories.len() - 1
                }
            };
        }
        Resolved {
            device,
            identity,
            ledger,
            ledger_cat,
            view_cat,
        }
    }

    /// Applies pending ledger events and refreshes the process's counters view from its book.
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
        let ids: Vec<i32> = match self.procs.get(&key).map(|p| &p.source) {
            Some(Source::Legacy(l)) => l.book.counters().keys().copied().collect(),
            _ => return,
        };
        for &d in &ids {
            self.resolve(d);
        }
        let Some((l, view)) = legacy_proc(&mut self.procs, key) else {
            return;
        };
        for d in ids {
            let r = &self.legacy.devices[&d];
            let index = *l.view_index.entry(d).or_insert_with(|| {
                view.devices.push(DeviceCounters {
                    index: view.devices.len() as u32,
                    device: r.device.clone(),
                    counters: vec![decode::Counters::default(); r.device.categories.len()],
                });
                view.devices.len() - 1
            });
            let counters = &l.book.counters()[&d];
            let dc = &mut view.devices[index];
            for c in Category::ALL {
                if let Some(dst) = dc.counters.get_mut(r.view_cat[c as usize]) {
                    *dst = view_counters(counters[c as usize]);
                }
            }
        }
        self.generation += 1;
    }

    /// The device a legacy id names for a query (no new mapping is made): its fixed meaning,
    /// else the device with that id in the table.
    fn query_device(&self, table: &ttmem_model::DeviceTable, d: i32) -> Option<u32> {
        match self.legacy.devices.get(&d) {
            Some(r) => table.id_of(&r.identity),
            None => u32::try_from(d).ok().filter(|&i| (i as usize) < table.len()),
        }
    }

    fn reply_query(&self, d: i32) -> Message {
        let table = self.device_table();
        match self.query_device(&table, d) {
            Some(id) => query_reply(d, |c| table.used(id, c.name())),
            None => query_reply(d, |_| 0),
        }
    }

    fn reply_device_info(&self, d: i32) -> Message {
        let table = self.device_table();
        let n = table
            .len()
            .max(self.legacy.devices.keys().map(|&k| k as usize + 1).max().unwrap_or(0)) as u32;
        let chip = self.query_device(&table, d).and_then(|id| table.device(id)).map(|dev| {
            let space = |name: &str| {
                dev.categories.iter().find(|c| c.name == name).map(|c| Space {
                    capacity: c.capacity,
                    banks: c.banks,
                    addr_end: c.addr_end,
                })
            };
            ChipFacts {
                arch: dev.arch.clone(),
                dram: space("DRAM"),
                l1: space("L1"),
            }
        });
        device_info_reply(d, n, chip.as_ref())
    }

    fn dump(&mut self, peer: Peer, kind: DumpKind, now: Now) {
        let books = self
            .procs
            .values()
            .filter(|p| p.exited_at_ns.is_none())
            .filter_map(|p| match &p.source {
                Source::Legacy(l) => Some((p.view.id.pid, &l.book)),
                Source::Region(_) => None,
            });
        let dump = Dump::of(kind, books, peer.pid, now.unix_ns);
        let what = match kind {
            DumpKind::Remaining => "buffers",
            DumpKind::Kernels => "kernels",
        };
        tracing::info!(
            requested_by = peer.pid,
            total = dump.total,
            "legacy DUMP_{}: {} live {what}",
            kind.name().to_uppercase(),
            dump.total
        );
        for e in dump.entries.iter().take(MAX_DUMP_LOG_LINES) {
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
        if dump.total > MAX_DUMP_LOG_LINES {
            tracing::info!(
                "... and {} more (GET /api/v1/legacy/dumps)",
                dump.total - MAX_DUMP_LOG_LINES
            );
        }
        if self.legacy.dumps.len() == MAX_DUMPS {
            self.legacy.dumps.pop_front();
        }
        self.legacy.dumps.push_back(dump);
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
                retention: std::time::Duration::from_secs(60),
                remove_dead_regions: false,
                ..CollectorConfig::new(dir.into())
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
                c.legacy_apply(me(), v, b, Now { monotonic_ns: 1, unix_ns: 1 }, &mut replies);
            }
            prop_assert_eq!(replies.len(), expected_replies * v.size());
            let Some(&key) = c.legacy.procs.values().next() else { return Ok(()) };
            let Source::Legacy(l) = &c.procs[&key].source else { panic!("a legacy process has a legacy source") };
            prop_assert!(l.book.check_consistency().is_ok());
            // Ledger bytes per (device, category) equal the book's counters.
            let mut ledger: std::collections::BTreeMap<(DeviceKey, u8), u64> = Default::default();
            for (d, cat, t) in c.ledger.process_totals(key) {
                *ledger.entry((d, cat)).or_default() += t.bytes;
            }
            let mut book: std::collections::BTreeMap<(DeviceKey, u8), u64> = Default::default();
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
