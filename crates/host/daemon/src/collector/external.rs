//! The sources that change nothing and keep no per-buffer detail: TT-Metal's counter files and
//! the kernel driver's pid lists, read again every [`READ_INTERVAL_NS`] (so a death shows
//! within a second) into views that join the collector's own in one merged picture.

use ttmem_model::sources::external_views;
use ttmem_model::{ProcessView, SkippedRegion};
use ttmem_ttmetal::proc::ProcRoot;

use super::Collector;

/// How often the files are read: well inside the one second a death may take to show.
pub const READ_INTERVAL_NS: u64 = 250_000_000;

/// The last reading.
#[derive(Default)]
pub(super) struct External {
    pub(super) views: Vec<ProcessView>,
    pub(super) notes: Vec<String>,
    pub(super) skipped: Vec<SkippedRegion>,
    pub(super) chips: Vec<(ttmem_region::decode::Device, ttmem_model::SourceKind)>,
    last_read_ns: Option<u64>,
}

impl Collector {
    /// Reads TT-Metal's counter files and the kernel driver's pid lists when the last reading
    /// is older than [`READ_INTERVAL_NS`]; what changed moves the generation.
    pub(super) fn read_external(&mut self, monotonic_ns: u64) {
        if self
            .external
            .last_read_ns
            .is_some_and(|t| monotonic_ns.saturating_sub(t) < READ_INTERVAL_NS)
        {
            return;
        }
        self.external.last_read_ns = Some(monotonic_ns);
        let proc = ProcRoot::new(&self.cfg.proc_root);
        let user_of = |uid: u32| ttmem_scan::user_name(uid).unwrap_or_else(|| uid.to_string());
        let tt_metal = self.cfg.tt_metal_dir.as_ref().and_then(|dir| {
            ttmem_ttmetal::read_dir(dir)
                .inspect_err(|e| tracing::debug!(dir = %dir.display(), "cannot read TT-Metal's counter files: {e}"))
                .ok()
        });
        let holders = ttmem_ttmetal::kmd::holders(&self.cfg.proc_root);
        let mut tt = external_views(tt_metal.as_ref(), &holders, &proc, &user_of);
        // A start time converted to the wall clock moves by the boot time's few milliseconds of
        // jitter from one reading to the next: keep the first, so an unchanged process reads
        // as unchanged.
        for v in &mut tt.views {
            if let Some(old) = self
                .external
                .views
                .iter()
                .find(|o| o.id.pid == v.id.pid && o.id.start_time == v.id.start_time && o.source == v.source)
            {
                v.started_unix_ns = old.started_unix_ns;
            }
        }
        if tt.views != self.external.views
            || tt.notes != self.external.notes
            || tt.skipped != self.external.skipped
            || tt.chips != self.external.chips
        {
            self.generation += 1;
        }
        self.external.views = tt.views;
        self.external.notes = tt.notes;
        self.external.skipped = tt.skipped;
        self.external.chips = tt.chips;
    }
}
