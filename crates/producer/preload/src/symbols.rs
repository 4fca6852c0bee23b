//! TT-Metal's exported functions, found lazily inside the loaded `libtt_metal.so`.
//!
//! Python loads `libtt_metal.so` with `RTLD_LOCAL` after this library's constructors ran, so
//! neither `RTLD_NEXT` nor `RTLD_DEFAULT` finds it: the library is located among the loaded
//! objects (`dl_iterate_phdr`), opened again without loading (`RTLD_NOLOAD`), and searched by
//! handle, which finds its own definitions, not ours. Only exported functions are used, never a
//! field offset; the one ABI fact relied on is the Itanium rule that a polymorphic object starts
//! with its vtable pointer, whose entry -1 is the object's type information.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

/// `GraphTracker::track_allocate(Buffer const*)`.
pub const TRACK_ALLOCATE: &str = "_ZN2tt8tt_metal12GraphTracker14track_allocateEPKNS0_6BufferE";
/// `GraphTracker::track_deallocate(Buffer*)`.
pub const TRACK_DEALLOCATE: &str = "_ZN2tt8tt_metal12GraphTracker16track_deallocateEPNS0_6BufferE";
/// `GraphTracker::track_allocate_cb(CoreRangeSet const&, unsigned long, unsigned long, bool,
/// IDevice const*)`.
pub const TRACK_ALLOCATE_CB: &str =
    "_ZN2tt8tt_metal12GraphTracker17track_allocate_cbERKNS0_12CoreRangeSetEmmbPKNS0_7IDeviceE";
/// `GraphTracker::track_deallocate_cb(IDevice const*)`.
pub const TRACK_DEALLOCATE_CB: &str = "_ZN2tt8tt_metal12GraphTracker19track_deallocate_cbEPKNS0_7IDeviceE";

/// A `CoreCoord` returned by value (two `size_t`, in RAX:RDX).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct Coord {
    /// Columns.
    pub x: u64,
    /// Rows.
    pub y: u64,
}

/// `this`, then a buffer.
pub type AllocateFn = unsafe extern "C" fn(*mut c_void, *const c_void);
/// `this`, then a buffer.
pub type DeallocateFn = unsafe extern "C" fn(*mut c_void, *mut c_void);
/// `this`, core ranges, address, size, globally allocated, device.
pub type AllocateCbFn = unsafe extern "C" fn(*mut c_void, *const c_void, u64, u64, bool, *const c_void);
/// `this`, device.
pub type DeallocateCbFn = unsafe extern "C" fn(*mut c_void, *const c_void);

/// What reading a buffer and a mesh device needs.
#[derive(Copy, Clone)]
pub struct Accessors {
    /// `Buffer::address() const`.
    pub address: unsafe extern "C" fn(*const c_void) -> u64,
    /// `Buffer::size() const`.
    pub size: unsafe extern "C" fn(*const c_void) -> u64,
    /// `Buffer::buffer_type() const` (0 DRAM, 1 L1, 2 SYSTEM_MEMORY, 3 L1_SMALL, 4 TRACE).
    pub buffer_type: unsafe extern "C" fn(*const c_void) -> u32,
    /// `Buffer::device() const`.
    pub device: unsafe extern "C" fn(*const c_void) -> *const c_void,
    /// Type information of `distributed::MeshDevice`.
    pub mesh_typeinfo: *const c_void,
    /// `MeshDevice::id() const`.
    pub mesh_id: unsafe extern "C" fn(*const c_void) -> u32,
    /// `MeshDevice::num_devices() const`.
    pub mesh_num_devices: unsafe extern "C" fn(*const c_void) -> u64,
    /// `MeshDevice::arch() const` (1 Grayskull, 2 Wormhole B0, 3 Blackhole, 4 Quasar).
    pub arch: unsafe extern "C" fn(*const c_void) -> u32,
    /// `MeshDevice::num_dram_channels() const`.
    pub num_dram_channels: unsafe extern "C" fn(*const c_void) -> c_int,
    /// `MeshDevice::dram_size_per_channel() const`.
    pub dram_size_per_channel: unsafe extern "C" fn(*const c_void) -> u32,
    /// `MeshDevice::l1_size_per_core() const`.
    pub l1_size_per_core: unsafe extern "C" fn(*const c_void) -> u32,
    /// `MeshDevice::compute_with_storage_grid_size() const`.
    pub grid: unsafe extern "C" fn(*const c_void) -> Coord,
}

// SAFETY: the pointers are code and read-only data addresses of a loaded library that stays
// loaded (we hold a handle); calling them from any thread is what TT-Metal does itself.
unsafe impl Send for Accessors {}
// SAFETY: as above; nothing is mutated through them.
unsafe impl Sync for Accessors {}

/// TT-Metal's side, resolved once.
pub struct Api {
    /// The originals (None: not found, so the call cannot be forwarded).
    pub track_allocate: Option<AllocateFn>,
    /// See above.
    pub track_deallocate: Option<DeallocateFn>,
    /// See above.
    pub track_allocate_cb: Option<AllocateCbFn>,
    /// See above.
    pub track_deallocate_cb: Option<DeallocateCbFn>,
    /// None when an accessor is missing (another TT-Metal version): calls are forwarded
    /// untouched and nothing is reported.
    pub accessors: Option<Accessors>,
    /// Why something is missing, for the one warning.
    pub missing: Vec<String>,
}

extern "C" fn find_tt_metal(info: *mut libc::dl_phdr_info, _size: usize, out: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the call, and `out` is the
    // `*mut Option<CString>` that `locate` passed.
    unsafe {
        let name = (*info).dlpi_name;
        if name.is_null() {
            return 0;
        }
        let name = CStr::from_ptr(name);
        let file = name.to_bytes().rsplit(|&b| b == b'/').next().unwrap_or_default();
        if file.starts_with(b"libtt_metal.so") {
            *(out as *mut Option<CString>) = Some(name.to_owned());
            return 1;
        }
    }
    0
}

/// The loaded `libtt_metal.so`, opened again without loading it.
fn locate() -> Option<*mut c_void> {
    let mut path: Option<CString> = None;
    // SAFETY: the callback only reads the info it is given and writes `path`, which outlives
    // the call.
    unsafe { libc::dl_iterate_phdr(Some(find_tt_metal), &mut path as *mut Option<CString> as *mut c_void) };
    let path = path?;
    // SAFETY: a valid NUL-terminated path; RTLD_NOLOAD only returns an already loaded object.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    (!h.is_null()).then_some(h)
}

/// The address of `name` in `handle` (null handle: the next object after this one).
fn lookup(handle: Option<*mut c_void>, name: &str) -> Option<*mut c_void> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlsym with a handle from dlopen, or RTLD_NEXT, and a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle.unwrap_or(libc::RTLD_NEXT), c.as_ptr() as *const c_char) };
    (!p.is_null()).then_some(p)
}

impl Api {
    /// Resolves everything; what is missing is listed, never fatal.
    pub fn resolve() -> Api {
        let handle = locate();
        let mut missing = Vec::new();
        if handle.is_none() {
            missing.push("libtt_metal.so is not loaded in this process".to_string());
        }
        let mut get = |name: &str| {
            let p = lookup(handle, name);
            if p.is_none() {
                missing.push(name.to_string());
            }
            p
        };
        // Each symbol is the exported function of that mangled name, whose C++ signature (with
        // `this` first) the target type spells out.
        macro_rules! func {
            ($name:expr) => {
                // SAFETY: see above: a function of the named signature.
                get($name).map(|p| unsafe { std::mem::transmute::<*mut c_void, _>(p) })
            };
        }
        let track_allocate: Option<AllocateFn> = func!(TRACK_ALLOCATE);
        let track_deallocate: Option<DeallocateFn> = func!(TRACK_DEALLOCATE);
        let track_allocate_cb: Option<AllocateCbFn> = func!(TRACK_ALLOCATE_CB);
        let track_deallocate_cb: Option<DeallocateCbFn> = func!(TRACK_DEALLOCATE_CB);
        let accessors = (|| {
            Some(Accessors {
                address: func!("_ZNK2tt8tt_metal6Buffer7addressEv")?,
                size: func!("_ZNK2tt8tt_metal6Buffer4sizeEv")?,
                buffer_type: func!("_ZNK2tt8tt_metal6Buffer11buffer_typeEv")?,
                device: func!("_ZNK2tt8tt_metal6Buffer6deviceEv")?,
                mesh_typeinfo: get("_ZTIN2tt8tt_metal11distributed10MeshDeviceE")? as *const c_void,
                mesh_id: func!("_ZNK2tt8tt_metal11distributed10MeshDevice2idEv")?,
                mesh_num_devices: func!("_ZNK2tt8tt_metal11distributed10MeshDevice11num_devicesEv")?,
                arch: func!("_ZNK2tt8tt_metal11distributed10MeshDevice4archEv")?,
                num_dram_channels: func!("_ZNK2tt8tt_metal11distributed10MeshDevice17num_dram_channelsEv")?,
                dram_size_per_channel: func!("_ZNK2tt8tt_metal11distributed10MeshDevice21dram_size_per_channelEv")?,
                l1_size_per_core: func!("_ZNK2tt8tt_metal11distributed10MeshDevice16l1_size_per_coreEv")?,
                grid: func!("_ZNK2tt8tt_metal11distributed10MeshDevice30compute_with_storage_grid_sizeEv")?,
            })
        })();
        Api {
            track_allocate,
            track_deallocate,
            track_allocate_cb,
            track_deallocate_cb,
            accessors,
            missing,
        }
    }
}

impl Accessors {
    /// Whether a device object is a `MeshDevice`: its type information, found through its
    /// vtable pointer, is `MeshDevice`'s.
    ///
    /// # Safety
    /// `device` is null or a live polymorphic TT-Metal device object.
    pub unsafe fn is_mesh(&self, device: *const c_void) -> bool {
        if device.is_null() {
            return false;
        }
        // SAFETY: a polymorphic object starts with its vtable pointer, and entry -1 of a
        // vtable is the type information (Itanium C++ ABI).
        unsafe {
            let vtable = *(device as *const *const *const c_void);
            !vtable.is_null() && *vtable.offset(-1) == self.mesh_typeinfo
        }
    }
}
