//! The event clock.
//!
//! Reading the TSC costs 6–13 ns (more in VMs), half the hot-path budget, so by default events
//! carry a *coarse* monotonic time: `CLOCK_MONOTONIC` nanoseconds that a small ticker thread
//! publishes every `TTMEM_CLOCK_US` microseconds (default 1000), read with one relaxed load.
//! Events of one thread stay exactly ordered by their sequence numbers; the timestamp places
//! them in time to the ticker's resolution. `TTMEM_CLOCK=tsc` stamps every event with the TSC
//! instead (x86-64), at the TSC's cost; readers calibrate it with the header's clock pair.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The coarse clock: monotonic ns, refreshed by the ticker.
static COARSE_NS: AtomicU64 = AtomicU64::new(0);
/// The pid whose ticker is running (a forked child must start its own).
static TICKER_PID: AtomicU32 = AtomicU32::new(0);

/// Which clock events carry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// Coarse monotonic ns from the ticker, refreshed at this period.
    Coarse(Duration),
    /// The TSC on every event (x86-64 only; monotonic ns elsewhere).
    Tsc,
}

/// Whether [`tsc`] returns TSC ticks (else monotonic nanoseconds).
pub(crate) const TSC_AVAILABLE: bool = cfg!(all(target_arch = "x86_64", not(miri)));

/// The TSC (or monotonic ns where there is none).
#[inline(always)]
pub(crate) fn tsc() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        // SAFETY: rdtsc is available on every x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    {
        monotonic_ns()
    }
}

/// The coarse clock's current value.
#[inline(always)]
pub(crate) fn coarse_ns() -> u64 {
    COARSE_NS.load(Ordering::Relaxed)
}

/// Starts the ticker for this process if it is not running. Returns false if no thread could
/// be started (the caller then stamps events with the TSC).
pub(crate) fn ensure_ticker(period: Duration) -> bool {
    let pid = std::process::id();
    if TICKER_PID.load(Ordering::Acquire) == pid {
        return true;
    }
    COARSE_NS.store(monotonic_ns(), Ordering::Relaxed);
    let period = period.max(Duration::from_micros(10));
    let spawned = std::thread::Builder::new().name("ttmem-clock".into()).spawn(move || {
        loop {
            std::thread::sleep(period);
            COARSE_NS.store(monotonic_ns(), Ordering::Relaxed);
        }
    });
    match spawned {
        Ok(_) => {
            TICKER_PID.store(pid, Ordering::Release);
            true
        }
        Err(_) => false,
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC` in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in nanoseconds since the epoch.
pub(crate) fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// One calibration point: (realtime ns, monotonic ns, TSC), taken together.
pub(crate) fn calibration_point() -> (u64, u64, u64) {
    let t0 = tsc();
    let mono = monotonic_ns();
    let real = realtime_ns();
    let t1 = tsc();
    (real, mono, t0 / 2 + t1 / 2)
}
