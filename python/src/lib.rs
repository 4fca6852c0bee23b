//! `ttmem._native`: what the Python package needs from the Rust crates, and nothing more.
//!
//! - Reading: the API client ([`ttmem_apiclient`]) with its endpoint rules and token, the
//!   snapshot rule every reader shares ([`ttmem_apiclient::source::Reader`]), and the SSE
//!   stream. Network waits release the GIL.
//! - Tracking: the process-wide tracker of [`ttmem_client`], the same hot path, fork handling
//!   and `TTMEM_*` configuration as Rust and C callers. Each call also keeps this module's
//!   own live and peak counters per device and category, so `max_memory_allocated` can be
//!   reset as torch's is without touching what readers see in the region.
//!
//! The Python modules (`python/ttmem`) turn these plain values into typed objects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use ttmem_apiclient::{ApiError, Endpoint};
use ttmem_client::{CategorySpec, Device, DeviceKind, DeviceSpec};

pyo3::create_exception!(
    _native,
    TtmemError,
    pyo3::exceptions::PyException,
    "Base class of ttmem's errors."
);
pyo3::create_exception!(
    _native,
    NoDaemonError,
    TtmemError,
    "No ttmem daemon answers at the address asked (start one with `ttmem serve`)."
);
pyo3::create_exception!(
    _native,
    DaemonError,
    TtmemError,
    "The daemon answered with an error; `status` and `reason` say which and why."
);

/// An API error as the Python exception a caller can act on.
fn py_err(e: ApiError) -> PyErr {
    match e {
        ApiError::NotRunning(_) => NoDaemonError::new_err(e.to_string()),
        ApiError::BadUrl(_) => PyValueError::new_err(e.to_string()),
        ApiError::Refused { status, reason } => DaemonError::new_err((status, reason)),
        ApiError::Io { ref source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            PyTimeoutError::new_err(e.to_string())
        }
        ApiError::Io { .. } | ApiError::Protocol { .. } => TtmemError::new_err(e.to_string()),
    }
}

/// The daemon asked: `url`, else `api_socket`, else `TTMEM_API_SOCKET`, else the default
/// socket; and whether the caller named it.
fn endpoint(url: Option<&str>, api_socket: Option<PathBuf>) -> PyResult<(Endpoint, bool)> {
    let socket = api_socket.or_else(|| std::env::var_os("TTMEM_API_SOCKET").map(PathBuf::from));
    Endpoint::resolve(url, socket.as_deref()).map_err(py_err)
}

/// `(endpoint text, named)`: where a client with these arguments asks.
#[pyfunction]
#[pyo3(signature = (url=None, api_socket=None))]
fn resolve(url: Option<&str>, api_socket: Option<PathBuf>) -> PyResult<(String, bool)> {
    let (ep, named) = endpoint(url, api_socket)?;
    Ok((ep.to_string(), named))
}

/// `GET path` from the daemon: `(status, body)`. A daemon that is not running raises
/// `NoDaemonError`; an error status is returned, not raised (the caller decodes its reason).
#[pyfunction]
#[pyo3(signature = (path, url=None, api_socket=None))]
fn api_get<'py>(
    py: Python<'py>,
    path: &str,
    url: Option<&str>,
    api_socket: Option<PathBuf>,
) -> PyResult<(u16, Bound<'py, PyBytes>)> {
    if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
        return Err(PyValueError::new_err(format!("not an API path: {path:?}")));
    }
    let (ep, _) = endpoint(url, api_socket)?;
    let (status, body) = py.detach(|| ttmem_apiclient::get(&ep, path)).map_err(py_err)?;
    Ok((status, PyBytes::new(py, &body)))
}

/// The snapshot as `ttmem ps --json` prints it (JSON text), by the rule every reader shares:
/// the daemon named, else the default daemon when it watches this directory, else the local
/// sources (regions, TT-Metal's counter files, the kernel driver's pid lists).
#[pyfunction]
#[pyo3(signature = (url=None, api_socket=None, dir=None, no_daemon=false, tt_metal_dir=None, proc_root=None))]
fn snapshot_json(
    py: Python<'_>,
    url: Option<String>,
    api_socket: Option<PathBuf>,
    dir: Option<PathBuf>,
    no_daemon: bool,
    tt_metal_dir: Option<String>,
    proc_root: Option<PathBuf>,
) -> PyResult<String> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let dir = dir.or_else(|| env("TTMEM_DIR").map(PathBuf::from));
    let tt_metal_dir = tt_metal_dir.or_else(|| env("TTMEM_TT_METAL_DIR").map(|v| v.to_string_lossy().into_owned()));
    let tt_metal = ttmem_ttmetal::dir_named(tt_metal_dir.as_deref());
    let reader = ttmem_apiclient::source::Reader {
        local: ttmem_model::sources::Local {
            regions: dir.clone().unwrap_or_else(ttmem_region::default_dir),
            tt_metal,
            proc_root: proc_root
                .or_else(|| env("TTMEM_PROC_ROOT").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(ttmem_ttmetal::DEFAULT_PROC_ROOT)),
        },
        dir_named: dir.is_some(),
        url,
        api_socket: api_socket.or_else(|| env("TTMEM_API_SOCKET").map(PathBuf::from)),
        no_daemon,
    };
    let snapshot = py.detach(|| reader.snapshot()).map_err(|e| match e {
        ttmem_apiclient::source::SourceError::NoAnswer { ref source, .. }
            if matches!(source, ApiError::NotRunning(_)) =>
        {
            NoDaemonError::new_err(e.to_string())
        }
        ttmem_apiclient::source::SourceError::Endpoint(e) => py_err(e),
        other => TtmemError::new_err(other.to_string()),
    })?;
    serde_json::to_string(&snapshot).map_err(|e| TtmemError::new_err(e.to_string()))
}

/// The daemon's event stream: iterating yields `(event, data)` pairs of text.
#[pyclass(module = "ttmem._native")]
struct EventStream {
    inner: Option<ttmem_apiclient::sse::EventStream>,
}

#[pymethods]
impl EventStream {
    #[new]
    #[pyo3(signature = (path="/api/v1/stream", url=None, api_socket=None, timeout_s=30.0))]
    fn new(
        py: Python<'_>,
        path: &str,
        url: Option<&str>,
        api_socket: Option<PathBuf>,
        timeout_s: f64,
    ) -> PyResult<Self> {
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(PyValueError::new_err("timeout_s must be a positive number of seconds"));
        }
        let (ep, _) = endpoint(url, api_socket)?;
        let timeout = Duration::from_secs_f64(timeout_s.min(86_400.0));
        let inner = py
            .detach(|| ttmem_apiclient::sse::open(&ep, path, timeout))
            .map_err(py_err)?;
        Ok(EventStream { inner: Some(inner) })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(mut slf: PyRefMut<'_, Self>, py: Python<'_>) -> PyResult<Option<(String, String)>> {
        let Some(mut inner) = slf.inner.take() else {
            return Ok(None);
        };
        let next = py.detach(|| {
            let next = inner.next_event();
            (inner, next)
        });
        let (inner, next) = next;
        match next.map_err(py_err)? {
            Some(e) => {
                slf.inner = Some(inner);
                Ok(Some((e.event, e.data)))
            }
            None => Ok(None),
        }
    }

    /// Closes the connection; iteration then ends.
    fn close(&mut self) {
        self.inner = None;
    }
}

/// Devices and categories this module keeps its own counters for.
const MAX_DEVICES: usize = 64;
const MAX_CATEGORIES: usize = 16;

/// Per device and category: live bytes reported through this module, and the peak since the
/// last reset. Lock-free, so a report from Python never waits on another thread.
struct Books {
    live: [[AtomicI64; MAX_CATEGORIES]; MAX_DEVICES],
    peak: [[AtomicI64; MAX_CATEGORIES]; MAX_DEVICES],
}

static BOOKS: Books = Books {
    live: [const { [const { AtomicI64::new(0) }; MAX_CATEGORIES] }; MAX_DEVICES],
    peak: [const { [const { AtomicI64::new(0) }; MAX_CATEGORIES] }; MAX_DEVICES],
};

fn book(device: u16, category: u8) -> Option<(&'static AtomicI64, &'static AtomicI64)> {
    let (d, c) = (device as usize, category as usize);
    (d < MAX_DEVICES && c < MAX_CATEGORIES).then(|| (&BOOKS.live[d][c], &BOOKS.peak[d][c]))
}

fn device_kind(kind: &str) -> PyResult<DeviceKind> {
    Ok(match kind {
        "tt" | "tenstorrent" => DeviceKind::Tenstorrent,
        "tt-sim" | "sim" => DeviceKind::SimulatedTenstorrent,
        "cuda" => DeviceKind::Cuda,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown device kind {other:?} (tenstorrent, sim or cuda)"
            )));
        }
    })
}

/// A category as Python passes it: `(name, capacity, addr_base, addr_end, banks, alignment)`.
type CategoryTuple = (String, u64, u64, u64, u32, u32);

/// Registers a device with this process's tracker; returns its handle. `categories` are
/// `(name, capacity, addr_base, addr_end, banks, alignment)`, or None for the Tenstorrent seven
/// of a Wormhole chip.
#[pyfunction]
#[pyo3(signature = (name, arch, kind="tenstorrent", hw_id=0, logical_id=-1, remote=false, categories=None))]
#[allow(clippy::too_many_arguments)]
fn register_device(
    name: &str,
    arch: &str,
    kind: &str,
    hw_id: u64,
    logical_id: i32,
    remote: bool,
    categories: Option<Vec<CategoryTuple>>,
) -> PyResult<u16> {
    let categories = match categories {
        None => ttmem_client::tt::wormhole_categories(),
        Some(list) => list
            .into_iter()
            .map(|(name, capacity, addr_base, addr_end, banks, alignment)| {
                if addr_end < addr_base {
                    return Err(PyValueError::new_err(format!(
                        "category {name}: addr_end {addr_end:#x} is below addr_base {addr_base:#x}"
                    )));
                }
                Ok(CategorySpec {
                    name,
                    capacity,
                    addr_base,
                    addr_end,
                    banks: banks.max(1),
                    alignment,
                })
            })
            .collect::<PyResult<_>>()?,
    };
    if categories.is_empty() || categories.len() > MAX_CATEGORIES {
        return Err(PyValueError::new_err(format!(
            "a device declares 1 to {MAX_CATEGORIES} categories"
        )));
    }
    let mut spec = DeviceSpec::tenstorrent(device_kind(kind)?, hw_id, logical_id, arch, name, categories);
    spec.remote = remote;
    match ttmem_client::global().register_device(&spec) {
        Ok(d) => Ok(d.0),
        Err(e) => Err(PyOSError::new_err(e.to_string())),
    }
}

/// Records an allocation (never blocks, never raises for an unknown device: it is counted as
/// rejected, as from C).
#[pyfunction]
fn alloc(device: u16, category: u8, address: u64, size: u64) {
    ttmem_client::global().alloc(Device(device), category, address, size);
    if let Some((live, peak)) = book(device, category) {
        // Sizes come from the caller: saturate rather than wrap.
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let now = live.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        peak.fetch_max(now, Ordering::Relaxed);
    }
}

/// Records a free.
#[pyfunction]
fn free(device: u16, category: u8, address: u64, size: u64) {
    ttmem_client::global().free(Device(device), category, address, size);
    if let Some((live, _)) = book(device, category) {
        live.fetch_sub(i64::try_from(size).unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

/// Tags this thread's next events with `name`; returns the tag to restore with [`pop_tag`].
#[pyfunction]
fn push_tag(name: &str) -> u32 {
    ttmem_client::global().push_tag(name)
}

/// Restores the tag [`push_tag`] returned.
#[pyfunction]
fn pop_tag(previous: u32) {
    ttmem_client::global().pop_tag(previous)
}

/// The region's exact counters of a device category:
/// `(live_bytes, live_count, allocs, frees, alloc_bytes, free_bytes, peak_bytes)`, or None.
#[pyfunction]
fn counters(device: u16, category: u8) -> Option<(i64, i64, u64, u64, u64, u64, i64)> {
    ttmem_client::global().counters(Device(device), category).map(|c| {
        (
            c.live_bytes,
            c.live_count,
            c.allocs,
            c.frees,
            c.alloc_bytes,
            c.free_bytes,
            c.peak_bytes,
        )
    })
}

/// `(live, peak since reset)` of what this module reported for a device category.
#[pyfunction]
fn reported(device: u16, category: u8) -> (i64, i64) {
    book(device, category).map_or((0, 0), |(l, p)| (l.load(Ordering::Relaxed), p.load(Ordering::Relaxed)))
}

/// Starts a new peak at the present live bytes (all devices and categories when None).
#[pyfunction]
#[pyo3(signature = (device=None, category=None))]
fn reset_peak(device: Option<u16>, category: Option<u8>) {
    for d in 0..MAX_DEVICES {
        for c in 0..MAX_CATEGORIES {
            if device.is_none_or(|x| x as usize == d) && category.is_none_or(|x| x as usize == c) {
                BOOKS.peak[d][c].store(BOOKS.live[d][c].load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }
}

/// In a child after `fork`: it holds none of its parent's buffers (as the tracker's own
/// region starts empty), so its books start at zero.
#[pyfunction]
fn after_fork_in_child() {
    for d in 0..MAX_DEVICES {
        for c in 0..MAX_CATEGORIES {
            BOOKS.live[d][c].store(0, Ordering::Relaxed);
            BOOKS.peak[d][c].store(0, Ordering::Relaxed);
        }
    }
}

/// The declared capacity of each category of a device this process registered (empty: none).
#[pyfunction]
fn capacities(device: u16) -> Vec<u64> {
    ttmem_client::global()
        .snapshot()
        .devices
        .into_iter()
        .find(|d| d.device == Device(device))
        .map(|d| d.categories.into_iter().map(|c| c.capacity).collect())
        .unwrap_or_default()
}

/// Where this process's region is, or why there is none: `(path, error)`.
#[pyfunction]
fn region() -> (Option<String>, Option<String>) {
    let t = ttmem_client::global();
    (t.region_path().map(|p| p.display().to_string()), t.region_error())
}

/// Whether tracking is on (`TTMEM_DISABLE` unset and a region could be made).
#[pyfunction]
fn enabled() -> bool {
    ttmem_client::global().is_enabled()
}

/// The package's version (the Rust crates').
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TtmemError", py.get_type::<TtmemError>())?;
    m.add("NoDaemonError", py.get_type::<NoDaemonError>())?;
    m.add("DaemonError", py.get_type::<DaemonError>())?;
    m.add_class::<EventStream>()?;
    for f in [
        wrap_pyfunction!(resolve, m)?,
        wrap_pyfunction!(api_get, m)?,
        wrap_pyfunction!(snapshot_json, m)?,
        wrap_pyfunction!(register_device, m)?,
        wrap_pyfunction!(alloc, m)?,
        wrap_pyfunction!(free, m)?,
        wrap_pyfunction!(push_tag, m)?,
        wrap_pyfunction!(pop_tag, m)?,
        wrap_pyfunction!(counters, m)?,
        wrap_pyfunction!(reported, m)?,
        wrap_pyfunction!(reset_peak, m)?,
        wrap_pyfunction!(after_fork_in_child, m)?,
        wrap_pyfunction!(region, m)?,
        wrap_pyfunction!(capacities, m)?,
        wrap_pyfunction!(enabled, m)?,
        wrap_pyfunction!(version, m)?,
    ] {
        m.add_function(f)?;
    }
    Ok(())
}
