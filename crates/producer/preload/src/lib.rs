//! `libttmem_ttmetal.so`: preloaded into an unchanged TT-Metal process (`ttmem run -- CMD`), it
//! reports every buffer, at the address TT-Metal gives it, through the ttmem client (the
//! process's own region), so the ledger, fit, fragmentation, leaks and the flight recorder work
//! for real TT-Metal buffers.
//!
//! `libtt_metal.so` calls `GraphTracker::track_allocate` / `track_deallocate` (and the CB pair)
//! for every buffer of every thread through its PLT, so a preloaded definition of the same
//! symbol is called instead. Each definition here calls TT-Metal's own every time, reads the
//! buffer only through exported accessors, and reports it. Symbols are resolved at the first
//! call, inside the loaded `libtt_metal.so` ([`symbols`]); a buffer's chips come from its
//! `MeshDevice` ([`chips`]). When anything is missing or does not match, calls are forwarded
//! untouched, one warning is printed, and the program is never disturbed.
//!
//! Written in Rust, like the client it reports through: one toolchain builds and tests it, and
//! the only C++ knowledge it needs is the mangled names and the Itanium ABI's calling and vtable
//! conventions, which a thin C++ shim would need as well.

#![deny(missing_docs)]

pub mod chips;
pub mod symbols;

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ttmem_client::{Device, tt};

use crate::symbols::{Accessors, Api};

static API: OnceLock<Api> = OnceLock::new();
/// Meshes a process maps at most (a few in practice; buffers of more are counted, not shown).
const MAX_MESHES: usize = 16;

/// One mapped mesh: written once (its chips, then its key), then only read, without a lock.
struct MeshSlot {
    /// The device object's address (0: free).
    key: AtomicUsize,
    /// Its chips' handles.
    devices: OnceLock<Vec<Device>>,
}

/// Device object → its chips' handles: the hot path scans a few atomics, no lock, no
/// allocation.
static MESHES: [MeshSlot; MAX_MESHES] = [const {
    MeshSlot {
        key: AtomicUsize::new(0),
        devices: OnceLock::new(),
    }
}; MAX_MESHES];
/// Serializes mapping (the cold path).
static MAPPING: Mutex<()> = Mutex::new(());
/// Chips earlier meshes were mapped to.
static TAKEN: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
/// Live circular buffers of one device object: (address, size).
type Cbs = Vec<(u64, u64)>;
/// Live circular buffers per device object.
static CBS: Mutex<Option<HashMap<usize, Cbs>>> = Mutex::new(None);
/// Buffers whose device is not a mesh (not reported).
static UNMAPPED: AtomicU64 = AtomicU64::new(0);

/// Prints one line on standard error, once per process: a preloaded library has no other way
/// to tell the user (the host program installed no logger for it).
pub(crate) fn warn_once(msg: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "ttmem-preload: {msg}");
    }
}

fn api() -> &'static Api {
    API.get_or_init(|| {
        let a = Api::resolve();
        if !a.missing.is_empty() {
            warn_once(&format!(
                "TT-Metal's functions do not match this version of ttmem ({} missing, e.g. {}); forwarding its calls untouched",
                a.missing.len(),
                a.missing[0]
            ));
        }
        a
    })
}

/// The ttmem category of a TT-Metal `BufferType`.
fn category(buffer_type: u32) -> Option<u8> {
    match buffer_type & 0xFF {
        0 => Some(tt::DRAM),
        1 => Some(tt::L1),
        2 => Some(tt::SYSTEM_MEMORY),
        3 => Some(tt::L1_SMALL),
        4 => Some(tt::TRACE),
        _ => None,
    }
}

/// Runs `f` with the chips of a device object, mapping a mesh the first time it is seen.
///
/// # Safety
/// `device` is null or a live TT-Metal device object.
unsafe fn with_chips(a: &Accessors, device: *const c_void, f: impl FnOnce(&[Device])) {
    let key = device as usize;
    if let Some(devices) = mapped(key) {
        f(devices);
        return;
    }
    // SAFETY: the caller's contract.
    if key == 0 || !unsafe { a.is_mesh(device) } {
        UNMAPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let _one = MAPPING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(devices) = mapped(key) {
        f(devices);
        return;
    }
    let Some(slot) = MESHES.iter().find(|s| s.key.load(Ordering::Acquire) == 0) else {
        UNMAPPED.fetch_add(1, Ordering::Relaxed);
        warn_once("more meshes than ttmem maps in one process; the buffers of the others are not shown");
        return;
    };
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a live MeshDevice (checked above).
    let mesh = unsafe { chips::map_mesh(a, device, taken.get_or_insert_with(HashSet::new)) };
    let devices = slot.devices.get_or_init(|| mesh.devices);
    // Published after its chips: a reader that sees the key finds them.
    slot.key.store(key, Ordering::Release);
    f(devices);
}

/// The chips of a mapped device object.
#[inline]
fn mapped(key: usize) -> Option<&'static [Device]> {
    for slot in &MESHES {
        match slot.key.load(Ordering::Acquire) {
            0 => return None,
            k if k == key => return slot.devices.get().map(Vec::as_slice),
            _ => {}
        }
    }
    None
}

/// What a buffer is: (device object, category, address, size).
///
/// # Safety
/// `buffer` is a live TT-Metal `Buffer`.
unsafe fn read(a: &Accessors, buffer: *const c_void) -> Option<(*const c_void, u8, u64, u64)> {
    if buffer.is_null() {
        return None;
    }
    // SAFETY: exported const accessors of a live Buffer, `this` first.
    unsafe {
        Some((
            (a.device)(buffer),
            category((a.buffer_type)(buffer))?,
            (a.address)(buffer),
            (a.size)(buffer),
        ))
    }
}

/// Interposes `GraphTracker::track_allocate(Buffer const*)`: TT-Metal's own runs first (it also
/// claims this process's slot in its counter files), then the buffer is reported on each chip
/// of its mesh.
///
/// # Safety
/// Called by `libtt_metal.so` with its GraphTracker and a live, allocated Buffer.
#[unsafe(export_name = "_ZN2tt8tt_metal12GraphTracker14track_allocateEPKNS0_6BufferE")]
pub unsafe extern "C" fn track_allocate(this: *mut c_void, buffer: *const c_void) {
    let api = api();
    if let Some(original) = api.track_allocate {
        // SAFETY: TT-Metal's own function, with the arguments it was called with.
        unsafe { original(this, buffer) };
    }
    let Some(a) = api.accessors else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the buffer is live for the duration of the call.
        if let Some((device, cat, address, size)) = unsafe { read(&a, buffer) } {
            let t = ttmem_client::global();
            // SAFETY: the buffer's device is a live device object.
            unsafe {
                with_chips(&a, device, |chips| {
                    chips.iter().for_each(|&d| t.alloc(d, cat, address, size))
                })
            };
        }
    }));
}

/// Interposes `GraphTracker::track_deallocate(Buffer*)`: the buffer is read before TT-Metal's
/// own runs (it may release it), and its free reported after.
///
/// # Safety
/// Called by `libtt_metal.so` with its GraphTracker and a live Buffer being deallocated.
#[unsafe(export_name = "_ZN2tt8tt_metal12GraphTracker16track_deallocateEPNS0_6BufferE")]
pub unsafe extern "C" fn track_deallocate(this: *mut c_void, buffer: *mut c_void) {
    let api = api();
    let seen = api.accessors.and_then(|a| {
        // SAFETY: the buffer is live until TT-Metal's own function returns.
        catch_unwind(AssertUnwindSafe(|| unsafe { read(&a, buffer) }))
            .ok()
            .flatten()
            .map(|r| (a, r))
    });
    if let Some(original) = api.track_deallocate {
        // SAFETY: TT-Metal's own function, with the arguments it was called with.
        unsafe { original(this, buffer) };
    }
    if let Some((a, (device, cat, address, size))) = seen {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let t = ttmem_client::global();
            // SAFETY: the device outlives its buffers.
            unsafe {
                with_chips(&a, device, |chips| {
                    chips.iter().for_each(|&d| t.free(d, cat, address, size))
                })
            };
        }));
    }
}

/// Interposes `GraphTracker::track_allocate_cb(CoreRangeSet const&, unsigned long address,
/// unsigned long size, bool, IDevice const*)`: a circular buffer of a program, reported as CB
/// on the device's chips (when it is a mesh) until the device's CBs are released.
///
/// # Safety
/// Called by `libtt_metal.so` with its own arguments.
#[unsafe(export_name = "_ZN2tt8tt_metal12GraphTracker17track_allocate_cbERKNS0_12CoreRangeSetEmmbPKNS0_7IDeviceE")]
pub unsafe extern "C" fn track_allocate_cb(
    this: *mut c_void,
    core_ranges: *const c_void,
    address: u64,
    size: u64,
    globally_allocated: bool,
    device: *const c_void,
) {
    let api = api();
    if let Some(original) = api.track_allocate_cb {
        // SAFETY: TT-Metal's own function, with the arguments it was called with.
        unsafe { original(this, core_ranges, address, size, globally_allocated, device) };
    }
    let Some(a) = api.accessors else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let t = ttmem_client::global();
        let mut reported = false;
        // SAFETY: a live device object of TT-Metal's.
        unsafe {
            with_chips(&a, device, |chips| {
                reported = true;
                chips.iter().for_each(|&d| t.alloc(d, tt::CB, address, size));
            })
        };
        if reported {
            let mut cbs = CBS.lock().unwrap_or_else(|p| p.into_inner());
            cbs.get_or_insert_with(HashMap::new)
                .entry(device as usize)
                .or_default()
                .push((address, size));
        }
    }));
}

/// Interposes `GraphTracker::track_deallocate_cb(IDevice const*)`: every CB of the device is
/// released.
///
/// # Safety
/// Called by `libtt_metal.so` with its own arguments.
#[unsafe(export_name = "_ZN2tt8tt_metal12GraphTracker19track_deallocate_cbEPKNS0_7IDeviceE")]
pub unsafe extern "C" fn track_deallocate_cb(this: *mut c_void, device: *const c_void) {
    let api = api();
    if let Some(original) = api.track_deallocate_cb {
        // SAFETY: TT-Metal's own function, with the arguments it was called with.
        unsafe { original(this, device) };
    }
    let Some(a) = api.accessors else { return };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let released = CBS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .and_then(|m| m.remove(&(device as usize)))
            .unwrap_or_default();
        if released.is_empty() {
            return;
        }
        let t = ttmem_client::global();
        // SAFETY: a live device object of TT-Metal's.
        unsafe {
            with_chips(&a, device, |chips| {
                for &(address, size) in &released {
                    chips.iter().for_each(|&d| t.free(d, tt::CB, address, size));
                }
            })
        };
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_types_map_to_ttmem_categories() {
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 0x100].map(category),
            [
                Some(tt::DRAM),
                Some(tt::L1),
                Some(tt::SYSTEM_MEMORY),
                Some(tt::L1_SMALL),
                Some(tt::TRACE),
                None,
                Some(tt::DRAM)
            ]
        );
    }

    #[test]
    fn without_tt_metal_nothing_resolves_and_nothing_is_called() {
        // This test process has no libtt_metal.so: the API reports what is missing.
        let a = Api::resolve();
        assert!(a.accessors.is_none());
        assert!(a.missing.iter().any(|m| m.contains("libtt_metal.so is not loaded")));
    }
}
