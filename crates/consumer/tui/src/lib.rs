//! `ttmem top`: every chip and process on one screen, per buffer type.
//!
//! Three parts, as in tokio-console: [`state`] (fed by refreshes, changed by actions),
//! [`view`] (a pure `render(frame, &state)`), [`input`] (a pure key mapping). [`source`] gets
//! the data: a daemon's API, or the regions directly (counters only). The terminal is always
//! restored: by a guard on return, a panic hook, and SIGTERM/SIGINT handling.

#![deny(missing_docs)]

pub mod input;
pub mod keys;
pub mod source;
pub mod state;
pub mod view;

use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use source::{HostData, Source};
use state::{App, Screen};

/// Cells of the DRAM memory map asked for per chip.
pub const MAP_CELLS: usize = 64;

/// How `ttmem top` runs.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// Hosts to show (one per `--remote`, or the local one).
    pub sources: Vec<Source>,
    /// Refresh period.
    pub refresh_ms: u64,
    /// No colours.
    pub no_color: bool,
    /// Set when the caller's stop signals (SIGTERM, SIGINT, SIGHUP) arrive: the terminal is
    /// restored and `run` returns.
    pub stop: &'static AtomicBool,
}

/// Why `ttmem top` could not run.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The terminal could not be set up or drawn.
    #[error("terminal: {0} (ttmem top needs an interactive terminal; use ttmem ps or ttmem watch otherwise)")]
    Terminal(#[from] std::io::Error),
}

/// Restores the terminal when dropped, however `run` ends.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}

fn wall_clock() -> String {
    ttmem_report::clock::LocalTime::now().map_or_else(String::new, |t| t.date_time())
}

/// The terminal's size, or None when it cannot be asked (hung up).
fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    (unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_col, ws.ws_row))
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Reads every source once (with memory maps when `maps`, per-chip detail when `per_chip`),
/// reusing `previous` data a daemon says is unchanged.
pub fn fetch_all(sources: &[Source], maps: bool, per_chip: bool, previous: &[HostData]) -> Vec<HostData> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| s.fetch(if maps { MAP_CELLS } else { 0 }, per_chip, previous.get(i)))
        .collect()
}

/// Memory maps change slowly: they are fetched at most this often, and kept in between.
const MAP_REFRESH: Duration = Duration::from_secs(1);

/// Runs the interface until `q`, Ctrl-C, or `opts.stop` is set.
pub fn run(opts: TopOptions) -> Result<(), TopError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    enable_raw_mode()?;
    let _guard = TerminalGuard;
    execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;

    let mut app = App::new(opts.refresh_ms.max(100), opts.no_color, hostname());
    app.update(fetch_all(&opts.sources, true, false, &[]), wall_clock());
    let mut maps_at = Instant::now();
    let mut next_refresh = Instant::now() + Duration::from_millis(app.refresh_ms);
    let mut dirty = true;
    let mut last_size = terminal_size();
    loop {
        // Draw only when something changed: new data, a key, a resize, or the clock's second.
        if dirty {
            terminal.draw(|f| view::render(f, &app))?;
            dirty = false;
        }
        if opts.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let wait = next_refresh
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match keys::wait(wait.as_millis() as i32) {
            keys::Input::Gone => return Ok(()),
            keys::Input::Keys(keys) => {
                for k in keys {
                    dirty = true;
                    let (quit, open) = app.apply(input::map_key(k, app.typing));
                    if quit {
                        return Ok(());
                    }
                    if let Some((host, pid)) = open {
                        app.detail = Some(opts.sources[host].detail(pid, &app.hosts[host]));
                    }
                    if app.chip_filter.is_some() && app.needs_per_chip_detail() {
                        // A chip filter needs per-chip bytes now, not at the next refresh.
                        next_refresh = Instant::now();
                    }
                }
            }
        }
        // A resize is just a redraw (ratatui adapts to the new size when drawing).
        let size = terminal_size();
        if size != last_size {
            last_size = size;
            dirty = true;
        }
        if Instant::now() >= next_refresh {
            let with_maps = maps_at.elapsed() >= MAP_REFRESH;
            let mut hosts = fetch_all(&opts.sources, with_maps, app.chip_filter.is_some(), &app.hosts);
            if with_maps {
                maps_at = Instant::now();
            } else {
                for (new, old) in hosts.iter_mut().zip(&app.hosts) {
                    new.maps = old.maps.clone();
                }
            }
            let clock = wall_clock();
            dirty |= with_maps || clock != app.clock || hosts.iter().any(|h| h.changed);
            app.update(hosts, clock);
            if let Screen::Detail { host, pid } = app.screen {
                app.detail = Some(opts.sources[host].detail(pid, &app.hosts[host]));
                dirty = true;
            }
            next_refresh = Instant::now() + Duration::from_millis(app.refresh_ms);
        }
    }
}

#[cfg(test)]
mod tests;
