//! fork(): the child gets its own region (created lazily, with the parent's device table), never
//! writes to the parent's, and a child that records nothing (fork + exec) creates no region.
//! One test per binary: it configures the process-wide tracker through the environment.

use std::io::Read;
use std::os::fd::FromRawFd;

use ttmem_client::{DeviceKind, DeviceSpec, global, tt};

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn fork_gives_the_child_its_own_region() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("TTMEM_DIR", dir.path()) };
    let t = global();
    let d = t
        .register_device(&DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            42,
            0,
            "wormhole_b0",
            "n150",
            tt::wormhole_categories(),
        ))
        .unwrap();
    t.alloc(d, tt::DRAM, 0x1000, 1 << 20);
    let parent_region = t.region_path().unwrap();

    // A child that records nothing and exits at once leaves nothing behind.
    // SAFETY: fork has no preconditions; the child below only calls async-signal-safe _exit.
    match unsafe { libc::fork() } {
        // SAFETY: _exit is async-signal-safe and ends the child at once.
        0 => unsafe { libc::_exit(0) },
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    assert_eq!(files(dir.path()), vec![parent_region.clone()]);

    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child uses the tracker (whose fork handlers made it safe), writes to a pipe and
    // exits through libc::exit so atexit handlers run.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        t.alloc(d, tt::L1, 0x40, 4096);
        let snap = t.snapshot();
        let child_region = t.region_path().unwrap_or_default();
        let ok = child_region != parent_region
            && snap.devices.len() == 1
            && snap.devices[0].hw_id == 42
            && snap.devices[0].categories[tt::DRAM as usize].counters.live_bytes == 0
            && snap.devices[0].categories[tt::L1 as usize].counters.live_bytes == 4096;
        let msg = format!("{}\n{}", ok, child_region.display());
        // SAFETY: writing a valid buffer to our pipe end.
        unsafe { libc::write(fds[1], msg.as_ptr().cast(), msg.len()) };
        // SAFETY: ends the child; atexit handlers remove its region.
        unsafe { libc::exit(if ok { 0 } else { 1 }) };
    }
    // SAFETY: fds[1] is ours to close; fds[0] is owned by the File from here on.
    unsafe { libc::close(fds[1]) };
    let mut text = String::new();
    // SAFETY: fds[0] is an open descriptor nothing else owns; the File closes it.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    reader.read_to_string(&mut text).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {text}"
    );
    let child_region = text.lines().nth(1).unwrap();
    assert_ne!(child_region, parent_region.to_str().unwrap());
    assert_eq!(
        files(dir.path()),
        vec![parent_region.clone()],
        "the child's clean exit removed its own region only"
    );
    let snap = t.snapshot();
    assert_eq!(
        snap.devices[0].categories[tt::DRAM as usize].counters.live_bytes,
        1 << 20
    );
    assert_eq!(
        snap.devices[0].categories[tt::L1 as usize].counters.allocs,
        0,
        "the child never wrote the parent's region"
    );
    t.shutdown();
    assert!(files(dir.path()).is_empty());
}
