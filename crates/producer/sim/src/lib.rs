//! Simulated Tenstorrent chips, so ttmem shows a live system on any machine.
//!
//! - [`allocator`]: a TT-Metal-like bank allocator (interleaved pages, alignment, free lists with
//!   first-fit or best-fit, top-down L1), with real addresses, fragmentation and out-of-memory.
//! - [`chip`]: per-architecture layouts (Wormhole, Blackhole) and board shapes (n150, n300,
//!   p150, T3000, Galaxy).
//! - [`workload`]: profiles (LLM inference, training, leaky, crash, bursty) that run as separate
//!   processes and report every allocation through the real `ttmem-client`, exactly like a
//!   runtime would.

#![deny(missing_docs)]

pub mod allocator;
pub mod chip;
pub mod workload;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Registering a chip with the tracker failed.
    #[error("cannot register a simulated chip: {0}")]
    Client(#[from] ttmem_client::ClientError),
    /// Writing progress failed (e.g. a closed pipe).
    #[error("cannot write progress: {0}")]
    Io(#[from] std::io::Error),
}
