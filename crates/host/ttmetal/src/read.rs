//! Finding and reading counter files without trusting them.
//!
//! A file is opened without following links and without blocking (a FIFO planted under the
//! name cannot hang the reader), must be a regular file, and is read with one bounded `pread`
//! of what its layout needs. TT-Metal updates the file while it is read (plain stores, no
//! lock), so the read is repeated, a bounded number of times, until two reads agree byte for
//! byte; a file that keeps changing is used as last read (each counter is one aligned word, so
//! no single value is torn).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::layout::{self, CounterFile, LayoutError};

/// The largest file read: above every layout, far below anything that could hurt.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Counter files read from one directory at most (a directory of junk costs bounded work).
pub const MAX_FILES: usize = 4096;
/// Reads of one file before its contents are taken as they are.
const MAX_READS: usize = 4;

/// A counter file that could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The file.
    pub path: PathBuf,
    /// Its owner (the writing process's user).
    pub uid: u32,
    /// What it holds.
    pub file: CounterFile,
}

/// A counter file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why, in words a user can act on.
    pub reason: String,
}

/// Everything read from a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TtMetalScan {
    /// The directory.
    pub dir: PathBuf,
    /// Files read.
    pub files: Vec<Read>,
    /// Files refused.
    pub skipped: Vec<Skipped>,
    /// Files this user may not read (another user's, mode 0600).
    pub not_permitted: usize,
}

/// Why one file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Not a regular file (a link, FIFO, directory or device under a counter file's name).
    #[error("not a regular file")]
    NotRegular,
    /// Larger than any counter file.
    #[error("{0} bytes: larger than any TT-Metal counter file")]
    TooLarge(u64),
    /// The bytes are not a counter file ttmem reads.
    #[error("{0}")]
    Layout(#[from] LayoutError),
}

/// Whether a file name is a TT-Metal counter file's: `tt_device_<digits>_memory`.
pub fn is_counter_file_name(name: &str) -> bool {
    name.strip_prefix("tt_device_")
        .and_then(|r| r.strip_suffix("_memory"))
        .is_some_and(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|c| c.is_ascii_digit()))
}

/// Reads one counter file.
pub fn read_file(path: &Path) -> Result<Read, ReadError> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = read_prefix(&f)?;
    for _ in 1..MAX_READS {
        let again = read_prefix(&f)?;
        if again == bytes {
            break;
        }
        bytes = again;
    }
    Ok(Read {
        path: path.into(),
        uid: meta.uid(),
        file: layout::decode(&bytes)?,
    })
}

/// The bytes the file's layout needs (or all of it, when shorter or of an unknown version).
fn read_prefix(f: &File) -> io::Result<Vec<u8>> {
    let len = f.metadata()?.len().min(MAX_FILE_BYTES) as usize;
    let mut head = [0u8; 4];
    let n = f.read_at(&mut head, 0)?;
    let want = match layout::layout_of(&head[..n]) {
        Ok(l) => l.size().min(len),
        Err(_) => n,
    };
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..], got as u64)? {
            0 => break, // truncated under the reader: decode says so
            k => got += k,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Reads every counter file in `dir`. A directory that does not exist reads as empty (no
/// TT-Metal process has run); one that cannot be listed is an error.
pub fn read_dir(dir: &Path) -> io::Result<TtMetalScan> {
    let mut scan = TtMetalScan {
        dir: dir.into(),
        ..Default::default()
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_counter_file_name))
        .map(|e| e.path())
        .take(MAX_FILES)
        .collect();
    paths.sort();
    for path in paths {
        match read_file(&path) {
            Ok(r) => scan.files.push(r),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => scan.not_permitted += 1,
            Err(e) => scan.skipped.push(Skipped {
                reason: e.to_string(),
                path,
            }),
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::fixture::{Spec, build};

    fn spec() -> Spec {
        Spec {
            asic_id: 7,
            slots: vec![(0, 1, vec![10, 20], 5, b"p".to_vec())],
            ..Spec::default()
        }
    }

    #[test]
    fn names_are_matched_exactly() {
        assert!(is_counter_file_name("tt_device_72059269368820857_memory"));
        for bad in [
            "tt_device__memory",
            "tt_device_12a_memory",
            "tt_device_1_memory.bak",
            "x_tt_device_1_memory",
        ] {
            assert!(!is_counter_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn hostile_entries_are_skipped_with_a_reason_and_good_ones_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = |id: u32| dir.path().join(format!("tt_device_{id}_memory"));
        for v in 1..=4 {
            std::fs::write(p(v), build(v, &spec())).unwrap();
        }
        let mut bad = build(3, &spec());
        bad[0] = 42;
        std::fs::write(p(10), &bad).unwrap();
        std::fs::write(p(11), &build(3, &spec())[..500]).unwrap();
        std::fs::write(p(12), vec![0u8; MAX_FILE_BYTES as usize + 1]).unwrap();
        std::os::unix::fs::symlink(p(1), p(13)).unwrap();
        let fifo = std::ffi::CString::new(p(14).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo creates a FIFO node.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(p(15)).unwrap();
        std::fs::write(dir.path().join("unrelated"), b"x").unwrap();

        let scan = read_dir(dir.path()).unwrap();
        let versions: Vec<u32> = scan.files.iter().map(|r| r.file.version).collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        let reasons: Vec<(String, &str)> = scan
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().unwrap().to_string_lossy().into_owned(),
                    s.reason.as_str(),
                )
            })
            .collect();
        let reason = |id: u32| {
            reasons
                .iter()
                .find(|(n, _)| *n == format!("tt_device_{id}_memory"))
                .map(|(_, r)| *r)
                .unwrap_or_else(|| panic!("tt_device_{id}_memory not skipped: {reasons:?}"))
        };
        assert!(reason(10).contains("version 42"));
        assert!(reason(11).contains("truncated"));
        assert!(reason(12).contains("larger than any"));
        assert!(reason(13).contains("link") || reason(13).contains("Too many levels"));
        assert!(reason(14).contains("not a regular file"));
        assert!(reason(15).contains("not a regular file"));
        assert_eq!(scan.skipped.len(), 6);
    }

    #[test]
    fn a_missing_directory_reads_as_empty() {
        let scan = read_dir(Path::new("/nonexistent/ttmem-test")).unwrap();
        assert!(scan.files.is_empty() && scan.skipped.is_empty());
    }

    #[test]
    fn a_file_rewritten_while_read_is_read_consistently_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tt_device_7_memory");
        std::fs::write(&path, build(3, &spec())).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let b = if i.is_multiple_of(3) {
                        build(3, &spec())[..100].to_vec()
                    } else {
                        build(
                            3,
                            &Spec {
                                last_update_ns: i,
                                ..spec()
                            },
                        )
                    };
                    let _ = std::fs::write(&path, b);
                }
            })
        };
        for _ in 0..300 {
            match read_file(&path) {
                Ok(r) => {
                    if let Some(slot) = r.file.slots.first() {
                        assert_eq!(slot.bytes.get("L1"), 20);
                    }
                }
                Err(e) => assert!(matches!(e, ReadError::Layout(_)), "{e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
    }
}
