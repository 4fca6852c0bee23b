//! Simulated chips are held like real ones: by one process at a time. A workload claims each of
//! its chips with an `flock` on a file per chip in `<region dir>/.sim-chips/`; the kernel drops
//! the lock when the process ends, however it ends, so a crashed workload never leaves a chip
//! claimed and nothing needs cleaning up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::SimError;

/// Simulated chip numbers searched for a free range.
pub const MAX_CHIPS: u32 = 4096;

/// Chips held by this process until it is dropped (or the process ends).
#[derive(Debug)]
pub struct Claim {
    first: u32,
    count: u32,
    _locks: Vec<File>,
}

impl Claim {
    /// The first chip number held.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// How many consecutive chips are held.
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// The directory of the chip lock files.
fn lock_dir(region_dir: &Path) -> PathBuf {
    region_dir.join(".sim-chips")
}

/// Claims `count` consecutive chips: from `at` exactly (refused when one is held), or the first
/// free range.
pub fn claim(region_dir: &Path, count: u32, at: Option<u32>) -> Result<Claim, SimError> {
    let dir = lock_dir(region_dir);
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|source| SimError::Claim {
            path: dir.clone(),
            source,
        })?;
        // Every user's workloads claim chips here, like the region directory itself.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    let count = count.max(1);
    match at {
        Some(first) => try_range(&dir, first, count)?.map_err(|(chip, holder)| SimError::ChipHeld { chip, holder }),
        None => {
            for first in 0..MAX_CHIPS.saturating_sub(count) {
                if let Ok(c) = try_range(&dir, first, count)? {
                    return Ok(c);
                }
            }
            Err(SimError::NoFreeChips(count))
        }
    }
}

/// Locks chips `first..first + count`: the claim, or the first held chip and its holder's pid.
fn try_range(dir: &Path, first: u32, count: u32) -> Result<Result<Claim, (u32, Option<u32>)>, SimError> {
    let mut locks = Vec::with_capacity(count as usize);
    for chip in first..first.saturating_add(count) {
        let path = dir.join(format!("chip-{chip}.lock"));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .or_else(|_| OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path))
            .map_err(|source| SimError::Claim {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut text = String::new();
            let _ = (&f).take(32).read_to_string(&mut text);
            return Ok(Err((chip, text.trim().parse().ok())));
        }
        // Who holds it, for the message another workload gets (best effort: the file may be
        // another user's, opened read-only).
        if f.set_len(0).is_ok() && f.rewind().is_ok() {
            let _ = write!(f, "{}", std::process::id());
        }
        locks.push(f);
    }
    Ok(Ok(Claim {
        first,
        count,
        _locks: locks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claimant_takes_the_next_free_chips_or_is_refused_a_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = claim(dir.path(), 2, None).unwrap();
        assert_eq!((a.first(), a.count()), (0, 2));
        // flock locks belong to the open file, so a second open in this process contends like
        // another process would.
        let b = claim(dir.path(), 1, None).unwrap();
        assert_eq!(b.first(), 2);
        match claim(dir.path(), 1, Some(1)) {
            Err(SimError::ChipHeld { chip: 1, holder }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(a);
        assert_eq!(
            claim(dir.path(), 2, None).unwrap().first(),
            0,
            "released chips are free again"
        );
    }
}
