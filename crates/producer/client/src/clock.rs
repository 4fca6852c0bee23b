//! The event clock: the cheapest monotonic counter the machine has.
//!
//! On x86-64 that is the TSC (a few nanoseconds, no system call); readers convert ticks to time
//! with the calibration pair in the region header. Elsewhere it is `CLOCK_MONOTONIC` in ns.

/// Whether [`ticks`] returns TSC ticks (else monotonic nanoseconds).
pub(crate) const TICKS_ARE_TSC: bool = cfg!(target_arch = "x86_64");

/// The event clock's current value.
#[inline(always)]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc is available on every x86-64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        monotonic_ns()
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

/// One calibration point: (realtime ns, monotonic ns, ticks), taken together.
pub(crate) fn calibration_point() -> (u64, u64, u64) {
    let t0 = ticks();
    let mono = monotonic_ns();
    let real = realtime_ns();
    let t1 = ticks();
    (real, mono, t0 / 2 + t1 / 2)
}
