//! One mapped region: creation, the slow-path writers (devices, tags, shards) and the hot-path
//! [`Region::record`].
//!
//! All shared memory is reached through the `raw` structs of `ttmem-region`, whose fields that
//! change after publication are atomics. Only this process writes the region (readers write
//! nothing but `read_pos` and `reader_pid`), and within the process each shard has one writing
//! thread at a time, except the last shard, which is shared and updated with atomic
//! read-modify-writes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use hashbrown::HashMap;
use memmap2::MmapMut;
use ttmem_region::raw::*;
use ttmem_region::*;

use crate::clock::{self, ClockMode};
use crate::config::Config;
use crate::proc_info::ProcessInfo;
use crate::{ClientError, DeviceSpec};

mod hot_path;
pub(crate) use hot_path::{Op, ShardRef};

/// Where the region's memory comes from.
enum Backing {
    /// A file in the region directory that readers can see.
    File { path: PathBuf, _file: File },
    /// Private anonymous memory: the directory was unusable; counters still work in-process.
    Anonymous,
}

/// A mapped region and the process-local state that goes with it.
pub(crate) struct Region {
    /// Keeps the mapping alive; everything goes through `base`.
    _map: MmapMut,
    base: *mut u8,
    pub(crate) geometry: Geometry,
    backing: Backing,
    /// The pid that created this region; a forked child must never write to its parent's.
    pub(crate) owner_pid: u32,
    /// Categories declared per device index (0: not registered). Checked on the hot path.
    category_counts: Box<[AtomicU8]>,
    devices: Mutex<Vec<(u64, i32)>>,
    tags: Mutex<HashMap<Box<str>, u32>>,
    shared_shard: u32,
    /// Stamp events with the TSC (else the coarse clock).
    tsc: bool,
}

// SAFETY: the mapping is only accessed through atomics (or, for write-once fields, before
// publication under the `devices` mutex), so sharing the raw base pointer across threads is sound.
unsafe impl Send for Region {}
// SAFETY: as above; all interior mutability is atomics or mutexes.
unsafe impl Sync for Region {}

impl Region {
    /// Creates a region file in `config.dir`; on failure, returns the error and the caller may
    /// fall back to [`Region::anonymous`].
    pub(crate) fn create(config: &Config, info: &ProcessInfo) -> Result<Self, ClientError> {
        let geometry = config.geometry()?;
        let dir = &config.dir;
        ensure_dir(dir).map_err(|e| ClientError::Directory {
            dir: dir.clone(),
            source: e,
        })?;
        let path = dir.join(region_file_name(info.uid, info.pid, info.start_time));
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(config.file_mode)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
        };
        let file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Same uid, pid and start time: a leftover from an earlier boot (or of this very
                // process after a failed start). It cannot belong to a live process but us.
                let _ = fs::remove_file(&path);
                open().map_err(|e| ClientError::Create {
                    path: path.clone(),
                    source: e,
                })?
            }
            Err(e) => return Err(ClientError::Create { path, source: e }),
        };
        let fail = |e: io::Error, path: &Path| {
            let _ = fs::remove_file(path);
            ClientError::Create {
                path: path.to_owned(),
                source: e,
            }
        };
        file.set_len(geometry.region_size).map_err(|e| fail(e, &path))?;
        // SAFETY: the file was just created by us with O_EXCL and sized to the region; nobody
        // else truncates it (readers only read), so the mapping stays valid for its lifetime.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| fail(e, &path))?;
        Ok(Self::init(
            map,
            geometry,
            Backing::File { path, _file: file },
            info,
            0,
            config.clock,
        ))
    }

    /// Creates a private, anonymous region: nothing outside the process sees it.
    pub(crate) fn anonymous(config: &Config, info: &ProcessInfo) -> Result<Self, ClientError> {
        let geometry = config.geometry()?;
        let map = MmapMut::map_anon(geometry.region_size as usize).map_err(|e| ClientError::Create {
            path: "<anonymous>".into(),
            source: e,
        })?;
        Ok(Self::init(
            map,
            geometry,
            Backing::Anonymous,
            info,
            FLAG_ANONYMOUS,
            config.clock,
        ))
    }

    fn init(
        mut map: MmapMut,
        geometry: Geometry,
        backing: Backing,
        info: &ProcessInfo,
        flags: u32,
        clock_mode: ClockMode,
    ) -> Self {
        let base = map.as_mut_ptr();
        // The coarse clock needs its ticker; without one, fall back to stamping every event.
        let resolution = match clock_mode {
            ClockMode::Coarse(period) if clock::ensure_ticker(period) => Some(period),
            _ => None,
        };
        let tsc = resolution.is_none() && clock::TSC_AVAILABLE;
        let (real, mono, tsc_now) = clock::calibration_point();
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page-aligned (so aligned for
        // RawHeader), zero-filled and not yet published (state = Creating), so we have the only
        // reference that writes it.
        let h = unsafe { &mut *(base as *mut RawHeader) };
        h.magic = MAGIC;
        h.layout_version = LAYOUT_VERSION;
        h.header_size = HEADER_SIZE as u32;
        h.region_size = geometry.region_size;
        h.flags = flags | if tsc { FLAG_CLOCK_TSC } else { 0 };
        h.pid = info.pid;
        h.uid = info.uid;
        h.start_time = info.start_time;
        h.boot_id = info.boot_id;
        h.max_devices = geometry.max_devices;
        h.max_categories = geometry.max_categories;
        h.max_shards = geometry.max_shards;
        h.ring_events = geometry.ring_events;
        h.device_entry_size = DEVICE_ENTRY_SIZE as u32;
        h.counter_cell_size = COUNTER_CELL_SIZE as u32;
        h.event_size = EVENT_SIZE as u32;
        h.shard_header_size = SHARD_HEADER_SIZE as u32;
        h.devices_offset = geometry.devices_offset;
        h.shards_offset = geometry.shards_offset;
        h.counters_offset = geometry.counters_offset;
        h.rings_offset = geometry.rings_offset;
        h.strings_offset = geometry.strings_offset;
        h.strings_bytes = geometry.strings_bytes;
        h.clock_realtime_ns = real;
        h.clock_monotonic_ns = mono;
        h.clock_ticks = if tsc { tsc_now } else { mono };
        h.clock_ticks_per_sec = if tsc { 0 } else { 1_000_000_000 };
        h.clock_resolution_us = resolution
            .map(|p| p.as_micros().min(u32::MAX as u128) as u32)
            .unwrap_or(0);
        put_str(&mut h.lib_version, env!("CARGO_PKG_VERSION"));
        put_str(&mut h.exe, &info.exe);
        put_str(&mut h.cmdline, &info.cmdline);
        h.state.store(RegionState::Live.code(), Ordering::Release);
        let category_counts = (0..geometry.max_devices).map(|_| AtomicU8::new(0)).collect();
        Region {
            _map: map,
            base,
            geometry,
            backing,
            owner_pid: info.pid,
            category_counts,
            devices: Mutex::new(Vec::new()),
            tags: Mutex::new(HashMap::new()),
            shared_shard: geometry.max_shards - 1,
            tsc,
        }
    }

    /// The region file, if it has one.
    pub(crate) fn path(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File { path, .. } => Some(path),
            Backing::Anonymous => None,
        }
    }

    pub(crate) fn header(&self) -> &RawHeader {
        // SAFETY: the header is at offset 0 of a mapping that lives as long as self; after
        // init, other threads only touch its atomic fields.
        unsafe { &*(self.base as *const RawHeader) }
    }

    fn device_entry(&self, index: u32) -> *mut RawDevice {
        debug_assert!(index < self.geometry.max_devices);
        // SAFETY: index < max_devices, so the entry lies inside the device table of the mapping.
        unsafe { self.base.add(self.geometry.device_offset(index) as usize) as *mut RawDevice }
    }

    pub(crate) fn shard(&self, shard: u32) -> &RawShard {
        debug_assert!(shard < self.geometry.max_shards);
        // SAFETY: shard < max_shards, so the header lies inside the shard table; its fields are
        // atomics, aligned by the page-aligned section and 64-byte stride.
        unsafe { &*(self.base.add(self.geometry.shard_offset(shard) as usize) as *const RawShard) }
    }

    #[inline(always)]
    pub(crate) fn cell(&self, shard: u32, device: u32, category: u32) -> &RawCell {
        // SAFETY: callers pass shard < max_shards, device < max_devices, category <
        // MAX_CATEGORIES (checked on the hot path), so the cell lies inside the counters section;
        // its fields are atomics.
        unsafe {
            &*(self
                .base
                .add(self.geometry.cell_offset(shard, device, category) as usize) as *const RawCell)
        }
    }

    fn strings(&self) -> &RawStrings {
        // SAFETY: the string header lies at strings_offset inside the mapping; atomics only.
        unsafe { &*(self.base.add(self.geometry.strings_offset as usize) as *const RawStrings) }
    }

    /// A published device entry, decoded (entries never change after publication).
    pub(crate) fn device_info(&self, index: u32) -> Option<ttmem_region::decode::Device> {
        if index
            >= self
                .header()
                .num_devices
                .load(Ordering::Acquire)
                .min(self.geometry.max_devices)
        {
            return None;
        }
        // SAFETY: the entry is inside the mapping and published (index < num_devices, read with
        // Acquire); published entries are never written again, so reading them as bytes is sound.
        let bytes = unsafe { std::slice::from_raw_parts(self.device_entry(index) as *const u8, DEVICE_ENTRY_SIZE) };
        ttmem_region::decode::decode_device(bytes).ok().flatten()
    }

    /// Registers a device, or returns the index it already has (same hardware id and logical id).
    /// The flag says whether the device is new.
    pub(crate) fn register_device(&self, spec: &DeviceSpec) -> Result<(u16, bool), ClientError> {
        if spec.categories.is_empty() || spec.categories.len() > MAX_CATEGORIES {
            return Err(ClientError::Categories(spec.categories.len()));
        }
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = devices
            .iter()
            .position(|&(hw, logical)| hw == spec.hw_id && logical == spec.logical_id)
        {
            return Ok((i as u16, false));
        }
        let index = devices.len() as u32;
        if index >= self.geometry.max_devices || index > u16::MAX as u32 {
            return Err(ClientError::TooManyDevices(self.geometry.max_devices));
        }
        // SAFETY: the entry is unpublished (state 0) and only written under the devices mutex,
        // so this is the only reference that writes it; readers skip it until state = 1.
        let d = unsafe { &mut *self.device_entry(index) };
        d.kind = spec.kind.code();
        d.hw_id = spec.hw_id;
        d.logical_id = spec.logical_id;
        d.num_categories = spec.categories.len() as u32;
        d.flags = if spec.remote { DEVICE_FLAG_REMOTE } else { 0 };
        put_str(&mut d.arch, &spec.arch);
        put_str(&mut d.name, &spec.name);
        for (slot, c) in d.categories.iter_mut().zip(&spec.categories) {
            put_str(&mut slot.name, &c.name);
            slot.capacity = c.capacity;
            slot.addr_base = c.addr_base;
            slot.addr_end = c.addr_end;
            slot.banks = c.banks;
            slot.alignment = c.alignment;
        }
        d.state.store(1, Ordering::Release);
        self.category_counts[index as usize].store(spec.categories.len() as u8, Ordering::Relaxed);
        self.header().num_devices.store(index + 1, Ordering::Release);
        devices.push((spec.hw_id, spec.logical_id));
        drop(devices);
        Ok((index as u16, true))
    }

    /// Copies the device table and tags of `parent` (a forked child's inherited view of its
    /// parent's region) so that device handles and tag ids stay valid in the child.
    pub(crate) fn inherit_from(&self, parent: &Region) {
        let n = parent
            .header()
            .num_devices
            .load(Ordering::Acquire)
            .min(self.geometry.max_devices);
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..n {
            // SAFETY: both entries are inside their tables; the parent's is published (i <
            // num_devices) and immutable, ours is unpublished and written under the mutex.
            unsafe {
                let src = &*parent.device_entry(i);
                let dst = &mut *self.device_entry(i);
                std::ptr::copy_nonoverlapping(
                    src as *const RawDevice as *const u8,
                    dst as *mut RawDevice as *mut u8,
                    DEVICE_ENTRY_SIZE,
                );
                self.category_counts[i as usize]
                    .store(src.num_categories.min(MAX_CATEGORIES as u32) as u8, Ordering::Relaxed);
                devices.push((src.hw_id, src.logical_id));
            }
        }
        self.header().num_devices.store(n, Ordering::Release);
        drop(devices);
        let used = parent
            .strings()
            .used
            .load(Ordering::Acquire)
            .min(self.geometry.strings_bytes);
        // SAFETY: both data areas are at least `used` bytes long (bounded by strings_bytes, and
        // both regions share the configuration's geometry or the parent's is capped by ours).
        unsafe {
            std::ptr::copy_nonoverlapping(
                parent.base.add(parent.geometry.strings_data_offset() as usize),
                self.base.add(self.geometry.strings_data_offset() as usize),
                used as usize,
            );
        }
        self.strings().used.store(used, Ordering::Release);
        self.strings()
            .count
            .store(parent.strings().count.load(Ordering::Relaxed), Ordering::Relaxed);
        *self.tags.lock().unwrap_or_else(|p| p.into_inner()) =
            parent.tags.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }

    /// Interns a tag, returning its id (0 when the table is full or the tag is empty).
    pub(crate) fn intern(&self, tag: &str) -> u32 {
        let mut n = tag.len().min(MAX_TAG_LEN);
        while !tag.is_char_boundary(n) {
            n -= 1;
        }
        let tag = &tag[..n];
        if tag.is_empty() {
            return 0;
        }
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&id) = tags.get(tag) {
            return id;
        }
        let s = self.strings();
        let used = s.used.load(Ordering::Relaxed);
        if used + 1 + n as u64 > self.geometry.strings_bytes || used >= u32::MAX as u64 {
            return 0;
        }
        // SAFETY: [used, used + 1 + n) lies inside the string data (checked above) and above the
        // published length, so no reader looks at it yet; writers are serialized by `tags`.
        unsafe {
            let dst = self.base.add((self.geometry.strings_data_offset() + used) as usize);
            *dst = n as u8;
            std::ptr::copy_nonoverlapping(tag.as_ptr(), dst.add(1), n);
        }
        s.used.store(used + 1 + n as u64, Ordering::Release);
        s.count.fetch_add(1, Ordering::Relaxed);
        let id = used as u32 + 1;
        tags.insert(tag.into(), id);
        id
    }

    /// Claims a free shard for thread `tid`, or the shared one when none is free.
    pub(crate) fn claim_shard(&self, tid: u32) -> u32 {
        for i in 0..self.shared_shard {
            let owner = &self.shard(i).owner_tid;
            if owner.load(Ordering::Relaxed) == 0
                && owner
                    .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.header().shards_used.fetch_max(i + 1, Ordering::Release);
                return i;
            }
        }
        self.shard(self.shared_shard)
            .owner_tid
            .store(u32::MAX, Ordering::Relaxed);
        self.header()
            .shards_used
            .store(self.geometry.max_shards, Ordering::Release);
        self.shared_shard
    }

    /// Gives a shard back when its thread exits. Its counters stay: the next owner continues them.
    pub(crate) fn release_shard(&self, shard: u32, current_pid: u32) {
        if shard != self.shared_shard && current_pid == self.owner_pid {
            self.shard(shard).owner_tid.store(0, Ordering::Release);
        }
    }

    /// Precomputed pointers to one shard, cached per thread so the hot path does no offset
    /// arithmetic beyond one index.
    pub(crate) fn shard_ref(&self, shard: u32, tid: u32) -> ShardRef {
        let g = &self.geometry;
        // SAFETY: shard < max_shards, so each offset lies inside the mapping (Geometry's
        // sections are sized for max_shards).
        unsafe {
            ShardRef {
                region: self as *const Region,
                cells: self.base.add(g.shard_counters_offset(shard) as usize) as *const RawCell,
                header: self.base.add(g.shard_offset(shard) as usize) as *const RawShard,
                ring: self.base.add(g.ring_offset(shard) as usize) as *const RawEvent,
                mask: g.ring_events as u64 - 1,
                shared: shard == self.shared_shard,
                tid,
            }
        }
    }

    /// Marks the region exited and removes its file (on a clean exit or drop).
    pub(crate) fn close(&self, keep_file: bool) {
        self.header().state.store(RegionState::Exited.code(), Ordering::Release);
        if let (Backing::File { path, .. }, false) = (&self.backing, keep_file) {
            let _ = fs::remove_file(path);
        }
    }

    /// The mapping's bytes, for tests and in-process readers.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self._map
    }

    /// The shared shard's index.
    pub(crate) fn shared_shard(&self) -> u32 {
        self.shared_shard
    }
}

/// Creates the region directory if needed: world-writable with the sticky bit (like /tmp), so
/// every user's processes can create their own regions there and remove only their own.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o1777))
        }
        Err(e) => Err(e),
    }
}
