//! The ttmem client: what a device runtime calls on every allocation and free.
//!
//! Each process writes one region (see `ttmem-region`): exact counters per device × category and
//! a ring of recent events. The hot path ([`Tracker::alloc`], [`Tracker::free`]) makes no system
//! call, takes no lock, never blocks and never fails: each thread owns a shard of the region and
//! updates it with plain stores. Readers (`ttmem ps`, the daemon) sum the shards.
//!
//! ```no_run
//! use ttmem_client::{global, tt, DeviceSpec, DeviceKind};
//! let t = global();
//! let dev = t.register_device(&DeviceSpec::tenstorrent(
//!     DeviceKind::Tenstorrent, 0x1234, 0, "wormhole_b0", "n150", tt::wormhole_categories(),
//! )).unwrap();
//! t.alloc(dev, tt::DRAM, 0x1000, 4096);
//! t.free(dev, tt::DRAM, 0x1000, 4096);
//! ```
//!
//! Environment (read once, by [`global`]): see the `ENV_*` constants in [`config`].

#![deny(missing_docs)]

mod clock;
pub mod config;
pub use clock::ClockMode;
mod proc_info;
mod region;
pub mod tt;

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Once, OnceLock};

use hashbrown::HashMap;
use parking_lot::Mutex;
pub use ttmem_region::DeviceKind;
use ttmem_region::decode::Counters;
use ttmem_region::raw::RawCell;

pub use config::Config;
use proc_info::ProcessInfo;
use region::{Op, Region, ShardRef};

/// Why a slow-path call failed. The hot path never fails.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The region directory could not be created or used.
    #[error("cannot use region directory {dir}: {source} (set TTMEM_DIR to a writable directory)")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The region file could not be created, sized or mapped.
    #[error("cannot create region {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration asks for an impossible region.
    #[error("invalid ttmem configuration: {0}")]
    Geometry(ttmem_region::GeometryError),
    /// The device table is full.
    #[error("too many devices: this region has room for {0} (raise max_devices)")]
    TooManyDevices(u32),
    /// A device declared no categories or more than the region allows.
    #[error("a device declares {0} categories; it must declare 1 to 16")]
    Categories(usize),
}

/// A registered device: an index into this process's device table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Device(pub u16);

/// One category a device declares: what it is called, how big it is, where it lives. The
/// same type readers decode, so a declaration round-trips exactly.
pub use ttmem_region::decode::Category as CategorySpec;

/// What a runtime tells ttmem about a device it opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Device kind.
    pub kind: DeviceKind,
    /// Stable hardware id (e.g. UMD unique chip id); registering the same (hw_id, logical_id)
    /// again returns the same [`Device`].
    pub hw_id: u64,
    /// The runtime's logical id.
    pub logical_id: i32,
    /// Architecture, e.g. `wormhole_b0`.
    pub arch: String,
    /// Display name, e.g. `n300-R`.
    pub name: String,
    /// A remote chip (reached through a local one).
    pub remote: bool,
    /// Categories, in the order their indices will be used.
    pub categories: Vec<CategorySpec>,
}

impl DeviceSpec {
    /// A local device of `kind` with the given categories.
    pub fn tenstorrent(
        kind: DeviceKind,
        hw_id: u64,
        logical_id: i32,
        arch: &str,
        name: &str,
        categories: Vec<CategorySpec>,
    ) -> Self {
        DeviceSpec {
            kind,
            hw_id,
            logical_id,
            arch: arch.into(),
            name: name.into(),
            remote: false,
            categories,
        }
    }
}

/// This process's counters for one category of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryUsage {
    /// Category name.
    pub name: String,
    /// Declared capacity (0: unknown).
    pub capacity: u64,
    /// Exact counters (summed over shards).
    pub counters: Counters,
}

/// This process's counters for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceUsage {
    /// Handle.
    pub device: Device,
    /// Display name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Hardware id.
    pub hw_id: u64,
    /// Per category, in declaration order.
    pub categories: Vec<CategoryUsage>,
}

/// An in-process view of this process's tracking (the old "in-process monitor").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The region file readers see (None: disabled, or anonymous because the directory was
    /// unusable).
    pub region_path: Option<PathBuf>,
    /// Per device.
    pub devices: Vec<DeviceUsage>,
    /// Events written to the rings.
    pub events_written: u64,
    /// Events overwritten before an attached reader read them.
    pub events_lost: u64,
    /// Calls that named an unregistered device or category (ignored).
    pub rejected: u64,
}

const ADDRESS_STRIPES: usize = 16;

/// Slow-path state, behind one lock (never taken on the hot path).
#[derive(Default)]
struct State {
    current: Option<Arc<Region>>,
    /// Regions replaced after a fork: kept alive so no thread-local pointer ever dangles.
    retired: Vec<Arc<Region>>,
    /// The parent's region, for a child created by fork that has not made its own yet.
    fork_parent: Option<Arc<Region>>,
    warned: bool,
    /// Why the region file could not be created (counting then goes on in-process).
    region_error: Option<String>,
}

/// Records allocations into this process's region. Use [`global`] in a runtime; separate
/// trackers (with their own region) are for tests and tools.
pub struct Tracker {
    config: Config,
    /// The current region (null: not created yet, disabled, or pending after fork).
    region: AtomicPtr<Region>,
    unavailable: AtomicBool,
    state: Mutex<State>,
    addresses: [Mutex<AddressMap>; ADDRESS_STRIPES],
}

/// (device, address) → (category, size) for runtimes that free by address only.
type AddressMap = HashMap<(u16, u64), (u8, u64)>;

/// The pid as of the last fork we saw, so a child never writes to its parent's region.
static CURRENT_PID: AtomicU32 = AtomicU32::new(0);

fn current_pid() -> u32 {
    match CURRENT_PID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}

/// The shard this thread owns in one region, released when the thread exits.
struct ShardOwner {
    owned: RefCell<Option<(Arc<Region>, u32)>>,
}

impl Drop for ShardOwner {
    fn drop(&mut self) {
        // Later calls from this thread (other thread-locals' destructors) must not use the
        // released shard: point the fast cache nowhere so they take the shared shard.
        let _ = FAST.try_with(|f| f.set(ShardRef::NONE));
        if let Some((r, shard)) = self.owned.get_mut().take() {
            r.release_shard(shard, current_pid());
        }
    }
}

thread_local! {
    /// Hot-path cache: the region this thread last wrote and precomputed pointers to its shard
    /// there. No destructor, so reading it is a plain thread-local load.
    static FAST: Cell<ShardRef> = const { Cell::new(ShardRef::NONE) };
    /// This thread's current tag id.
    static TAG: Cell<u32> = const { Cell::new(0) };
    static OWNER: ShardOwner = const { ShardOwner { owned: RefCell::new(None) } };
}

static GLOBAL: OnceLock<Tracker> = OnceLock::new();

/// The process-wide tracker, configured from the environment on first use. Its region is
/// created lazily, at the first registration or allocation. A clean exit removes the region
/// file; a fork gives the child its own region (created when the child first records).
pub fn global() -> &'static Tracker {
    GLOBAL.get_or_init(|| {
        let t = Tracker::new(Config::from_env());
        static HOOKS: Once = Once::new();
        HOOKS.call_once(|| {
            // SAFETY: the handlers are extern "C" fns with static lifetime that never unwind.
            unsafe {
                libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
                libc::atexit(at_exit);
            }
        });
        t
    })
}

extern "C" fn fork_prepare() {
    if let Some(t) = GLOBAL.get() {
        // Hold the slow-path lock across fork so the child inherits it in a consistent state.
        std::mem::forget(t.state.lock());
    }
}

extern "C" fn fork_parent() {
    if let Some(t) = GLOBAL.get() {
        // SAFETY: fork_prepare locked it in this thread and forgot the guard.
        unsafe { t.state.force_unlock() };
    }
}

extern "C" fn fork_child() {
    CURRENT_PID.store(std::process::id(), Ordering::Relaxed);
    if let Some(t) = GLOBAL.get() {
        // SAFETY: fork_prepare locked it in the forking thread, which is this one in the child.
        unsafe { t.state.force_unlock() };
        t.after_fork_in_child();
    }
}

extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(t) = GLOBAL.get() {
            t.shutdown();
        }
    });
}

impl Tracker {
    /// A tracker with its own region, created at first use.
    pub fn new(config: Config) -> Self {
        Tracker {
            unavailable: AtomicBool::new(config.disabled),
            config,
            region: AtomicPtr::new(std::ptr::null_mut()),
            state: Mutex::new(State::default()),
            addresses: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// Whether tracking is on (not disabled by configuration, and memory could be mapped).
    pub fn is_enabled(&self) -> bool {
        !self.unavailable.load(Ordering::Relaxed)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates the region if needed. Returns None when tracking is unavailable.
    #[cold]
    fn ensure_region(&self) -> Option<*const Region> {
        if self.unavailable.load(Ordering::Relaxed) {
            return None;
        }
        let mut st = self.state.lock();
        if let Some(r) = &st.current {
            return Some(Arc::as_ptr(r));
        }
        let mut info = ProcessInfo::current();
        if let Some(name) = &self.config.process_name {
            info.exe = name.clone();
        }
        let region = match Region::create(&self.config, &info) {
            Ok(r) => r,
            Err(e) => {
                st.region_error = Some(e.to_string());
                if !st.warned {
                    st.warned = true;
                    warn_once(&format!(
                        "ttmem: {e}; counting in-process only (ttmem ps will not see pid {})",
                        info.pid
                    ));
                }
                match Region::anonymous(&self.config, &info) {
                    Ok(r) => r,
                    Err(e) => {
                        warn_once(&format!("ttmem: tracking disabled: {e}"));
                        self.unavailable.store(true, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        };
        if let Some(parent) = st.fork_parent.take() {
            region.inherit_from(&parent);
            st.retired.push(parent);
        }
        let region = Arc::new(region);
        let ptr = Arc::as_ptr(&region);
        st.current = Some(region);
        self.region.store(ptr as *mut Region, Ordering::Release);
        Some(ptr)
    }

    fn after_fork_in_child(&self) {
        // Only this thread exists now. Stop writing the parent's region; make our own lazily
        // (a child that execs right away never creates one).
        self.region.store(std::ptr::null_mut(), Ordering::Release);
        let mut st = self.state.lock();
        if let Some(parent) = st.current.take() {
            st.fork_parent = Some(parent);
        }
        drop(st);
        for m in &self.addresses {
            if m.is_locked() {
                // SAFETY: in the child only this thread exists, so a locked stripe was held by a
                // parent thread that is gone here; nobody else can be inside it.
                unsafe { m.force_unlock() };
            }
            // The parent's buffers are not the child's to free.
            m.lock().clear();
        }
    }

    /// Runs `f` with the region and this thread's shard in it.
    #[inline(always)]
    fn with_shard(&self, f: impl FnOnce(&Region, &ShardRef, u32)) {
        let mut r = self.region.load(Ordering::Acquire) as *const Region;
        if r.is_null() {
            if self.unavailable.load(Ordering::Relaxed) {
                return;
            }
            match self.ensure_region() {
                Some(p) => r = p,
                None => return,
            }
        }
        let mut shard = FAST.with(Cell::get);
        if shard.region != r {
            shard = self.adopt(r);
        }
        // SAFETY: a region pointer published in `self.region` is owned by `self.state` (current
        // or retired) for the tracker's whole life, and `shard` points into it.
        let region = unsafe { &*r };
        f(region, &shard, TAG.with(Cell::get));
    }

    /// Claims a shard in region `r` for this thread (releasing any it held elsewhere) and caches
    /// it. A thread that is exiting gets the shared shard, uncached.
    #[cold]
    #[inline(never)]
    fn adopt(&self, r: *const Region) -> ShardRef {
        let arc = {
            let st = self.state.lock();
            st.current
                .iter()
                .chain(st.retired.iter())
                .find(|a| Arc::as_ptr(a) == r)
                .cloned()
        };
        // SAFETY: `r` was loaded from `self.region`, so the tracker's state keeps it alive.
        let region = unsafe { &*r };
        let Some(arc) = arc else {
            return region.shard_ref(region.shared_shard(), 0);
        };
        let tid = proc_info::thread_id();
        let adopted = OWNER.try_with(|o| {
            let mut owned = o.owned.borrow_mut();
            if let Some((old, shard)) = owned.take() {
                old.release_shard(shard, current_pid());
            }
            let shard = arc.claim_shard(tid);
            let s = arc.shard_ref(shard, tid);
            *owned = Some((arc.clone(), shard));
            FAST.with(|f| f.set(s));
            s
        });
        adopted.unwrap_or_else(|_| region.shard_ref(region.shared_shard(), tid))
    }

    /// Registers a device (idempotent for the same hardware and logical id). When tracking is
    /// disabled or unavailable this returns a handle whose calls do nothing, so a runtime never
    /// needs a separate path for "ttmem off".
    pub fn register_device(&self, spec: &DeviceSpec) -> Result<Device, ClientError> {
        let Some(r) = self.ensure_region() else {
            return Ok(Device(0));
        };
        // SAFETY: see `with_shard`: published regions live as long as the tracker.
        let (index, new) = unsafe { &*r }.register_device(spec)?;
        if new {
            // The registration is an event too, so a reader's timeline shows it.
            self.with_shard(|r, s, tag| {
                r.write_event(
                    s,
                    ttmem_region::EventKind::DeviceRegistered.code(),
                    0,
                    index,
                    tag,
                    spec.hw_id,
                    index as u64,
                )
            });
        }
        Ok(Device(index))
    }

    /// Records an allocation of `size` bytes at `address` in `category` of `device`.
    /// No system call, no lock, never blocks; an unregistered device or category is counted as
    /// rejected and otherwise ignored.
    #[inline]
    pub fn alloc(&self, device: Device, category: u8, address: u64, size: u64) {
        self.with_shard(|r, s, tag| {
            r.record(s, Op::Alloc, device.0, category, address, size, tag);
        });
    }

    /// Records a free. The caller passes the size it freed (runtimes know it); see
    /// [`Tracker::free_addr`] for runtimes that only know the address.
    #[inline]
    pub fn free(&self, device: Device, category: u8, address: u64, size: u64) {
        self.with_shard(|r, s, tag| {
            r.record(s, Op::Free, device.0, category, address, size, tag);
        });
    }

    fn stripe(&self, device: Device, address: u64) -> &Mutex<AddressMap> {
        let h = (address >> 5) ^ (address >> 17) ^ device.0 as u64;
        &self.addresses[(h as usize) % ADDRESS_STRIPES]
    }

    /// Like [`Tracker::alloc`], and remembers the address so [`Tracker::free_addr`] can free it
    /// by address alone. Costs a striped process-local lock and a map insert (see the bench).
    pub fn alloc_mapped(&self, device: Device, category: u8, address: u64, size: u64) {
        if !self.is_enabled() {
            return;
        }
        self.stripe(device, address)
            .lock()
            .insert((device.0, address), (category, size));
        self.alloc(device, category, address, size);
    }

    /// Frees an address recorded by [`Tracker::alloc_mapped`]. Returns false (and records a
    /// `free-unknown` event) when the address is not known.
    pub fn free_addr(&self, device: Device, address: u64) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let known = self.stripe(device, address).lock().remove(&(device.0, address));
        match known {
            Some((category, size)) => {
                self.free(device, category, address, size);
                true
            }
            None => {
                self.with_shard(|r, s, tag| {
                    r.write_event(
                        s,
                        ttmem_region::EventKind::FreeUnknown.code(),
                        0,
                        device.0,
                        tag,
                        address,
                        0,
                    )
                });
                false
            }
        }
    }

    /// Tags this thread's events until the guard drops (e.g. an op or tensor name). Scopes nest.
    pub fn tag(&self, name: &str) -> TagScope {
        TagScope {
            previous: self.push_tag(name),
            _not_send: PhantomData,
        }
    }

    /// Sets this thread's tag and returns the previous one, for callers that cannot hold a
    /// guard (the C ABI). Restore it with [`Tracker::pop_tag`].
    pub fn push_tag(&self, name: &str) -> u32 {
        let id = match self.ensure_region() {
            // SAFETY: see `with_shard`.
            Some(r) => unsafe { &*r }.intern(name),
            None => 0,
        };
        TAG.try_with(|t| t.replace(id)).unwrap_or(0)
    }

    /// Restores a tag returned by [`Tracker::push_tag`].
    pub fn pop_tag(&self, previous: u32) {
        let _ = TAG.try_with(|t| t.set(previous));
    }

    /// Writes a `mark` event with a tag (a phase boundary, a step number).
    pub fn mark(&self, device: Device, name: &str) {
        let Some(r) = self.ensure_region() else { return };
        // SAFETY: see `with_shard`.
        let id = unsafe { &*r }.intern(name);
        self.with_shard(|r, s, _tag| r.write_event(s, ttmem_region::EventKind::Mark.code(), 0, device.0, id, 0, 0));
    }

    /// The region file readers see, if there is one.
    pub fn region_path(&self) -> Option<PathBuf> {
        let st = self.state.lock();
        st.current.as_ref().and_then(|r| r.path().map(Into::into))
    }

    /// Why this process's region file could not be created, if it could not: readers then do
    /// not see the process, while its counters still count in-process.
    pub fn region_error(&self) -> Option<String> {
        self.state.lock().region_error.clone()
    }

    /// The exact counters of one device category, summed over shards (None: unknown device or
    /// category, or no region). Reads one cell per shard, not the whole region.
    pub fn counters(&self, device: Device, category: u8) -> Option<Counters> {
        let region = self.state.lock().current.clone()?;
        let d = device.0 as u32;
        if category as u32 >= region.categories_of(d) {
            return None;
        }
        Some(cell_total(&region, d, category as u32))
    }

    /// This process's exact counters, read from its own region.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock();
        let Some(region) = st.current.clone() else {
            return Snapshot::default();
        };
        drop(st);
        let g = region.geometry;
        let mut snap = Snapshot {
            region_path: region.path().map(Into::into),
            ..Default::default()
        };
        for s in 0..g.max_shards {
            let sh = region.shard(s);
            snap.events_written += sh.head.load(Ordering::Relaxed);
            snap.events_lost += sh.lost.load(Ordering::Relaxed);
            snap.rejected += sh.rejected.load(Ordering::Relaxed);
        }
        let n = region.header().num_devices.load(Ordering::Acquire).min(g.max_devices);
        for d in 0..n {
            let Some(info) = region.device_info(d) else { continue };
            let mut categories = Vec::new();
            for (c, desc) in info.categories.into_iter().enumerate() {
                categories.push(CategoryUsage {
                    name: desc.name,
                    capacity: desc.capacity,
                    counters: cell_total(&region, d, c as u32),
                });
            }
            snap.devices.push(DeviceUsage {
                device: Device(d as u16),
                name: info.name,
                arch: info.arch,
                hw_id: info.hw_id,
                categories,
            });
        }
        snap
    }

    /// Marks the region exited and removes its file (unless `TTMEM_KEEP_ON_EXIT`). Later calls
    /// keep counting in memory. Called automatically at a clean exit for [`global`].
    pub fn shutdown(&self) {
        if let Some(r) = self.state.try_lock().and_then(|st| st.current.clone())
            && r.owner_pid == current_pid()
        {
            r.close(self.config.keep_on_exit);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One device category's counters summed over the shards in use and the shared one.
fn cell_total(region: &Region, device: u32, category: u32) -> Counters {
    let g = region.geometry;
    let shards = region.header().shards_used.load(Ordering::Acquire).min(g.max_shards);
    let mut total = Counters::default();
    for s in (0..shards)
        .chain(std::iter::once(region.shared_shard()))
        .collect::<std::collections::BTreeSet<_>>()
    {
        total.add_shard(&read_cell(region.cell(s, device, category)));
    }
    total
}

fn read_cell(c: &RawCell) -> Counters {
    Counters {
        live_bytes: c.live_bytes.load(Ordering::Relaxed),
        live_count: c.live_count.load(Ordering::Relaxed),
        allocs: c.allocs.load(Ordering::Relaxed),
        frees: c.frees.load(Ordering::Relaxed),
        alloc_bytes: c.alloc_bytes.load(Ordering::Relaxed),
        free_bytes: c.free_bytes.load(Ordering::Relaxed),
        peak_bytes: c.peak_bytes.load(Ordering::Relaxed),
    }
}

/// Emits a warning through `tracing`, and on stderr when no subscriber is installed, so that a
/// C or Python host without logging still hears it once.
fn warn_once(msg: &str) {
    tracing::warn!("{msg}");
    if !tracing::dispatcher::has_been_set() {
        eprintln!("{msg}");
    }
}

/// Restores the previous tag of this thread when dropped.
#[must_use = "the tag applies until this guard is dropped"]
pub struct TagScope {
    previous: u32,
    _not_send: PhantomData<*const ()>,
}

impl Drop for TagScope {
    fn drop(&mut self) {
        let _ = TAG.try_with(|t| t.set(self.previous));
    }
}

#[cfg(test)]
mod tests;
