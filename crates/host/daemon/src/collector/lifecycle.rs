//! Following a process's life without trusting its pid alone: a pidfd, opened only after the
//! pid is checked to name the process that started at the recorded time.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Opens a pidfd for `pid` and checks it still names the process that started at
/// `start_time` (so a reused pid is never followed). None if it cannot be opened.
pub(super) fn open_pidfd(pid: u32, start_time: u64) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    // Checked after opening: if the pid was reused before the open, the start time differs.
    (ttmem_scan::start_time_of(pid) == Some(start_time)).then_some(fd)
}

/// Whether the process behind a pidfd has exited (its pidfd is readable).
pub(super) fn pidfd_exited(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}
