//! The allocation-server protocol that existing TT-Metal builds speak on
//! `/tmp/tt_allocation_server.sock` (P1–P4, see `LEGACY_PROTOCOL.md` and `docs/legacy-protocol.md`).
//!
//! - [`wire`]: the four struct layouts, byte exact, with encode and decode.
//! - [`framing`]: per-connection version detection and framing of a byte stream that may split
//!   or join messages.
//! - [`book`]: what the server does with each message: reference-counted buffers per
//!   (device, buffer id), CBs, kernels, counters that never underflow.
//! - [`reply`]: the QUERY and DEVICE_INFO answers, from facts the caller supplies.
//! - [`dump`]: DUMP_REMAINING and DUMP_KERNELS over every client's book.
//!
//! Pure logic, no I/O: the daemon owns the sockets and feeds bytes in. Everything a client sends
//! is untrusted; nothing here panics on input or allocates by a field it has not capped.

#![deny(missing_docs)]

pub mod book;
pub mod dump;
pub mod framing;
pub mod fuzzing;
pub mod reply;
pub mod wire;

pub use book::{Book, BookStats, Category, Effect};
pub use framing::{Detection, Framer, FramingError};
pub use wire::{Message, MsgType, Version};
