//! The C ABI of the ttmem client: `libttmem.so`, `libttmem.a` and `include/ttmem.h`.
//!
//! Every function runs inside a panic guard and never unwinds into C. The hot-path functions
//! (`ttmem_alloc`, `ttmem_free`) return nothing and never fail; slow-path functions return a
//! [`ttmem_result`]. All strings are borrowed for the duration of the call only; nothing
//! returned needs freeing. All functions act on the process-wide tracker, configured from
//! `TTMEM_*` environment variables on first use. A call that returns anything but `TTMEM_OK`
//! leaves a sentence saying why for `ttmem_last_error` (per thread).

#![deny(missing_docs)]
#![allow(non_camel_case_types)]

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use ttmem_client::{CategorySpec, ClientError, Device, DeviceKind, DeviceSpec, global};

/// Result codes of the slow-path functions.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ttmem_result {
    /// Success.
    TTMEM_OK = 0,
    /// Tracking is disabled (`TTMEM_DISABLE=1`) or unavailable; the call did nothing.
    TTMEM_DISABLED = 1,
    /// A null pointer, a string that is not UTF-8, or an out-of-range value.
    TTMEM_INVALID_ARGUMENT = 2,
    /// The device table is full.
    TTMEM_TOO_MANY_DEVICES = 3,
    /// The region file could not be created (`ttmem_last_error` says which directory and
    /// why); the device is registered and counting continues in-process, unseen by readers.
    TTMEM_IO_ERROR = 4,
    /// An internal error (a Rust panic was caught).
    TTMEM_INTERNAL_ERROR = 5,
}

use ttmem_result::*;

/// One category a device declares.
#[repr(C)]
pub struct ttmem_category {
    /// NUL-terminated name, e.g. "DRAM" (at most 16 bytes are kept).
    pub name: *const c_char,
    /// Allocatable bytes across banks (0: unknown).
    pub capacity: u64,
    /// First allocatable address of one bank.
    pub addr_base: u64,
    /// End of one bank's range (exclusive).
    pub addr_end: u64,
    /// Banks the range repeats across (1 for a flat space).
    pub banks: u32,
    /// Alignment in bytes.
    pub alignment: u32,
}

/// A device to register.
#[repr(C)]
pub struct ttmem_device_desc {
    /// Device kind: 1 Tenstorrent, 2 simulated Tenstorrent, 3 CUDA, other values as given.
    pub kind: u32,
    /// Stable hardware id (0: unknown).
    pub hw_id: u64,
    /// The runtime's logical id.
    pub logical_id: i32,
    /// Non-zero for a remote chip.
    pub remote: c_int,
    /// NUL-terminated architecture, e.g. "wormhole_b0".
    pub arch: *const c_char,
    /// NUL-terminated display name.
    pub name: *const c_char,
    /// `num_categories` category descriptors.
    pub categories: *const ttmem_category,
    /// 1 to 16.
    pub num_categories: u32,
}

/// Counters of one device category in this process.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct ttmem_counters {
    /// Live bytes.
    pub live_bytes: i64,
    /// Live allocations.
    pub live_count: i64,
    /// Allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Bytes freed.
    pub free_bytes: u64,
    /// Peak live bytes.
    pub peak_bytes: i64,
}

fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

std::thread_local! {
    /// Why this thread's last call that returned an error did.
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Returns `code`, leaving `why` for `ttmem_last_error`.
fn fail(code: ttmem_result, why: impl Into<String>) -> ttmem_result {
    let why = why.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = why);
    code
}

/// Copies `bytes` into a C buffer of `len` bytes (NUL-terminated, truncated); returns the full
/// length. A null `buf` only asks the length.
///
/// # Safety
/// `buf` is null or points to `len` writable bytes.
unsafe fn copy_out(bytes: &[u8], buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = bytes.len().min(len - 1);
        // SAFETY: buf has len writable bytes and n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n);
            *buf.add(n) = 0;
        }
    }
    bytes.len()
}

/// A required string argument: `Err` names what is wrong with it (null, or not UTF-8).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char, what: &str) -> Result<String, ttmem_result> {
    if p.is_null() {
        return Err(fail(TTMEM_INVALID_ARGUMENT, format!("{what} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    match unsafe { CStr::from_ptr(p) }.to_str() {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(fail(TTMEM_INVALID_ARGUMENT, format!("{what} is not UTF-8: {e}"))),
    }
}

/// An optional string (a tag): null is none, and bytes that are not UTF-8 are replaced, since
/// the hot-path callers have no result to report an error with.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string valid for the call.
unsafe fn lossy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Registers a device; writes its handle to `*out_device`. Registering the same (hw_id,
/// logical_id) again returns the same handle. When tracking is disabled it returns
/// `TTMEM_DISABLED` and writes handle 0, whose calls do nothing: callers may ignore the result.
///
/// # Safety
/// `desc` points to a valid descriptor whose strings and category array are valid for the call;
/// `out_device` points to writable memory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_register_device(desc: *const ttmem_device_desc, out_device: *mut u16) -> ttmem_result {
    guard(TTMEM_INTERNAL_ERROR, || {
        if desc.is_null() || out_device.is_null() {
            return fail(TTMEM_INVALID_ARGUMENT, "desc or out_device is NULL");
        }
        // SAFETY: non-null and valid per the contract.
        let d = unsafe { &*desc };
        if d.num_categories == 0 || d.num_categories as usize > ttmem_region::MAX_CATEGORIES || d.categories.is_null() {
            return fail(
                TTMEM_INVALID_ARGUMENT,
                format!(
                    "a device declares 1 to {} categories (num_categories {}, categories {})",
                    ttmem_region::MAX_CATEGORIES,
                    d.num_categories,
                    if d.categories.is_null() { "NULL" } else { "given" }
                ),
            );
        }
        // SAFETY: the array holds num_categories descriptors per the contract.
        let cats = unsafe { std::slice::from_raw_parts(d.categories, d.num_categories as usize) };
        let mut categories = Vec::with_capacity(cats.len());
        for (i, c) in cats.iter().enumerate() {
            // SAFETY: each name is null or a valid C string per the contract.
            let name = match unsafe { text(c.name, &format!("categories[{i}].name")) } {
                Ok(n) => n,
                Err(code) => return code,
            };
            categories.push(CategorySpec {
                name,
                capacity: c.capacity,
                addr_base: c.addr_base,
                addr_end: c.addr_end,
                banks: c.banks,
                alignment: c.alignment,
            });
        }
        // SAFETY: null or valid C strings per the contract.
        let (arch, name) = match unsafe { (text(d.arch, "arch"), text(d.name, "name")) } {
            (Ok(a), Ok(n)) => (a, n),
            (Err(code), _) | (_, Err(code)) => return code,
        };
        let spec = DeviceSpec {
            kind: DeviceKind::from_code(d.kind),
            hw_id: d.hw_id,
            logical_id: d.logical_id,
            arch,
            name,
            remote: d.remote != 0,
            categories,
        };
        let tracker = global();
        if !tracker.is_enabled() {
            // SAFETY: non-null and writable per the contract.
            unsafe { *out_device = 0 };
            return fail(
                TTMEM_DISABLED,
                "tracking is disabled (TTMEM_DISABLE) or memory could not be mapped",
            );
        }
        match tracker.register_device(&spec) {
            Ok(Device(i)) => {
                // SAFETY: non-null and writable per the contract.
                unsafe { *out_device = i };
                match tracker.region_error() {
                    Some(why) => fail(TTMEM_IO_ERROR, why),
                    None => TTMEM_OK,
                }
            }
            Err(e @ ClientError::TooManyDevices(_)) => fail(TTMEM_TOO_MANY_DEVICES, e.to_string()),
            Err(e @ (ClientError::Categories(_) | ClientError::Geometry(_))) => {
                fail(TTMEM_INVALID_ARGUMENT, e.to_string())
            }
            Err(e) => fail(TTMEM_IO_ERROR, e.to_string()),
        }
    })
}

/// Records an allocation. Never blocks, never fails; unknown devices or categories are counted
/// as rejected.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_alloc(device: u16, category: u8, address: u64, size: u64) {
    guard((), || global().alloc(Device(device), category, address, size))
}

/// Records a free of `size` bytes at `address`.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_free(device: u16, category: u8, address: u64, size: u64) {
    guard((), || global().free(Device(device), category, address, size))
}

/// Records an allocation and remembers its address for `ttmem_free_addr`.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_alloc_mapped(device: u16, category: u8, address: u64, size: u64) {
    guard((), || global().alloc_mapped(Device(device), category, address, size))
}

/// Frees an address recorded by `ttmem_alloc_mapped`; returns 1 if it was known, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_free_addr(device: u16, address: u64) -> c_int {
    guard(0, || global().free_addr(Device(device), address) as c_int)
}

/// Tags this thread's following events; returns a token for `ttmem_tag_pop`.
///
/// # Safety
/// `tag` is null (no tag) or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_tag_push(tag: *const c_char) -> u32 {
    guard(0, || {
        // SAFETY: null or a valid C string per the contract.
        let t = unsafe { lossy(tag) };
        global().push_tag(&t)
    })
}

/// Restores the tag that was current before the matching `ttmem_tag_push`.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_tag_pop(token: u32) {
    guard((), || global().pop_tag(token))
}

/// Writes a mark event (a phase boundary) with a tag.
///
/// # Safety
/// `tag` is null or a NUL-terminated string valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_mark(device: u16, tag: *const c_char) {
    guard((), || {
        // SAFETY: null or a valid C string per the contract.
        let t = unsafe { lossy(tag) };
        global().mark(Device(device), &t)
    })
}

/// Reads this process's counters for one device category.
///
/// # Safety
/// `out` points to writable memory for one `ttmem_counters`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_get_counters(device: u16, category: u8, out: *mut ttmem_counters) -> ttmem_result {
    guard(TTMEM_INTERNAL_ERROR, || {
        if out.is_null() {
            return fail(TTMEM_INVALID_ARGUMENT, "out is NULL");
        }
        let t = global();
        if !t.is_enabled() {
            return fail(
                TTMEM_DISABLED,
                "tracking is disabled (TTMEM_DISABLE) or memory could not be mapped",
            );
        }
        let Some(c) = t.counters(Device(device), category) else {
            return fail(
                TTMEM_INVALID_ARGUMENT,
                format!("device {device} has no category {category} (register the device first)"),
            );
        };
        // SAFETY: non-null and writable per the contract.
        unsafe {
            *out = ttmem_counters {
                live_bytes: c.live_bytes,
                live_count: c.live_count,
                allocs: c.allocs,
                frees: c.frees,
                alloc_bytes: c.alloc_bytes,
                free_bytes: c.free_bytes,
                peak_bytes: c.peak_bytes,
            }
        };
        TTMEM_OK
    })
}

/// 1 when tracking is on, 0 when disabled or unavailable.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_enabled() -> c_int {
    guard(0, || global().is_enabled() as c_int)
}

/// Copies the region file's path (NUL-terminated, truncated to `len`) into `buf`; returns the
/// path's full length, or 0 when there is no region file. `buf` may be null to ask the length.
///
/// # Safety
/// `buf` is null or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_region_path(buf: *mut c_char, len: usize) -> usize {
    guard(0, || {
        let Some(p) = global().region_path() else { return 0 };
        // SAFETY: buf is null or has len writable bytes per the contract.
        unsafe { copy_out(p.as_os_str().as_encoded_bytes(), buf, len) }
    })
}

/// Marks the region exited and removes it (done automatically at a clean exit).
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_shutdown() {
    guard((), || global().shutdown())
}

/// Copies why this thread's last failing call failed (NUL-terminated, truncated to `len`) into
/// `buf`; returns the message's full length (0: no error yet). `buf` may be null to ask the
/// length.
///
/// # Safety
/// `buf` is null or points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttmem_last_error(buf: *mut c_char, len: usize) -> usize {
    guard(0, || {
        LAST_ERROR.with(|e| {
            // SAFETY: buf is null or has len writable bytes per the contract.
            unsafe { copy_out(e.borrow().as_bytes(), buf, len) }
        })
    })
}

/// The library's version (the crate's), a static NUL-terminated string.
#[unsafe(no_mangle)]
pub extern "C" fn ttmem_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
