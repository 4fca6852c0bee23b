//! The sources beside ttmem's own regions, turned into the same counters view, and the one
//! rule that makes a process seen by several sources one process.
//!
//! - TT-Metal's counter files: each used slot is one process on the file's chip (the chip's
//!   unique id is its hardware id, so a chip also declared by a ttmem region is one chip). A
//!   slot whose owner died (or whose pid now names a later process) is an exited process whose
//!   bytes are left behind, never live use; TT-Metal's own totals still count them, and a note
//!   says so.
//! - The kernel driver's pid lists: a process that holds `/dev/tenstorrent/N` and reports
//!   memory through no source is listed as holding it, memory unknown.
//! - [`merge`]: one process (pid and start time) seen by several sources is shown once, from
//!   the source with the most detail; sources that disagree on its bytes are noted.

use std::collections::BTreeMap;

use ttmem_region::decode::{self, Counters};
use ttmem_scan::DeviceCounters;
use ttmem_ttmetal::kmd::Holders;
use ttmem_ttmetal::proc::ProcRoot;
use ttmem_ttmetal::{CounterFile, TtMetalScan};

use crate::snapshot::{EventStats, ProcState, ProcessIdentity, SkippedRegion, Snapshot, SourceKind};
use crate::view::{DeviceIdentity, ProcessView, SnapshotMeta};

/// The architecture of a chip known only from a counter file (the file does not say).
pub const UNKNOWN_ARCH: &str = "unknown";

/// The device a counter file describes: a Tenstorrent chip by its unique id. Its architecture
/// and capacities are unknown (0) until a source that knows them declares the same chip.
pub fn counter_file_device(f: &CounterFile) -> decode::Device {
    let remote = f.chips.iter().any(|c| c.chip_id == f.device_id && c.remote);
    decode::Device {
        kind: ttmem_region::DeviceKind::Tenstorrent,
        hw_id: f.asic_id,
        logical_id: f.device_id.min(i32::MAX as u32) as i32,
        flags: if remote { ttmem_region::DEVICE_FLAG_REMOTE } else { 0 },
        arch: UNKNOWN_ARCH.into(),
        name: format!("tt:{}", f.device_id),
        categories: f
            .totals
            .0
            .iter()
            .map(|(name, _)| decode::Category {
                name: (*name).into(),
                capacity: 0,
                addr_base: 0,
                addr_end: 0,
                banks: 1,
                alignment: 0,
            })
            .collect(),
    }
}

/// Exact bytes without counts: what a counter file knows of one category.
fn bytes_only(bytes: u64) -> Counters {
    let b = bytes.min(i64::MAX as u64) as i64;
    Counters {
        live_bytes: b,
        peak_bytes: b,
        ..Counters::default()
    }
}

/// What the sources beside the regions say (TT-Metal's files, the kernel driver's pid lists),
/// as views and notes, before [`merge`].
#[derive(Clone, Debug, Default)]
pub struct ExternalViews {
    /// One view per process and source (a process on several chips has one device per chip).
    pub views: Vec<ProcessView>,
    /// Dead owners whose bytes TT-Metal still counts; files this user may not read.
    pub notes: Vec<String>,
    /// Files that could not be used.
    pub skipped: Vec<SkippedRegion>,
    /// Every chip a file describes, with or without a process on it.
    pub chips: Vec<(decode::Device, SourceKind)>,
}

/// The views of every used slot of every counter file. `user_of` names a uid.
pub fn ttmetal_views(scan: &TtMetalScan, proc: &ProcRoot, user_of: &dyn Fn(u32) -> String) -> ExternalViews {
    let mut out = ExternalViews {
        skipped: scan.skipped.iter().map(SkippedRegion::from).collect(),
        ..Default::default()
    };
    // (pid, start time or 0 for a dead owner, slot name) → view.
    let mut by_process: BTreeMap<(u32, u64, String), ProcessView> = BTreeMap::new();
    for read in &scan.files {
        let f = &read.file;
        let device = counter_file_device(f);
        out.chips.push((device.clone(), SourceKind::TtMetalShm));
        for slot in &f.slots {
            let owner = proc.slot_owner(slot.pid, slot.last_update_ns);
            let start_time = owner.as_ref().map_or(0, |o| o.start_time);
            let uid = owner.as_ref().map_or(read.uid, |o| o.uid);
            let key = (slot.pid, start_time, slot.name.clone());
            let v = by_process.entry(key).or_insert_with(|| ProcessView {
                id: ProcessIdentity {
                    pid: slot.pid,
                    start_time,
                    uid,
                    user: user_of(uid),
                    name: slot.name.clone(),
                    cmdline: owner.as_ref().map_or_else(String::new, |o| o.cmdline.clone()),
                },
                started_unix_ns: owner
                    .as_ref()
                    .and_then(|o| proc.started_ns(o.start_time))
                    .unwrap_or(slot.last_update_ns),
                state: if owner.is_some() {
                    ProcState::Running
                } else {
                    ProcState::Exited
                },
                source: SourceKind::TtMetalShm,
                origin: read.path.display().to_string(),
                devices: Vec::new(),
                events: EventStats::default(),
                rejected: 0,
                holds: Vec::new(),
                updated_unix_ns: None,
            });
            v.updated_unix_ns = v.updated_unix_ns.max(Some(slot.last_update_ns).filter(|&t| t > 0));
            v.devices.push(DeviceCounters {
                index: v.devices.len() as u32,
                device: device.clone(),
                counters: slot.bytes.0.iter().map(|(_, b)| bytes_only(*b)).collect(),
            });
            if owner.is_none() && slot.bytes.total() > 0 {
                out.notes.push(format!(
                    "TT-Metal's own totals for chip {:#x} include {} bytes of process {} ({}), which died; TT-Metal never frees them",
                    f.asic_id,
                    slot.bytes.total(),
                    slot.pid,
                    slot.name
                ));
            }
        }
    }
    out.views = by_process.into_values().collect();
    out
}

/// A process the kernel driver lists as holding devices open.
pub fn kmd_views(holders: &[Holders], proc: &ProcRoot, user_of: &dyn Fn(u32) -> String) -> Vec<ProcessView> {
    let mut by_pid: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for h in holders {
        for &pid in &h.pids {
            by_pid
                .entry(pid)
                .or_default()
                .push(format!("/dev/tenstorrent/{}", h.device));
        }
    }
    by_pid
        .into_iter()
        .filter_map(|(pid, holds)| {
            let live = proc.process(pid)?;
            Some(ProcessView {
                id: ProcessIdentity {
                    pid,
                    start_time: live.start_time,
                    uid: live.uid,
                    user: user_of(live.uid),
                    name: live.comm,
                    cmdline: live.cmdline,
                },
                started_unix_ns: proc.started_ns(live.start_time).unwrap_or(0),
                state: ProcState::Running,
                source: SourceKind::Kmd,
                origin: proc.path().join("driver/tenstorrent").display().to_string(),
                devices: Vec::new(),
                events: EventStats::default(),
                rejected: 0,
                holds,
                updated_unix_ns: None,
            })
        })
        .collect()
}

/// Every source beside the regions, read the same way by a reader without a daemon and by
/// the daemon: TT-Metal's counter files (when read), with a note when other users' files
/// could not be, and the kernel driver's pid lists.
pub fn external_views(
    tt_metal: Option<&TtMetalScan>,
    holders: &[Holders],
    proc: &ProcRoot,
    user_of: &dyn Fn(u32) -> String,
) -> ExternalViews {
    let mut out = tt_metal.map(|s| ttmetal_views(s, proc, user_of)).unwrap_or_default();
    out.views.extend(kmd_views(holders, proc, user_of));
    if let Some(n) = tt_metal.map(|s| s.not_permitted).filter(|&n| n > 0) {
        out.notes.push(format!(
            "{n} TT-Metal counter file{} of other users {} not readable by you: run as root to see every process",
            if n == 1 { "" } else { "s" },
            if n == 1 { "is" } else { "are" }
        ));
    }
    out
}

/// Bytes per (chip, category) a view reports, for comparing sources.
fn bytes_by_chip(v: &ProcessView) -> BTreeMap<(DeviceIdentity, String), u64> {
    let mut out = BTreeMap::new();
    for (k, d) in v.identities() {
        for (c, desc) in d.counters.iter().zip(&d.device.categories) {
            *out.entry((k, desc.name.clone())).or_default() += c.live_bytes.max(0) as u64;
        }
    }
    out
}

/// One view per process: of the views with one (pid, start time), the richest source's is
/// kept (a dead TT-Metal slot, whose start time is unknown, joins an exited process with its
/// pid). A kernel-driver view is kept only for a pid no other source reports. Where the kept
/// view and a TT-Metal slot disagree on a chip's bytes, a note says so.
pub fn merge(mut views: Vec<ProcessView>) -> (Vec<ProcessView>, Vec<String>) {
    views.sort_by_key(|v| (v.id.pid, v.source.rank()));
    let mut kept: Vec<ProcessView> = Vec::with_capacity(views.len());
    let mut notes = Vec::new();
    for v in views {
        let same = kept.iter().position(|k| {
            k.id.pid == v.id.pid
                && (k.id.start_time == v.id.start_time
                    || v.source == SourceKind::Kmd
                    || (v.source == SourceKind::TtMetalShm && v.id.start_time == 0 && !k.state.is_running()))
        });
        let Some(i) = same else {
            kept.push(v);
            continue;
        };
        if v.source == SourceKind::TtMetalShm {
            let ours = bytes_by_chip(&kept[i]);
            for ((chip, category), theirs) in bytes_by_chip(&v) {
                if let Some(&mine) = ours.get(&(chip, category.clone()))
                    && mine != theirs
                {
                    notes.push(format!(
                        "process {} ({}): {} says {mine} bytes of {category} on chip {}, TT-Metal's counters say {theirs}",
                        v.id.pid,
                        v.id.name,
                        kept[i].source.as_str(),
                        chip.hw_text()
                    ));
                }
            }
        }
    }
    (kept, notes)
}

/// Where a reader without a daemon looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// The region directory.
    pub regions: std::path::PathBuf,
    /// TT-Metal's counter-file directory (None: not read).
    pub tt_metal: Option<std::path::PathBuf>,
    /// The proc root (the kernel driver's pid lists, process facts).
    pub proc_root: std::path::PathBuf,
}

/// Why the local sources could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The region directory.
    #[error("cannot read region directory {}: {source}", path.display())]
    Regions {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TT-Metal's counter-file directory.
    #[error("cannot read TT-Metal's counter files in {}: {source}", path.display())]
    TtMetal {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Local {
    /// Reads every source this user can read without a daemon and merges them.
    pub fn snapshot(&self) -> Result<Snapshot, LocalError> {
        let scan = ttmem_scan::scan(&self.regions, ttmem_scan::ScanOptions::default()).map_err(|source| {
            LocalError::Regions {
                path: self.regions.clone(),
                source,
            }
        })?;
        let tt_metal = match &self.tt_metal {
            Some(d) => Some(ttmem_ttmetal::read_dir(d).map_err(|source| LocalError::TtMetal {
                path: d.clone(),
                source,
            })?),
            None => None,
        };
        let proc = ProcRoot::new(&self.proc_root);
        let holders = ttmem_ttmetal::kmd::holders(&self.proc_root);
        Ok(Snapshot::from_sources(
            &scan,
            tt_metal.as_ref(),
            &holders,
            &proc,
            crate::now_ns(),
        ))
    }
}

impl Snapshot {
    /// The snapshot a reader without a daemon shows: the regions, what TT-Metal's counter
    /// files hold (when read), and the kernel driver's pid lists, merged, ages counted to
    /// `now_ns`. Looks up user names.
    pub fn from_sources(
        scan: &ttmem_scan::Scan,
        tt_metal: Option<&TtMetalScan>,
        holders: &[Holders],
        proc: &ProcRoot,
        now_ns: u64,
    ) -> Snapshot {
        let user_of = |uid: u32| ttmem_scan::user_name(uid).unwrap_or_else(|| uid.to_string());
        let mut views: Vec<ProcessView> = scan
            .regions
            .iter()
            .map(|r| ProcessView::from_region(r, user_of(r.header.uid)))
            .collect();
        let external = external_views(tt_metal, holders, proc, &user_of);
        views.extend(external.views);
        let (views, merge_notes) = merge(views);
        let mut notes = external.notes;
        notes.extend(merge_notes);
        Snapshot::build(
            &views,
            SnapshotMeta {
                source: "regions".into(),
                region_dir: scan.dir.display().to_string(),
                timestamp_ns: now_ns,
                skipped: scan
                    .skipped
                    .iter()
                    .map(SkippedRegion::from)
                    .chain(external.skipped)
                    .collect(),
                not_permitted: scan.not_permitted,
                notes,
                chips: external.chips,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttmem_ttmetal::layout::fixture::{Spec, build};

    fn proc_root(procs: &[(u32, u64)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stat"), "btime 1000\n").unwrap();
        for &(pid, start) in procs {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir(&p).unwrap();
            let mut fields = vec!["0".to_string(); 25];
            fields[18] = start.to_string();
            std::fs::write(p.join("stat"), format!("{pid} (python) S {}", fields.join(" "))).unwrap();
            std::fs::write(p.join("status"), "Uid:\t1000\t1000\t1000\t1000\n").unwrap();
            std::fs::write(p.join("comm"), "python\n").unwrap();
        }
        d
    }

    /// A counter file to write: (chip unique id, device id, slots as (index, pid, bytes, last
    /// update ns)).
    type FileSpec = (u64, u32, Vec<(usize, i32, Vec<u64>, u64)>);

    fn scan(dir: &std::path::Path, files: &[FileSpec]) -> TtMetalScan {
        for (asic, device, slots) in files {
            let spec = Spec {
                asic_id: *asic,
                device_id: *device,
                chips: vec![(*device, false, vec![])],
                slots: slots
                    .iter()
                    .map(|(i, pid, b, ts)| (*i, *pid, b.clone(), *ts, b"python".to_vec()))
                    .collect(),
                ..Spec::default()
            };
            std::fs::write(dir.join(format!("tt_device_{asic}_memory")), build(3, &spec)).unwrap();
        }
        ttmem_ttmetal::read_dir(dir).unwrap()
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn slots_become_processes_and_a_dead_owners_bytes_are_left_behind_with_a_note() {
        let root = proc_root(&[(10, 0)]);
        let files = tempfile::tempdir().unwrap();
        let s = scan(
            files.path(),
            &[
                (
                    0xa,
                    0,
                    vec![(0, 10, vec![100, 200], 2000 * S), (1, 11, vec![50], 2000 * S)],
                ),
                (0xb, 1, vec![(3, 10, vec![7], 2000 * S)]),
            ],
        );
        let out = ttmetal_views(&s, &ProcRoot::new(root.path()), &|uid| uid.to_string());
        assert_eq!(out.views.len(), 2);
        let live = out.views.iter().find(|v| v.id.pid == 10).unwrap();
        assert_eq!(
            (live.state, live.source, live.devices.len()),
            (ProcState::Running, SourceKind::TtMetalShm, 2)
        );
        assert_eq!(live.devices[0].device.hw_id, 0xa);
        assert_eq!(live.devices[0].counters[1].live_bytes, 200);
        let dead = out.views.iter().find(|v| v.id.pid == 11).unwrap();
        assert_eq!(dead.state, ProcState::Exited);
        assert_eq!(out.notes.len(), 1);
        assert!(
            out.notes[0].contains("include 50 bytes of process 11"),
            "{}",
            out.notes[0]
        );
    }

    #[test]
    fn external_views_join_the_driver_lists_and_count_files_of_other_users() {
        let root = proc_root(&[(10, 0), (12, 0)]);
        let files = tempfile::tempdir().unwrap();
        let mut s = scan(files.path(), &[(0xa, 0, vec![(0, 10, vec![100], 2000 * S)])]);
        let holders = [Holders {
            device: 0,
            pids: vec![10, 12],
        }];
        let proc = ProcRoot::new(root.path());
        let user_of = |uid: u32| uid.to_string();
        let out = external_views(Some(&s), &holders, &proc, &user_of);
        let sources: Vec<_> = out.views.iter().map(|v| (v.id.pid, v.source)).collect();
        assert_eq!(
            sources,
            [
                (10, SourceKind::TtMetalShm),
                (10, SourceKind::Kmd),
                (12, SourceKind::Kmd)
            ]
        );
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        s.not_permitted = 2;
        let out = external_views(Some(&s), &[], &proc, &user_of);
        assert_eq!(
            out.notes,
            ["2 TT-Metal counter files of other users are not readable by you: run as root to see every process"]
        );
        let none = external_views(None, &holders, &proc, &user_of);
        assert_eq!((none.views.len(), none.chips.len()), (2, 0));
    }

    #[test]
    fn one_process_seen_twice_is_shown_once_from_the_richer_source_and_disagreement_is_noted() {
        let root = proc_root(&[(10, 0)]);
        let files = tempfile::tempdir().unwrap();
        let s = scan(files.path(), &[(0xa, 0, vec![(0, 10, vec![100], 2000 * S)])]);
        let tt = ttmetal_views(&s, &ProcRoot::new(root.path()), &|uid| uid.to_string()).views;
        let mut region = tt[0].clone();
        region.source = SourceKind::Region;
        region.devices[0].device.arch = "wormhole_b0".into();
        region.devices[0].counters[0].live_bytes = 90;
        let mut kmd = tt[0].clone();
        kmd.source = SourceKind::Kmd;
        kmd.devices.clear();
        let other = ProcessView {
            id: ProcessIdentity {
                pid: 99,
                ..tt[0].id.clone()
            },
            ..kmd.clone()
        };
        let (views, notes) = merge(vec![kmd, tt[0].clone(), region, other]);
        assert_eq!(views.len(), 2);
        assert_eq!((views[0].id.pid, views[0].source), (10, SourceKind::Region));
        assert_eq!((views[1].id.pid, views[1].source), (99, SourceKind::Kmd));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("region says 90 bytes of DRAM on chip 0xa, TT-Metal's counters say 100"),
            "{}",
            notes[0]
        );
    }
}
