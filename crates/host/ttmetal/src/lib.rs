//! What a TT-Metal process exposes about its device memory with no change to it, read as
//! untrusted input.
//!
//! - [`layout`]: the counter files TT-Metal writes per chip (`/dev/shm/tt_device_<chip unique
//!   id>_memory`), every layout version by its version word, decoded from bytes.
//! - [`read`]: finding and reading those files without trusting them: regular files only, never
//!   through a link, bounded reads, re-read when they change under the reader.
//! - [`proc`]: whether a slot's owner still runs (its pid exists and started before the slot's
//!   last update, so a reused pid fails), from a configurable proc root.
//! - [`kmd`]: the kernel driver's `/proc/driver/tenstorrent/<N>/pids`.
//!
//! Nothing here panics or does unbounded work on any input; every refusal names the file.

#![deny(missing_docs)]

pub mod kmd;
pub mod layout;
pub mod proc;
pub mod read;

pub use layout::{Bytes, ChipStat, CounterFile, LayoutError, Slot};
pub use read::{Read, ReadError, Skipped, TtMetalScan, read_dir, read_file};

/// Where TT-Metal writes its counter files.
pub const DEFAULT_DIR: &str = "/dev/shm";

/// The proc root the kernel driver's pid lists and process facts are read from.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// TT-Metal's counter-file directory as a reader was told it (`--tt-metal-dir`,
/// `TTMEM_TT_METAL_DIR`): [`DEFAULT_DIR`] when not told, none for `off` or an empty value.
pub fn dir_named(named: Option<&str>) -> Option<std::path::PathBuf> {
    match named.map(str::trim) {
        None => Some(std::path::PathBuf::from(DEFAULT_DIR)),
        Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => None,
        Some(v) => Some(std::path::PathBuf::from(v)),
    }
}
