//! Re-implementations of the two mechanisms existing TT tools use, as baselines.
//!
//! They are faithful in cost, not in every detail: what matters is the work done per event
//! (a system call, or shared cache lines touched with locked instructions), which is what the
//! producer avoids.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::thread::JoinHandle;

use memmap2::MmapMut;

/// Bytes of the TT-Metal v1 shared-memory counter file.
const SHM_SIZE: usize = 9280;
/// Offset of the per-chip totals (dram, l1, l1_small, trace, cb, kernel).
const TOTALS: usize = 48;
/// Offset of the 64 per-process slots of 128 bytes.
const SLOTS: usize = 992;
const SLOT_SIZE: usize = 128;

/// TT-Metal's later shared-memory tracking: per-chip totals updated with atomic adds, and a
/// per-pid slot found by a linear search, with a timestamp per update.
pub struct SharedCounters {
    map: MmapMut,
    pid: i32,
}

impl SharedCounters {
    /// A counter file with a few other processes' slots in use before ours, as on a shared host.
    pub fn new() -> std::io::Result<Self> {
        let mut map = MmapMut::map_anon(SHM_SIZE)?;
        let pid = std::process::id() as i32;
        for (slot, p) in [(0usize, 101i32), (1, 202), (2, 303), (3, pid)] {
            map[SLOTS + slot * SLOT_SIZE..][..4].copy_from_slice(&p.to_le_bytes());
        }
        Ok(SharedCounters { map, pid })
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= SHM_SIZE && off.is_multiple_of(8));
        // SAFETY: the offset is in bounds and 8-aligned within a page-aligned mapping that lives
        // as long as self; all concurrent access goes through atomics.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    fn i32_at(&self, off: usize) -> &AtomicI32 {
        assert!(off + 4 <= SHM_SIZE && off.is_multiple_of(4));
        // SAFETY: as for u64_at, with 4-byte alignment.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicI32) }
    }

    /// Records one alloc (or free) of `size` bytes of category `cat` (0 = DRAM).
    #[inline(never)]
    pub fn record(&self, cat: usize, alloc: bool, size: u64) {
        let total = self.u64_at(TOTALS + cat * 8);
        if alloc {
            total.fetch_add(size, Ordering::AcqRel);
        } else {
            total.fetch_sub(size, Ordering::AcqRel);
        }
        let mut slot = None;
        for i in 0..64 {
            if self.i32_at(SLOTS + i * SLOT_SIZE).load(Ordering::Acquire) == self.pid {
                slot = Some(i);
                break;
            }
        }
        if let Some(i) = slot {
            let base = SLOTS + i * SLOT_SIZE + 8;
            let c = self.u64_at(base + cat * 8);
            if alloc {
                c.fetch_add(size, Ordering::AcqRel);
            } else {
                c.fetch_sub(size, Ordering::AcqRel);
            }
            let now = std::time::Instant::now();
            let ns = now
                .duration_since(*EPOCH.get_or_init(std::time::Instant::now))
                .as_nanos() as u64;
            self.u64_at(base + 6 * 8).store(ns, Ordering::Release);
            self.u64_at(8).store(ns, Ordering::Release);
        }
    }
}

static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The allocation-server client: one blocking 72-byte `send()` per event on a Unix stream
/// socket, with a reader thread draining the other end.
pub struct SocketClient {
    stream: UnixStream,
    reader: Option<JoinHandle<u64>>,
}

impl SocketClient {
    /// Connects a socket pair and starts the draining reader.
    pub fn new() -> std::io::Result<Self> {
        let (stream, mut peer) = UnixStream::pair()?;
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while let Ok(n) = peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        crate::settle();
        Ok(SocketClient {
            stream,
            reader: Some(reader),
        })
    }

    /// Sends one P1-sized message for an alloc or free.
    #[inline(never)]
    pub fn send(&self, address: u64, alloc: bool) {
        let mut msg = [0u8; 72];
        msg[0] = if alloc { 1 } else { 2 };
        msg[8..16].copy_from_slice(&4096u64.to_le_bytes());
        msg[24..32].copy_from_slice(&address.to_le_bytes());
        // SAFETY: msg is a valid 72-byte buffer and the fd is an open socket owned by self.
        let n = unsafe {
            libc::send(
                self.stream.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        debug_assert_eq!(n, 72);
    }
}

impl Drop for SocketClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_counters_count() {
        let s = SharedCounters::new().unwrap();
        s.record(0, true, 100);
        s.record(0, true, 50);
        s.record(0, false, 100);
        assert_eq!(s.u64_at(TOTALS).load(Ordering::Relaxed), 50);
        assert_eq!(s.u64_at(SLOTS + 3 * SLOT_SIZE + 8).load(Ordering::Relaxed), 50);
    }

    #[test]
    fn socket_client_delivers_every_byte() {
        let mut c = SocketClient::new().unwrap();
        for i in 0..1000 {
            c.send(i, i % 2 == 0);
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        assert_eq!(c.reader.take().unwrap().join().unwrap(), 72_000);
    }

    #[test]
    fn a_tiny_producer_run_reports_every_figure_and_target() {
        let r = crate::producer(
            crate::Options {
                samples: 20,
                batch: 10,
                threads: 2,
            },
            &mut |_| {},
        )
        .unwrap();
        let names: Vec<&str> = r.figures.iter().map(|f| f.name.as_str()).collect();
        for n in [
            "untracked_1t",
            "tracked_1t",
            "tracked_2t",
            "baseline_shm_atomic_1t",
            "baseline_socket_1t",
            "region_creation",
            "disabled_1t",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(r.figures.iter().all(|f| f.median_ns > 0.0 && f.p99_ns >= f.median_ns));
        assert_eq!(r.targets.len(), 6);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert!(json["figures"][0]["median_ns"].is_number());
    }
}
