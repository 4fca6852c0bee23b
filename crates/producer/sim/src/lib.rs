//! Simulated Tenstorrent chips, so ttmem shows a live system on any machine.
//!
//! - [`allocator`]: a TT-Metal-like bank allocator (interleaved pages, alignment, free lists with
//!   first-fit or best-fit, top-down L1), with real addresses, fragmentation and out-of-memory.
//! - [`chip`]: per-architecture layouts (Wormhole, Blackhole) and board shapes (n150, n300,
//!   p150, T3000, Galaxy).
//! - [`claim`]: chips are held by one workload process at a time, like real ones.
//! - [`fleet`]: the demo's workload processes, started, restarted and stopped together.
//! - [`workload`]: profiles (LLM inference, training, leaky, crash, bursty) that run as separate
//!   processes and report every allocation through the real `ttmem-client`, exactly like a
//!   runtime would.

#![deny(missing_docs)]

pub mod allocator;
pub mod chip;
pub mod claim;
pub mod fleet;
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
    /// A chip asked for by number is held by another workload.
    #[error("simulated chip {chip} is held by another workload{} (a chip serves one process at a time, like a real one); leave out --chip-offset to take free chips", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    ChipHeld {
        /// The chip.
        chip: u32,
        /// The holder's pid, when it could be read.
        holder: Option<u32>,
    },
    /// Every chip number is held.
    #[error("no {0} consecutive free simulated chips")]
    NoFreeChips(u32),
    /// A claim file could not be created or opened.
    #[error("cannot claim a simulated chip at {}: {source}", path.display())]
    Claim {
        /// The lock file or its directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A workload process could not be started.
    #[error("cannot start the {profile} workload: {source}")]
    Spawn {
        /// Its profile.
        profile: String,
        /// Why.
        source: std::io::Error,
    },
}
