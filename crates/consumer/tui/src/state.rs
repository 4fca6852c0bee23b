//! The state behind the screen: the hosts' data, history of each chip, sorting, filtering,
//! selection and which screen is shown. Pure: updated by refreshes and actions.

use std::collections::{BTreeMap, VecDeque};

use ttmem_model::ProcessRow;

use crate::input::Action;
use crate::source::{Detail, HostData};

/// Samples of each chip's history kept (at 1 s refresh: ten minutes).
pub const HISTORY_SAMPLES: usize = 600;

/// Which screen is shown.
#[derive(Clone, Debug, PartialEq)]
pub enum Screen {
    /// Chips and processes.
    Main,
    /// The key list over the main screen.
    Help,
    /// One process's allocations and events.
    Detail {
        /// Host index.
        host: usize,
        /// Process.
        pid: u32,
    },
}

/// A process table row: which host, and the process.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    /// Host index.
    pub host: usize,
    /// The process.
    pub process: &'a ProcessRow,
}

/// Fixed columns before the categories, and after.
pub const LEAD_COLUMNS: [&str; 5] = ["PID", "USER", "NAME", "CHIP", "STATE"];
/// Columns after the categories.
pub const TAIL_COLUMNS: [&str; 2] = ["PEAK", "AGE"];

/// Everything the view draws.
pub struct App {
    /// Per host, the latest data.
    pub hosts: Vec<HostData>,
    /// Per (host, device id): (DRAM %, L1 %) samples, oldest first.
    pub history: BTreeMap<(usize, u32), VecDeque<(f64, f64)>>,
    /// Sort column index into [`App::columns`], and direction.
    pub sort: (usize, bool),
    /// Only this chip's processes (host, device id).
    pub chip_filter: Option<(usize, u32)>,
    /// Only names containing this.
    pub name_filter: String,
    /// Typing a name filter.
    pub typing: bool,
    /// Selected row in the filtered table.
    pub selected: usize,
    /// The screen.
    pub screen: Screen,
    /// The drill-down's data.
    pub detail: Option<Detail>,
    /// Refresh period.
    pub refresh_ms: u64,
    /// Draw without colours.
    pub no_color: bool,
    /// This machine's name.
    pub hostname: String,
    /// Wall-clock text of the last refresh.
    pub clock: String,
}

impl App {
    /// An app with no data yet.
    pub fn new(refresh_ms: u64, no_color: bool, hostname: String) -> Self {
        App {
            hosts: Vec::new(),
            history: BTreeMap::new(),
            sort: (0, false),
            chip_filter: None,
            name_filter: String::new(),
            typing: false,
            selected: 0,
            screen: Screen::Main,
            detail: None,
            refresh_ms,
            no_color,
            hostname,
            clock: String::new(),
        }
    }

    /// Takes a refresh: new data for every host, one history sample per chip.
    pub fn update(&mut self, hosts: Vec<HostData>, clock: String) {
        for (h, data) in hosts.iter().enumerate() {
            let Some(s) = &data.snapshot else { continue };
            for d in &s.devices {
                let pct = |name: &str| {
                    d.categories
                        .iter()
                        .find(|c| c.name == name && c.total > 0)
                        .map(|c| 100.0 * c.used as f64 / c.total as f64)
                        .unwrap_or(0.0)
                };
                let ring = self.history.entry((h, d.id)).or_default();
                if ring.len() == HISTORY_SAMPLES {
                    ring.pop_front();
                }
                ring.push_back((pct("DRAM"), pct("L1")));
            }
        }
        self.hosts = hosts;
        self.clock = clock;
        let n = self.rows().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    /// Category columns: those any host shows.
    pub fn categories(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        for s in self.hosts.iter().filter_map(|h| h.snapshot.as_ref()) {
            for c in s.columns() {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
        cols
    }

    /// All column names of the process table.
    pub fn columns(&self) -> Vec<String> {
        let mut c: Vec<String> = Vec::new();
        if self.hosts.len() > 1 {
            c.push("HOST".into());
        }
        c.extend(LEAD_COLUMNS.iter().map(|s| s.to_string()));
        c.extend(self.categories());
        c.extend(TAIL_COLUMNS.iter().map(|s| s.to_string()));
        c
    }

    /// Whether the data lacks per-chip bytes (fetched with totals only).
    pub fn needs_per_chip_detail(&self) -> bool {
        self.hosts
            .iter()
            .filter_map(|h| h.snapshot.as_ref())
            .flat_map(|s| s.processes.iter())
            .any(|p| p.devices.is_empty() && !p.device_ids.is_empty())
    }

    /// Bytes of a category in a process (over all its devices, or one chip when filtered).
    pub fn bytes(&self, r: &Row, category: &str) -> u64 {
        if self.chip_filter.is_none() {
            return r
                .process
                .totals
                .iter()
                .filter(|c| c.name == category)
                .map(|c| c.bytes)
                .sum();
        }
        r.process
            .devices
            .iter()
            .filter(|d| self.chip_filter.is_none_or(|(h, id)| h == r.host && id == d.id))
            .flat_map(|d| d.categories.iter())
            .filter(|c| c.name == category)
            .map(|c| c.bytes)
            .sum()
    }

    /// The process rows after filters, in sort order.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row> = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(h, d)| d.snapshot.as_ref().map(|s| (h, s)))
            .flat_map(|(h, s)| s.processes.iter().map(move |p| Row { host: h, process: p }))
            .filter(|r| {
                self.chip_filter.is_none_or(|(h, id)| {
                    h == r.host && (r.process.device_ids.contains(&id) || r.process.devices.iter().any(|d| d.id == id))
                })
            })
            .filter(|r| {
                self.name_filter.is_empty()
                    || r.process
                        .id
                        .name
                        .to_lowercase()
                        .contains(&self.name_filter.to_lowercase())
            })
            .collect();
        let columns = self.columns();
        let col = columns.get(self.sort.0).cloned().unwrap_or_default();
        let key = |r: &Row| -> (u64, String) {
            let p = r.process;
            match col.as_str() {
                "HOST" => (r.host as u64, String::new()),
                "PID" => (p.id.pid as u64, String::new()),
                "USER" => (0, p.id.user.clone()),
                "NAME" => (0, p.id.name.clone()),
                "CHIP" => (
                    p.device_ids
                        .first()
                        .or(p.devices.first().map(|d| &d.id))
                        .map(|&d| d as u64)
                        .unwrap_or(u64::MAX),
                    String::new(),
                ),
                "STATE" => (0, p.state.to_string()),
                "PEAK" => (p.peak_bytes, String::new()),
                "AGE" => ((p.age_s * 1000.0) as u64, String::new()),
                category => (self.bytes(r, category), String::new()),
            }
        };
        rows.sort_by(|a, b| key(a).cmp(&key(b)).then(a.process.id.pid.cmp(&b.process.id.pid)));
        if self.sort.1 {
            rows.reverse();
        }
        rows
    }

    /// Every chip, in order: (host, device id).
    pub fn chips(&self) -> Vec<(usize, u32)> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(h, d)| d.snapshot.as_ref().map(|s| (h, s)))
            .flat_map(|(h, s)| s.devices.iter().map(move |d| (h, d.id)))
            .collect()
    }

    /// Applies an action. Returns true when the app should quit, and (host, pid) when a
    /// drill-down needs fresh detail.
    pub fn apply(&mut self, action: Action) -> (bool, Option<(usize, u32)>) {
        let rows = self.rows().len();
        let page = 10;
        match action {
            Action::Quit => return (true, None),
            Action::Help => {
                self.screen = if self.screen == Screen::Help {
                    Screen::Main
                } else {
                    Screen::Help
                }
            }
            Action::Back => {
                self.screen = Screen::Main;
                self.detail = None;
            }
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected = (self.selected + 1).min(rows.saturating_sub(1)),
            Action::PageUp => self.selected = self.selected.saturating_sub(page),
            Action::PageDown => self.selected = (self.selected + page).min(rows.saturating_sub(1)),
            Action::Open => {
                let pick = self.rows().get(self.selected).map(|r| (r.host, r.process.id.pid));
                if let Some((host, pid)) = pick {
                    self.screen = Screen::Detail { host, pid };
                    return (false, Some((host, pid)));
                }
            }
            Action::SortNext => self.sort.0 = (self.sort.0 + 1) % self.columns().len().max(1),
            Action::SortPrev => {
                self.sort.0 = (self.sort.0 + self.columns().len().max(1) - 1) % self.columns().len().max(1)
            }
            Action::Reverse => self.sort.1 = !self.sort.1,
            Action::ChipFilter => {
                let chips = self.chips();
                self.chip_filter = match self.chip_filter.and_then(|c| chips.iter().position(|x| *x == c)) {
                    None => chips.first().copied(),
                    Some(i) => chips.get(i + 1).copied(),
                };
                self.selected = 0;
            }
            Action::StartFilter => self.typing = true,
            Action::FilterChar(c) => self.name_filter.push(c),
            Action::FilterBackspace => {
                self.name_filter.pop();
            }
            Action::FilterDone => self.typing = false,
            Action::FilterCancel => {
                self.typing = false;
                self.name_filter.clear();
            }
            Action::Faster => self.refresh_ms = (self.refresh_ms / 2).max(100),
            Action::Slower => self.refresh_ms = (self.refresh_ms * 2).min(10_000),
            Action::None => {}
        }
        (false, None)
    }
}
