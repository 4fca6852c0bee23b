//! DUMP_REMAINING and DUMP_KERNELS: the allocation server's answer is a list of what every
//! client still holds. The server printed it; ttmem keeps the latest few for the API and logs
//! a bounded number of lines.

use serde::{Deserialize, Serialize};

use crate::book::Book;

/// Entries a dump keeps for the API.
pub const MAX_DUMP_ENTRIES: usize = 10_000;

/// Which dump.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpKind {
    /// DUMP_REMAINING: live buffers and CBs.
    Remaining,
    /// DUMP_KERNELS: loaded kernels.
    Kernels,
}

impl DumpKind {
    /// The word used in the log and the API.
    pub fn name(self) -> &'static str {
        match self {
            DumpKind::Remaining => "remaining",
            DumpKind::Kernels => "kernels",
        }
    }
}

/// A DUMP_REMAINING or DUMP_KERNELS answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dump {
    /// Which dump.
    pub kind: DumpKind,
    /// Wall clock of the request, ns since the epoch.
    pub at_unix_ns: u64,
    /// The requesting process.
    pub requested_by: u32,
    /// Entries in total (the list stops at [`MAX_DUMP_ENTRIES`]).
    pub total: usize,
    /// The entries, by owner, device, category and id.
    pub entries: Vec<DumpEntry>,
}

/// One live buffer or kernel in a dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DumpEntry {
    /// Owner.
    pub pid: u32,
    /// Device id as the client numbers it.
    pub device: i32,
    /// Buffer id, CB address or kernel id.
    pub id: u64,
    /// Category name.
    pub category: String,
    /// Bytes.
    pub size: u64,
    /// References.
    pub refs: u32,
    /// Buffer type byte (kernel kind for kernels).
    pub kind: u8,
}

impl Dump {
    /// The dump of `books` (each with its owner's pid), requested by `requested_by` at
    /// `at_unix_ns`.
    pub fn of<'a>(
        kind: DumpKind,
        books: impl IntoIterator<Item = (u32, &'a Book)>,
        requested_by: u32,
        at_unix_ns: u64,
    ) -> Dump {
        let mut entries = Vec::new();
        let mut total = 0usize;
        for (pid, book) in books {
            let live: Box<dyn Iterator<Item = _>> = match kind {
                DumpKind::Kernels => Box::new(book.live_kernels()),
                DumpKind::Remaining => Box::new(book.live_buffers()),
            };
            for (&(device, id), b) in live {
                total += 1;
                if entries.len() < MAX_DUMP_ENTRIES {
                    entries.push(DumpEntry {
                        pid,
                        device,
                        id,
                        category: b.category.name().into(),
                        size: b.size,
                        refs: b.refs,
                        kind: b.kind,
                    });
                }
            }
        }
        entries.sort_by(|a, b| (a.pid, a.device, &a.category, a.id).cmp(&(b.pid, b.device, &b.category, b.id)));
        Dump {
            kind,
            at_unix_ns,
            requested_by,
            total,
            entries,
        }
    }
}
