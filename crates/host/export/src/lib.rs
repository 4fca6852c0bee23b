//! One process's device memory as files that viewers people already use can open:
//! - [`perfetto`]: Chrome trace-event JSON for Perfetto UI and `chrome://tracing`;
//! - [`memory_viz`]: the snapshot pickle of PyTorch's memory viewer (`memory_viz`).
//!
//! Both are built from the daemon's API objects ([`ProcessTrace`]), so what a file shows is what
//! `/api/v1/processes/{pid}/allocations` and `/events` answer. Times are Unix microseconds: the
//! exports of several processes line up when loaded together.

mod memory_viz;
mod perfetto;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use ttmem_model::api;

pub use memory_viz::memory_viz;
pub use perfetto::perfetto;

/// Which viewer a file is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Chrome trace events (JSON).
    Perfetto,
    /// PyTorch's memory snapshot (pickle).
    MemoryViz,
}

impl Format {
    /// The names `--format` and `?format=` take.
    pub const NAMES: &'static str = "perfetto or memory-viz";

    /// Parses a format name.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "perfetto" | "chrome" | "json" => Some(Format::Perfetto),
            "memory-viz" | "memory_viz" | "pickle" => Some(Format::MemoryViz),
            _ => None,
        }
    }

    /// The file name a download suggests.
    pub fn file_name(self, pid: u32) -> String {
        match self {
            Format::Perfetto => format!("ttmem-{pid}.trace.json"),
            Format::MemoryViz => format!("ttmem-{pid}.pickle"),
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Perfetto => "application/json",
            Format::MemoryViz => "application/octet-stream",
        }
    }
}

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// JSON encoding failed (it cannot for these types; kept so no path panics).
    #[error("encoding the trace as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Pickle encoding failed.
    #[error("encoding the snapshot as a pickle: {0}")]
    Pickle(#[from] serde_pickle::Error),
}

/// Writes a trace in a format.
pub fn render(format: Format, trace: &ProcessTrace) -> Result<Vec<u8>, ExportError> {
    Ok(match format {
        Format::Perfetto => serde_json::to_vec(&perfetto(trace))?,
        Format::MemoryViz => serde_pickle::to_vec(&memory_viz(trace), serde_pickle::SerOptions::new())?,
    })
}

/// One bank's address range of a chip's category: where a memory-viz segment lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRange {
    /// The `ps` device id.
    pub device: u32,
    /// Category name.
    pub category: String,
    /// First address.
    pub base: u64,
    /// One past the last.
    pub end: u64,
    /// Banks the category interleaves over: an allocation takes `size / banks` (rounded up
    /// to the alignment) at its address in every bank.
    pub banks: u64,
}

impl AddressRange {
    /// An address in a flat space where the banks lie side by side, so an interleaved
    /// buffer's bytes over all banks fit without overlapping the next buffer's:
    /// `base + (address - base) * banks`.
    pub fn flat(&self, address: u64) -> u64 {
        match address.checked_sub(self.base) {
            Some(offset) => self.base.saturating_add(offset.saturating_mul(self.banks.max(1))),
            None => address,
        }
    }
}

/// What the daemon knows of one process, as its API answers it.
#[derive(Clone, Debug)]
pub struct ProcessTrace {
    /// The process.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// The daemon's clocks read together: events carry monotonic times.
    pub clock: api::ClockPair,
    /// Leave out events and history before this Unix ns.
    pub since_unix_ns: Option<u64>,
    /// Its live allocations now.
    pub live: Vec<api::Allocation>,
    /// Its recent events, oldest first (the flight recorder).
    pub events: Vec<api::RecentEvent>,
    /// Its usage series per chip and category (1 s buckets), for the time before the events.
    pub history: Vec<api::History>,
    /// The address ranges of the chips' categories it uses.
    pub ranges: Vec<AddressRange>,
}

/// A chip and category: one counter track, one memory-viz segment.
type Track = (u32, String);

/// An event placed on the wall clock, with its chip and category known.
struct Placed<'a> {
    event: &'a api::RecentEvent,
    device: u32,
    category: &'a str,
    unix_us: u64,
}

impl ProcessTrace {
    /// Events after `since` whose chip and category are known, oldest first, on the wall clock.
    fn placed(&self) -> Vec<Placed<'_>> {
        let since = self.since_unix_ns.unwrap_or(0);
        self.events
            .iter()
            .filter_map(|e| {
                let unix = self.clock.unix_of(e.time_ns);
                Some(Placed {
                    event: e,
                    device: e.device?,
                    category: e.category.as_deref()?,
                    unix_us: unix / 1000,
                })
                .filter(|_| unix >= since)
            })
            .collect()
    }

    /// The bytes live now per chip and category, as the allocation list sums them.
    fn live_bytes(&self) -> BTreeMap<Track, u64> {
        let mut out = BTreeMap::new();
        for a in &self.live {
            if let Some(d) = a.device {
                *out.entry((d, a.category.clone())).or_insert(0u64) += a.size;
            }
        }
        out
    }

    fn now_us(&self) -> u64 {
        self.clock.unix_ns / 1000
    }
}

/// The bytes a process held on each track right after each event, walking back from what is
/// live now: `after[i]` for `placed[i]`, and the value before the first event of each track.
fn walk_back(placed: &[Placed<'_>], live: &BTreeMap<Track, u64>) -> (Vec<u64>, BTreeMap<Track, u64>) {
    let mut current = live.clone();
    let mut after = vec![0; placed.len()];
    for (i, p) in placed.iter().enumerate().rev() {
        let v = current.entry((p.device, p.category.to_string())).or_insert(0);
        after[i] = *v;
        match p.event.kind {
            api::EventKind::Alloc => *v = v.saturating_sub(p.event.size),
            // A free that matched nothing never counted (its allocation predates tracking).
            api::EventKind::Free if p.event.matched => *v = v.saturating_add(p.event.size),
            api::EventKind::Free => {}
        }
    }
    (after, current)
}

/// The tag of an event or allocation as a viewer's label.
fn label(tag: Option<&str>, category: &str) -> String {
    match tag {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => format!("{category} (untagged)"),
    }
}
