//! Finds ttmem regions and decodes them without a daemon.
//!
//! Every region is untrusted: it is read with bounded positional reads (never mapped, so a file
//! truncated under the reader cannot fault it), every count is validated by `ttmem-region`
//! before anything is sized by it, and a region that fails any check is skipped with a reason.
//! A process is identified by (pid, start time, boot id); liveness never relies on
//! `kill(pid, 0)`.

#![deny(missing_docs)]

pub mod attach;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use ttmem_region::decode::{self, Counters, DecodeError, Event, Header, Shard, Strings};
use ttmem_region::{
    COUNTER_CELL_SIZE, DEVICE_ENTRY_SIZE, EVENT_SIZE, MAX_CATEGORIES, REGION_EXTENSION, RegionState, SHARD_HEADER_SIZE,
    STRINGS_HEADER_SIZE,
};

/// Why one region could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// An I/O error (permission, vanished file).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid region.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The file changed size while being read.
    #[error("changed while being read (now {now} bytes)")]
    Changed {
        /// Size now.
        now: u64,
    },
    /// The file's owner is not the uid the header claims: one user posing as another.
    #[error("file owner uid {file_uid} does not match the uid {header_uid} in its header")]
    OwnerMismatch {
        /// Owner of the file.
        file_uid: u32,
        /// Uid the header claims.
        header_uid: u32,
    },
    /// Still being created by its writer.
    #[error("still being created")]
    Creating,
    /// Its counters are more than a reader reads at once: threads in use times devices
    /// published beyond any real process (the bound keeps one hostile region from costing
    /// seconds of CPU per read).
    #[error("its counters take {bytes} bytes to read, more than the {limit} a reader reads")]
    TooLarge {
        /// Bytes the counters of the shards in use and the devices published take.
        bytes: u64,
        /// The bound ([`MAX_COUNTER_BYTES`]).
        limit: u64,
    },
    /// The header's identity or geometry changed after a reader attached: a writer rewriting
    /// who it claims to be.
    #[error("its header's identity or geometry changed while attached")]
    IdentityChanged,
    /// The file's name is not the one its header's identity gives (a copy, or a forgery).
    #[error("named unlike its header (a region of uid {uid}, pid {pid} is named {expected})")]
    NameMismatch {
        /// The name the header's identity gives.
        expected: String,
        /// The header's uid.
        uid: u32,
        /// The header's pid.
        pid: u32,
    },
    /// The running process with the header's pid and start time belongs to another user: a
    /// region claiming someone else's process.
    #[error("process {pid} runs as uid {process_uid}, not as the uid {header_uid} its region claims")]
    ProcessOwnerMismatch {
        /// The process.
        pid: u32,
        /// Its real uid.
        process_uid: u32,
        /// The uid the header claims.
        header_uid: u32,
    },
}

/// Whether a region's writer is still running.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The same process (pid and start time, this boot) is running.
    Running,
    /// The writer is gone (crashed, killed, or exited keeping its region).
    Exited,
}

/// One device of one process, with its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Index in the process's device table.
    pub index: u32,
    /// The device as declared.
    pub device: decode::Device,
    /// Exact counters per declared category (summed over shards).
    pub counters: Vec<Counters>,
}

/// Everything read from one region.
#[derive(Clone, Debug)]
pub struct ProcessRegion {
    /// The file.
    pub path: PathBuf,
    /// The validated header.
    pub header: Header,
    /// Whether the writer runs.
    pub liveness: Liveness,
    /// Devices and their counters.
    pub devices: Vec<DeviceCounters>,
    /// Shard control words (`0..shards_used` and the shared shard).
    pub shards: Vec<(u32, Shard)>,
    /// Interned tags.
    pub strings: Strings,
    /// The most recent events, oldest first (only when asked for).
    pub events: Vec<Event>,
}

impl ProcessRegion {
    /// Events ever written.
    pub fn events_written(&self) -> u64 {
        sum_shards(&self.shards, |s| s.head)
    }
    /// Events lost before an attached reader read them.
    pub fn events_lost(&self) -> u64 {
        sum_shards(&self.shards, |s| s.lost)
    }
    /// Calls that named an unregistered device or category.
    pub fn rejected(&self) -> u64 {
        sum_shards(&self.shards, |s| s.rejected)
    }
}

/// What changes while a region's writer runs, as an attached reader reads it again
/// ([`attach::Attached::refresh`]).
#[derive(Clone, Debug)]
pub struct RegionCounters {
    /// The header (its identity and geometry as when the reader attached).
    pub header: Header,
    /// Devices and their counters.
    pub devices: Vec<DeviceCounters>,
    /// Shard control words (`0..shards_used` and the shared shard).
    pub shards: Vec<(u32, Shard)>,
}

impl RegionCounters {
    /// Events ever written.
    pub fn events_written(&self) -> u64 {
        sum_shards(&self.shards, |s| s.head)
    }
    /// Events lost before an attached reader read them.
    pub fn events_lost(&self) -> u64 {
        sum_shards(&self.shards, |s| s.lost)
    }
    /// Calls that named an unregistered device or category.
    pub fn rejected(&self) -> u64 {
        sum_shards(&self.shards, |s| s.rejected)
    }
}

/// One shard field summed over shards (wrapping: the words come from the writer).
fn sum_shards(shards: &[(u32, Shard)], field: impl Fn(&Shard) -> u64) -> u64 {
    shards.iter().map(|(_, s)| field(s)).fold(0, u64::wrapping_add)
}

/// A file that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// The result of scanning a directory.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// The directory scanned.
    pub dir: PathBuf,
    /// Whether the directory exists.
    pub dir_exists: bool,
    /// Regions read, ordered by pid.
    pub regions: Vec<ProcessRegion>,
    /// Regions skipped (invalid, being created, unreadable for another reason).
    pub skipped: Vec<Skipped>,
    /// Regions this user may not read (other users' processes; region files are 0600).
    pub not_permitted: usize,
}

/// What to read besides counters.
#[derive(Copy, Clone, Debug, Default)]
pub struct ScanOptions {
    /// Read up to this many recent events per shard (0: none).
    pub events_per_shard: u32,
}

/// A region younger than this that looks like one being created is retried, not reported.
pub const CREATION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl RegionError {
    /// Whether the file looks like a region its writer is still creating: the writer creates
    /// it empty, sizes it (zero-filled), writes the header and only then publishes it
    /// (state = live), and inotify may wake a reader anywhere in between. True for a file
    /// modified within [`CREATION_GRACE`] whose header fails to decode and that, read again now,
    /// is empty, has an all-zero magic, is still marked as being created, or decodes (the first
    /// read caught the writer mid-header). Any other defect is reported at once.
    pub fn is_transient(&self, path: &Path) -> bool {
        let young = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < CREATION_GRACE)
        };
        let Ok(meta) = fs::metadata(path) else { return false };
        if !young(&meta) {
            return false;
        }
        match self {
            RegionError::Creating => true,
            RegionError::Decode(_) => {
                meta.len() == 0 || open_region(path).is_ok_and(|f| header_in_creation(&f, meta.len()))
            }
            _ => false,
        }
    }
}

/// Whether the header read now is one its writer has not finished: an all-zero magic, no
/// layout version yet, this reader's layout still marked "creating", or a header that decodes
/// although an earlier read of it did not. (A header of another layout version is not one
/// being created: that is reported.)
fn header_in_creation(file: &File, len: u64) -> bool {
    let mut head = vec![0u8; ttmem_region::HEADER_SIZE.min(len as usize)];
    if file.read_exact_at(&mut head, 0).is_err() {
        return false;
    }
    let word = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let version = word(std::mem::offset_of!(ttmem_region::raw::RawHeader, layout_version));
    let state = word(std::mem::offset_of!(ttmem_region::raw::RawHeader, state));
    let zero_magic = head.len() >= 8 && head[..8] == [0; 8];
    let unversioned = version == Some(0);
    let creating = version == Some(ttmem_region::LAYOUT_VERSION) && state == Some(RegionState::Creating.code());
    zero_magic || unversioned || creating || decode::decode_header(&head, len).is_ok()
}

/// Reads every `*.ttmem` region in `dir`. A missing directory is an empty scan, not an error;
/// an unreadable one is an error.
pub fn scan(dir: &Path, opts: ScanOptions) -> io::Result<Scan> {
    let mut out = Scan {
        dir: dir.to_owned(),
        ..Default::default()
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    out.dir_exists = true;
    let boot = current_boot_id();
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == REGION_EXTENSION))
        .collect();
    paths.sort();
    for path in paths {
        match read_region(&path, opts, boot) {
            Ok(r) => out.regions.push(r),
            Err(RegionError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {} // exited meanwhile
            Err(e) if e.is_transient(&path) => {}                                // still being created
            Err(RegionError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => out.not_permitted += 1,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "skipping region");
                out.skipped.push(Skipped {
                    path,
                    reason: e.to_string(),
                });
            }
        }
    }
    out.regions.sort_by_key(|r| (r.header.pid, r.header.start_time));
    Ok(out)
}

/// Opens a region file the way every reader must: without following a symbolic link (another
/// user could point a region name at any file), without blocking (a FIFO named like a region
/// would hang the reader), and only if it is a regular file.
pub fn open_region(path: &Path) -> Result<File, RegionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC).bits(),
        )
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc_eloop()) {
                RegionError::Io(io::Error::other("is a symbolic link; regions are regular files"))
            } else {
                RegionError::Io(e)
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(RegionError::Io(io::Error::other("not a regular file")));
    }
    Ok(file)
}

fn libc_eloop() -> i32 {
    nix::errno::Errno::ELOOP as i32
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, RegionError> {
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(RegionError::Changed {
            now: file.metadata().map(|m| m.len()).unwrap_or(0),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The identity rule every reader applies before trusting a region: three owners agree (the
/// file's owner, the header's uid, and the real uid of the live process with the header's pid
/// and start time, when it runs), and the file is named after that identity, so a copy or a
/// forgery cannot count twice or speak for another user's process. A file root owns may
/// declare any user (root could write anything anyway).
pub fn check_identity(meta: &fs::Metadata, header: &Header, path: &Path) -> Result<(), RegionError> {
    let by_root = meta.uid() == 0;
    if meta.uid() != header.uid && !by_root {
        return Err(RegionError::OwnerMismatch {
            file_uid: meta.uid(),
            header_uid: header.uid,
        });
    }
    let expected = ttmem_region::region_file_name(header.uid, header.pid, header.start_time);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Err(RegionError::NameMismatch {
            expected,
            uid: header.uid,
            pid: header.pid,
        });
    }
    if !by_root
        && let Some(process_uid) = uid_of(header.pid, header.start_time)
        && process_uid != header.uid
    {
        return Err(RegionError::ProcessOwnerMismatch {
            pid: header.pid,
            process_uid,
            header_uid: header.uid,
        });
    }
    Ok(())
}

/// The real uid of the process with this pid and start time, if it runs.
fn uid_of(pid: u32, start_time: u64) -> Option<u32> {
    if start_time_of(pid)? != start_time {
        return None;
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads and validates one region. `boot_id` is this boot's id (see [`current_boot_id`]).
pub fn read_region(path: &Path, opts: ScanOptions, boot_id: Option<[u8; 16]>) -> Result<ProcessRegion, RegionError> {
    read_open_region(&open_region(path)?, path, opts, boot_id)
}

/// [`read_region`] through a file already open (`path` is only reported): a reader that holds
/// the file keeps reading it after its writer removed it at a clean exit.
pub fn read_open_region(
    file: &File,
    path: &Path,
    opts: ScanOptions,
    boot_id: Option<[u8; 16]>,
) -> Result<ProcessRegion, RegionError> {
    let meta = file.metadata()?;
    let head = read_at(file, 0, ttmem_region::HEADER_SIZE.min(meta.len() as usize))?;
    let header = decode::decode_header(&head, meta.len())?;
    if header.state == RegionState::Creating {
        return Err(RegionError::Creating);
    }
    check_identity(&meta, &header, path)?;
    let g = header.geometry;
    let RegionCounters {
        header,
        devices,
        shards,
    } = read_counters(file, header)?;

    let strings_header = read_at(file, g.strings_offset, STRINGS_HEADER_SIZE)?;
    let used_bytes = u64::from_le_bytes(strings_header[..8].try_into().expect("8 bytes")).min(g.strings_bytes);
    let strings_data = read_at(file, g.strings_data_offset(), used_bytes as usize)?;
    let strings = Strings::decode(&strings_header, &strings_data);

    let mut events = Vec::new();
    if opts.events_per_shard > 0 {
        for (s, shard) in &shards {
            let keep = (opts.events_per_shard as u64).min(g.ring_events as u64).min(shard.head);
            for index in shard.head - keep..shard.head {
                let rec = read_at(file, g.event_offset(*s, index), EVENT_SIZE)?;
                if let Some(e) = decode::decode_event(&rec, index) {
                    events.push(e);
                }
            }
        }
        events.sort_by_key(|e| e.ticks);
    }

    let liveness = liveness(&header, boot_id);
    Ok(ProcessRegion {
        path: path.to_owned(),
        header,
        liveness,
        devices,
        shards,
        strings,
        events,
    })
}

/// The most counter bytes one read of a region takes: 1024 threads with 16 devices, or 64
/// threads with 256 (the defaults take 2 MiB at most: 32 shards and 64 devices).
pub const MAX_COUNTER_BYTES: u64 = 16 << 20;

/// The devices with their exact counters (summed over shards) and the shard control words:
/// what changes while a region's writer runs.
pub(crate) fn read_counters(file: &File, header: Header) -> Result<RegionCounters, RegionError> {
    let g = header.geometry;
    let table = read_at(file, g.devices_offset, header.num_devices as usize * DEVICE_ENTRY_SIZE)?;
    let mut declared = Vec::new();
    for (i, entry) in table.chunks_exact(DEVICE_ENTRY_SIZE).enumerate() {
        if let Some(d) = decode::decode_device(entry)? {
            declared.push((i as u32, d));
        }
    }

    let shard_table = read_at(file, g.shards_offset, g.max_shards as usize * SHARD_HEADER_SIZE)?;
    let shared = g.max_shards - 1;
    let used: BTreeSet<u32> = (0..header.shards_used).chain([shared]).collect();
    let mut shards = Vec::new();
    for &s in &used {
        shards.push((s, decode::decode_shard(&shard_table[s as usize * SHARD_HEADER_SIZE..])?));
    }

    // Per shard, one contiguous read covers all published devices' cells.
    let mut devices: Vec<DeviceCounters> = declared
        .into_iter()
        .map(|(index, device)| {
            let n = device.categories.len();
            DeviceCounters {
                index,
                device,
                counters: vec![Counters::default(); n],
            }
        })
        .collect();
    if let Some(max_index) = devices.iter().map(|d| d.index).max() {
        let span = (max_index as usize + 1) * MAX_CATEGORIES * COUNTER_CELL_SIZE;
        let bytes = (span * used.len()) as u64;
        if bytes > MAX_COUNTER_BYTES {
            return Err(RegionError::TooLarge {
                bytes,
                limit: MAX_COUNTER_BYTES,
            });
        }
        for &s in &used {
            let cells = read_at(file, g.shard_counters_offset(s), span)?;
            for d in &mut devices {
                for (c, total) in d.counters.iter_mut().enumerate() {
                    let off = (d.index as usize * MAX_CATEGORIES + c) * COUNTER_CELL_SIZE;
                    total.add_shard(&decode::decode_cell(&cells[off..])?);
                }
            }
        }
    }

    Ok(RegionCounters {
        header,
        devices,
        shards,
    })
}

/// Decides whether a region's writer still runs: same boot, a process with that pid, and the
/// same start time (so a reused pid is never mistaken for the writer).
pub fn liveness(header: &Header, boot_id: Option<[u8; 16]>) -> Liveness {
    if header.state == RegionState::Exited {
        return Liveness::Exited;
    }
    if let Some(boot) = boot_id
        && header.boot_id != [0; 16]
        && header.boot_id != boot
    {
        return Liveness::Exited;
    }
    match start_time_of(header.pid) {
        Some(t) if t == header.start_time => Liveness::Running,
        _ => Liveness::Exited,
    }
}

/// Field 22 of `/proc/<pid>/stat`.
pub fn start_time_of(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    ttmem_region::identity::parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// This boot's id, read once per process (it cannot change while we run).
pub fn current_boot_id() -> Option<[u8; 16]> {
    static BOOT: std::sync::OnceLock<Option<[u8; 16]>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        ttmem_region::identity::parse_boot_id(&fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?)
    })
}

/// The name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// What `gc` did with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected {
    /// The file.
    pub path: PathBuf,
    /// Why it was (or would be) removed.
    pub reason: String,
    /// Whether it was removed (false on a dry run or when removal failed).
    pub removed: bool,
    /// The error, when removal failed.
    pub error: Option<String>,
}

/// Removes regions whose writer no longer runs (and, with `invalid`, files that are not valid
/// regions). Regions of running processes are never touched.
pub fn gc(dir: &Path, dry_run: bool, invalid: bool) -> io::Result<Vec<Collected>> {
    let s = scan(dir, ScanOptions::default())?;
    let mut victims: Vec<(PathBuf, String)> = s
        .regions
        .iter()
        .filter(|r| r.liveness == Liveness::Exited)
        .map(|r| {
            (
                r.path.clone(),
                format!("pid {} ({}) is no longer running", r.header.pid, r.header.exe),
            )
        })
        .collect();
    if invalid {
        victims.extend(
            s.skipped
                .into_iter()
                .filter(|k| !k.reason.contains("being created"))
                .map(|k| (k.path, format!("invalid: {}", k.reason))),
        );
    }
    Ok(victims
        .into_iter()
        .map(|(path, reason)| {
            let (removed, error) = if dry_run {
                (false, None)
            } else {
                match fs::remove_file(&path) {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(e.to_string())),
                }
            };
            Collected {
                path,
                reason,
                removed,
                error,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;
