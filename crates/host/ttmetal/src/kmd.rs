//! The kernel driver's view (tt-kmd ≥ 2.5): `<proc root>/driver/tenstorrent/<N>/pids` lists
//! the pid of every open file descriptor of `/dev/tenstorrent/N`, one per line (a pid can
//! repeat). No memory figures: a process found only here holds a device, memory unknown.

use std::io::Read as _;
use std::path::Path;

/// Devices listed at most.
const MAX_DEVICES: usize = 256;
/// Bytes of one pid list read at most.
const MAX_LIST_BYTES: u64 = 64 * 1024;

/// One device of the driver and the processes that hold it open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holders {
    /// N of `/dev/tenstorrent/N`.
    pub device: u32,
    /// Pids with the device open, each once, ascending.
    pub pids: Vec<u32>,
}

/// Every device's holders, by device number (empty when the driver is absent or too old).
pub fn holders(proc_root: &Path) -> Vec<Holders> {
    let dir = proc_root.join("driver/tenstorrent");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<Holders> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .take(MAX_DEVICES)
        .filter_map(|(device, path)| {
            let mut text = Vec::new();
            std::fs::File::open(path.join("pids"))
                .ok()?
                .take(MAX_LIST_BYTES)
                .read_to_end(&mut text)
                .ok()?;
            let mut pids: Vec<u32> = String::from_utf8_lossy(&text)
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .filter(|&p| p > 0)
                .collect();
            pids.sort_unstable();
            pids.dedup();
            Some(Holders { device, pids })
        })
        .collect();
    out.sort_by_key(|h| h.device);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lists_are_read_deduplicated_and_garbage_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("driver/tenstorrent");
        for (n, text) in [("1", "42\n42\n7\n"), ("0", "99 x -3 0\n"), ("junk", "5\n")] {
            std::fs::create_dir_all(base.join(n)).unwrap();
            std::fs::write(base.join(n).join("pids"), text).unwrap();
        }
        std::fs::create_dir_all(base.join("2")).unwrap(); // no pids file (an older driver)
        assert_eq!(
            holders(d.path()),
            [
                Holders {
                    device: 0,
                    pids: vec![99]
                },
                Holders {
                    device: 1,
                    pids: vec![7, 42]
                },
            ]
        );
        assert!(holders(Path::new("/nonexistent")).is_empty());
    }
}
