//! Re-implementations of the two mechanisms existing TT tools use, as baselines.
//!
//! They are faithful in cost, not in every detail: what matters is the work done per event
//! (a system call, or shared cache lines touched with locked instructions), which is what the
//! producer avoids.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;

use memmap2::MmapMut;

/// Bytes of the TT-Metal v1 shared-memory counter file.
const SHM_SIZE: usize = 9280;
/// Offset of the region's last-update timestamp.
const LAST_UPDATE: usize = 8;
/// Offset of the per-chip totals (dram, l1, l1_small, trace, cb, kernel).
const TOTALS: usize = 48;
/// Offset of the 16 chip entries of 56 bytes: {u32 chip_id, u32 is_remote, 6 × u64}.
const CHIPS: usize = 96;
const CHIP_SIZE: usize = 56;
/// Offset of the 64 per-process slots of 128 bytes: {i32 pid + pad, 7 × u64, name[64]}.
const SLOTS: usize = 992;
const SLOT_SIZE: usize = 128;

/// TT-Metal's shared-memory tracking (`SharedMemoryStatsProvider::record_allocation` and
/// `record_deallocation`), per call: an atomic add on the region total; a linear search for the
/// chip entry and an atomic add on it; a steady-clock timestamp into the region; a linear search
/// for the caller's pid slot, an add there and a second timestamp. Frees subtract with
/// compare-exchange loops that clamp at zero, as the original does.
pub struct SharedCounters {
    map: MmapMut,
    pid: i32,
    chip_id: u32,
}

impl SharedCounters {
    /// A counter file for a gateway chip and its remote chip, with a few other processes' slots
    /// in use before ours, as on a shared host. Records go to the remote chip (entry 1).
    pub fn new() -> std::io::Result<Self> {
        let mut map = MmapMut::map_anon(SHM_SIZE)?;
        let pid = std::process::id() as i32;
        for (slot, p) in [(0usize, 101i32), (1, 202), (2, 303), (3, pid)] {
            map[SLOTS + slot * SLOT_SIZE..][..4].copy_from_slice(&p.to_le_bytes());
        }
        for (entry, chip) in [(0usize, 1u32), (1, 2)] {
            map[CHIPS + entry * CHIP_SIZE..][..4].copy_from_slice(&chip.to_le_bytes());
        }
        Ok(SharedCounters { map, pid, chip_id: 2 })
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= SHM_SIZE && off.is_multiple_of(8));
        // SAFETY: the offset is in bounds and 8-aligned within a page-aligned mapping that lives
        // as long as self; all concurrent access goes through atomics.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= SHM_SIZE && off.is_multiple_of(4));
        // SAFETY: as for u64_at, with 4-byte alignment.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU32) }
    }

    fn now_ns() -> u64 {
        std::time::Instant::now()
            .duration_since(*EPOCH.get_or_init(std::time::Instant::now))
            .as_nanos() as u64
    }

    fn safe_sub(counter: &AtomicU64, size: u64) {
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let new = current.saturating_sub(size);
            match counter.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
    }

    /// Records one alloc (or free) of `size` bytes of category `cat` (0 = DRAM).
    #[inline(never)]
    pub fn record(&self, cat: usize, alloc: bool, size: u64) {
        let total = self.u64_at(TOTALS + cat * 8);
        if alloc {
            total.fetch_add(size, Ordering::Relaxed);
        } else {
            Self::safe_sub(total, size);
        }
        if let Some(e) = (0..16).find(|e| self.u32_at(CHIPS + e * CHIP_SIZE).load(Ordering::Relaxed) == self.chip_id) {
            let c = self.u64_at(CHIPS + e * CHIP_SIZE + 8 + cat * 8);
            if alloc {
                c.fetch_add(size, Ordering::Relaxed);
            } else {
                Self::safe_sub(c, size);
            }
        }
        self.u64_at(LAST_UPDATE).store(Self::now_ns(), Ordering::Relaxed);
        if let Some(i) = (0..64).find(|i| self.u32_at(SLOTS + i * SLOT_SIZE).load(Ordering::Relaxed) as i32 == self.pid)
        {
            let base = SLOTS + i * SLOT_SIZE + 8;
            let c = self.u64_at(base + cat * 8);
            let v = c.load(Ordering::Relaxed);
            c.store(if alloc { v + size } else { v.saturating_sub(size) }, Ordering::Relaxed);
            self.u64_at(base + 6 * 8).store(Self::now_ns(), Ordering::Relaxed);
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
        assert_eq!(
            s.u64_at(CHIPS + CHIP_SIZE + 8).load(Ordering::Relaxed),
            50,
            "the remote chip's entry"
        );
        assert_eq!(s.u64_at(SLOTS + 3 * SLOT_SIZE + 8).load(Ordering::Relaxed), 50);
        s.record(0, false, 80);
        assert_eq!(s.u64_at(TOTALS).load(Ordering::Relaxed), 0, "frees clamp at zero");
        assert!(s.u64_at(LAST_UPDATE).load(Ordering::Relaxed) > 0);
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
