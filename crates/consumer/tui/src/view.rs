//! Drawing: a pure function of the state onto a frame.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Sparkline, Table, Wrap};
use ttmem_model::DeviceRow;
use ttmem_report::{short_bytes, truncate};

use crate::state::{App, Row, Screen};

/// Narrowest chip panel, in columns.
const PANEL_MIN_WIDTH: u16 = 40;

impl App {
    fn style(&self, s: Style) -> Style {
        if self.no_color {
            Style::default().add_modifier(s.add_modifier)
        } else {
            s
        }
    }

    fn level(&self, pct: f64) -> Style {
        self.style(Style::default().fg(if pct >= 90.0 {
            Color::Red
        } else if pct >= 75.0 {
            Color::Yellow
        } else {
            Color::Green
        }))
    }
}

/// Draws the whole screen.
pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    let header_lines = if app.hosts.iter().any(|h| h.alert.is_some()) {
        3
    } else {
        2
    };
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(header_lines),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(f, app, header);
    match &app.screen {
        Screen::Detail { host, pid } => render_detail(f, app, body, *host, *pid),
        _ => render_main(f, app, body),
    }
    let keys = if app.typing {
        format!("filter name: {}_   (Enter keep, Esc clear)", app.name_filter)
    } else {
        "q quit  ? help  ↑↓ select  Enter open  s/S sort  r reverse  c chip  / name  +/- rate".into()
    };
    f.render_widget(
        Paragraph::new(keys).style(app.style(Style::default().add_modifier(Modifier::DIM))),
        footer,
    );
    if app.screen == Screen::Help {
        render_help(f, app, area);
    }
}

fn render_header(f: &mut Frame, app: &App, area: Rect) {
    let devices: usize = app
        .hosts
        .iter()
        .filter_map(|h| h.snapshot.as_ref())
        .map(|s| s.devices.len())
        .sum();
    let procs: Vec<_> = app
        .hosts
        .iter()
        .filter_map(|h| h.snapshot.as_ref())
        .flat_map(|s| s.processes.iter())
        .collect();
    let running = procs.iter().filter(|p| p.state.is_running()).count();
    let title = format!(
        "ttmem top · {} · {} · refresh {} ms · {devices} device{} · {} process{} ({running} running)",
        app.hostname,
        app.clock,
        app.refresh_ms,
        if devices == 1 { "" } else { "s" },
        procs.len(),
        if procs.len() == 1 { "" } else { "es" },
    );
    let mut second: Vec<Span> = Vec::new();
    for (i, h) in app.hosts.iter().enumerate() {
        if i > 0 {
            second.push(Span::raw("  |  "));
        }
        let label = if app.hosts.len() > 1 {
            format!("{}: ", h.label)
        } else {
            String::new()
        };
        match &h.error {
            Some(e) => second.push(Span::styled(
                format!("{label}{e}"),
                app.style(Style::default().fg(Color::Red)),
            )),
            None => second.push(Span::raw(format!("{label}source: {}", h.source))),
        }
    }
    let mut filters = Vec::new();
    if let Some((h, id)) = app.chip_filter {
        filters.push(if app.hosts.len() > 1 {
            format!("chip {}:{id}", app.hosts[h].label)
        } else {
            format!("chip {id}")
        });
    }
    if !app.name_filter.is_empty() {
        filters.push(format!("name ~ {:?}", app.name_filter));
    }
    if !filters.is_empty() {
        second.push(Span::styled(
            format!("   filter: {}", filters.join(", ")),
            app.style(Style::default().fg(Color::Cyan)),
        ));
    }
    let mut text = vec![
        Line::from(Span::styled(
            title,
            app.style(Style::default().add_modifier(Modifier::BOLD)),
        )),
        Line::from(second),
    ];
    let alerts: Vec<String> = app
        .hosts
        .iter()
        .filter_map(|h| {
            h.alert.as_ref().map(|a| {
                if app.hosts.len() > 1 {
                    format!("{}: {a}", h.label)
                } else {
                    a.clone()
                }
            })
        })
        .collect();
    if !alerts.is_empty() {
        text.push(Line::from(Span::styled(
            alerts.join("  |  "),
            app.style(Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)),
        )));
    }
    f.render_widget(Paragraph::new(text), area);
}

fn panel_height(dev: &DeviceRow) -> u16 {
    let cats = dev.categories.iter().filter(|c| c.total > 0).take(6).count() as u16;
    2 + cats + 1 + 2
}

fn render_main(f: &mut Frame, app: &App, area: Rect) {
    let devices: Vec<(usize, &DeviceRow)> = app
        .hosts
        .iter()
        .enumerate()
        .filter_map(|(h, d)| d.snapshot.as_ref().map(|s| (h, s)))
        .flat_map(|(h, s)| s.devices.iter().map(move |d| (h, d)))
        .collect();
    let cols = (area.width / PANEL_MIN_WIDTH).max(1) as usize;
    let rows = devices.len().div_ceil(cols);
    let tallest = devices.iter().map(|(_, d)| panel_height(d)).max().unwrap_or(0);
    let grid_height = rows as u16 * tallest;
    // Panels when they fit in about 60 % of the screen; otherwise one line per chip.
    let (chip_area, table_area) = if devices.is_empty() {
        let [a, b] = Layout::vertical([Constraint::Length(2), Constraint::Min(3)]).areas(area);
        (a, b)
    } else if grid_height <= area.height * 3 / 5 {
        let [a, b] = Layout::vertical([Constraint::Length(grid_height), Constraint::Min(3)]).areas(area);
        (a, b)
    } else {
        let (_, lines) = compact_grid(devices.len(), area.width);
        let lines = (lines as u16).min(area.height / 2).max(2);
        let [a, b] = Layout::vertical([Constraint::Length(lines), Constraint::Min(3)]).areas(area);
        (a, b)
    };
    if devices.is_empty() {
        f.render_widget(
            Paragraph::new("No devices: no process reports to ttmem here yet."),
            chip_area,
        );
    } else if grid_height <= area.height * 3 / 5 {
        for (i, (h, d)) in devices.iter().enumerate() {
            let width = chip_area.width / cols as u16;
            let r = Rect {
                x: chip_area.x + (i % cols) as u16 * width,
                y: chip_area.y + (i / cols) as u16 * tallest,
                width,
                height: tallest,
            };
            render_panel(f, app, *h, d, r);
        }
    } else {
        render_compact(f, app, &devices, chip_area);
    }
    render_table(f, app, table_area);
}

fn bar(pct: f64, width: usize) -> String {
    let filled = ((pct / 100.0) * width as f64).round().clamp(0.0, width as f64) as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn render_panel(f: &mut Frame, app: &App, host: usize, d: &DeviceRow, area: Rect) {
    let prefix = if app.hosts.len() > 1 {
        format!("{}:", app.hosts[host].label)
    } else {
        String::new()
    };
    let title = format!(
        " {prefix}{} {} {}{} ",
        d.id,
        d.name,
        d.arch,
        if d.remote { " (remote)" } else { "" }
    );
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    let numbers_width = 18usize;
    let bar_width = (inner.width as usize).saturating_sub(9 + numbers_width).max(4);
    for c in d.categories.iter().filter(|c| c.total > 0).take(6) {
        let pct = 100.0 * c.used as f64 / c.total as f64;
        lines.push(Line::from(vec![
            Span::raw(format!("{:<9}", truncate(&c.name, 8))),
            Span::styled(bar(pct, bar_width), app.level(pct)),
            Span::raw(format!(
                " {:>5}/{:<5}{:>4.0}%",
                short_bytes(c.used),
                short_bytes(c.total),
                pct
            )),
        ]));
    }
    match app.hosts[host].maps.get(&d.id) {
        Some((cells, largest)) => {
            const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
            let width = (inner.width as usize).saturating_sub(22).max(4);
            let map: String = (0..width)
                .map(|i| {
                    let lo = i * cells.len() / width;
                    let hi = ((i + 1) * cells.len() / width).max(lo + 1).min(cells.len());
                    let v = if lo < hi {
                        cells[lo..hi].iter().copied().fold(0.0f32, f32::max)
                    } else {
                        0.0
                    };
                    LEVELS[(v * 8.0).round().clamp(0.0, 8.0) as usize]
                })
                .collect();
            lines.push(Line::from(vec![
                Span::raw("map      "),
                Span::styled(map, app.style(Style::default().fg(Color::Blue))),
                Span::raw(format!(" free≤{}", short_bytes(*largest))),
            ]));
        }
        None => lines.push(Line::from(Span::styled(
            "map      (needs the daemon)",
            app.style(Style::default().add_modifier(Modifier::DIM)),
        ))),
    }
    let used = lines.len() as u16;
    f.render_widget(
        Paragraph::new(lines),
        Rect {
            height: used.min(inner.height),
            ..inner
        },
    );
    // History of DRAM % and L1 %, one sparkline each, newest on the right.
    for (row, (label, pick)) in [("DRAM %", 0usize), ("L1 %", 1usize)].into_iter().enumerate() {
        let y = inner.y + used + row as u16;
        if y >= inner.y + inner.height {
            break;
        }
        let width = inner.width.saturating_sub(9) as usize;
        let hist: Vec<u64> = app
            .history
            .get(&(host, d.id))
            .map(|r| {
                r.iter()
                    .rev()
                    .take(width)
                    .rev()
                    .map(|s| if pick == 0 { s.0 } else { s.1 }.round() as u64)
                    .collect()
            })
            .unwrap_or_default();
        let line = Rect { y, height: 1, ..inner };
        let [l, spark] = Layout::horizontal([Constraint::Length(9), Constraint::Min(1)]).areas(line);
        f.render_widget(Paragraph::new(label), l);
        let color = if pick == 0 { Color::Magenta } else { Color::Cyan };
        f.render_widget(
            Sparkline::default()
                .data(&hist)
                .max(100)
                .style(app.style(Style::default().fg(color))),
            spark,
        );
    }
}

/// Width of one chip in compact mode.
const COMPACT_WIDTH: u16 = 46;

/// Chips per line and lines in compact mode.
fn compact_grid(n: usize, width: u16) -> (usize, usize) {
    let cols = (width / COMPACT_WIDTH).max(1) as usize;
    (cols, n.div_ceil(cols))
}

fn render_compact(f: &mut Frame, app: &App, devices: &[(usize, &DeviceRow)], area: Rect) {
    let (cols, _) = compact_grid(devices.len(), area.width);
    let capacity = area.height as usize * cols;
    let shown = if devices.len() > capacity {
        capacity.saturating_sub(1)
    } else {
        devices.len()
    };
    let mut lines: Vec<Line> = Vec::new();
    for chunk in devices[..shown].chunks(cols) {
        let mut spans = Vec::new();
        for (h, d) in chunk {
            let prefix = if app.hosts.len() > 1 {
                format!("{}:", app.hosts[*h].label)
            } else {
                String::new()
            };
            spans.push(Span::raw(format!(
                "{:>3} {:<8}",
                format!("{prefix}{}", d.id),
                truncate(&d.name, 8)
            )));
            // DRAM and L1 (the categories people watch on large systems), then padding.
            for c in d
                .categories
                .iter()
                .filter(|c| c.total > 0 && (c.name == "DRAM" || c.name == "L1"))
                .take(2)
            {
                let pct = 100.0 * c.used as f64 / c.total as f64;
                spans.push(Span::raw(format!(" {}", &c.name[..1])));
                spans.push(Span::styled(bar(pct, 8), app.level(pct)));
                spans.push(Span::raw(format!("{:>4.0}%", pct)));
            }
            spans.push(Span::raw("  "));
        }
        lines.push(Line::from(spans));
    }
    if shown < devices.len() {
        lines.push(Line::from(format!(
            "… {} more chips (filter with c, or enlarge the terminal)",
            devices.len() - shown
        )));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn age(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn cell_text(app: &App, r: &Row, column: &str) -> String {
    let p = r.process;
    match column {
        "HOST" => app.hosts[r.host].label.clone(),
        "PID" => p.id.pid.to_string(),
        "USER" => truncate(&p.id.user, 8),
        "NAME" => truncate(&p.id.name, 18),
        "CHIP" => {
            let ids: Vec<String> = if p.devices.is_empty() {
                p.device_ids.iter().map(|d| d.to_string()).collect()
            } else {
                p.devices.iter().map(|d| d.id.to_string()).collect()
            };
            truncate(&ids.join(","), 8)
        }
        "STATE" => {
            if p.left_behind {
                "exited*".into()
            } else {
                p.state.to_string()
            }
        }
        "PEAK" => short_bytes(p.peak_bytes),
        "AGE" => age(p.age_s),
        category => short_bytes(app.bytes(r, category)),
    }
}

fn render_table(f: &mut Frame, app: &App, area: Rect) {
    let columns = app.columns();
    let header = TRow::new(columns.iter().enumerate().map(|(i, c)| {
        let mark = if i == app.sort.0 {
            if app.sort.1 { "▼" } else { "▲" }
        } else {
            ""
        };
        Cell::from(format!("{c}{mark}"))
    }))
    .style(app.style(Style::default().add_modifier(Modifier::BOLD)));
    let rows = app.rows();
    let visible = area.height.saturating_sub(1) as usize;
    let offset = app.selected.saturating_sub(visible.saturating_sub(1));
    let body: Vec<TRow> = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(i, r)| {
            let mut style = Style::default();
            if r.process.left_behind {
                style = app.style(style.fg(Color::Yellow));
            } else if !r.process.state.is_running() {
                style = app.style(style.add_modifier(Modifier::DIM));
            }
            if i == app.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            TRow::new(columns.iter().map(|c| Cell::from(cell_text(app, r, c)))).style(style)
        })
        .collect();
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|c| match c.as_str() {
            "HOST" => Constraint::Length(10),
            "PID" => Constraint::Length(8),
            "USER" => Constraint::Length(9),
            "NAME" => Constraint::Length(19),
            "CHIP" => Constraint::Length(6),
            "STATE" => Constraint::Length(9),
            "AGE" => Constraint::Length(5),
            _ => Constraint::Length(9),
        })
        .collect();
    if rows.is_empty() {
        let [h, msg] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
        f.render_widget(Table::new(Vec::<TRow>::new(), widths).header(header), h);
        f.render_widget(Paragraph::new("No processes match."), msg);
        return;
    }
    f.render_widget(Table::new(body, widths).header(header).column_spacing(1), area);
}

fn render_detail(f: &mut Frame, app: &App, area: Rect, host: usize, pid: u32) {
    let p = app
        .hosts
        .get(host)
        .and_then(|h| h.snapshot.as_ref())
        .and_then(|s| s.processes.iter().find(|p| p.id.pid == pid));
    let title = match p {
        Some(p) => format!(
            " pid {pid} · {} · {}{} · peak {} · Esc back ",
            p.id.name,
            p.state,
            if p.left_behind { " (left memory behind)" } else { "" },
            short_bytes(p.peak_bytes)
        ),
        None => format!(" pid {pid} (gone) · Esc back "),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(d) = &app.detail else {
        f.render_widget(Paragraph::new("loading…"), inner);
        return;
    };
    let note_lines = d.note.is_some() as u16;
    let [note, allocs, events] = Layout::vertical([
        Constraint::Length(note_lines),
        Constraint::Percentage(60),
        Constraint::Min(3),
    ])
    .areas(inner);
    if let Some(n) = &d.note {
        f.render_widget(
            Paragraph::new(n.as_str())
                .style(app.style(Style::default().fg(Color::Yellow)))
                .wrap(Wrap { trim: true }),
            note,
        );
    }
    let running = p.is_some_and(|p| p.state.is_running());
    let alloc_title = if running {
        format!("live allocations ({} in all, largest first)", d.total)
    } else {
        format!("left behind at exit ({} allocations, largest first)", d.total)
    };
    let header = TRow::new(["ADDRESS", "SIZE", "CATEGORY", "AGE", "TAG"])
        .style(app.style(Style::default().add_modifier(Modifier::BOLD)));
    let rows: Vec<TRow> = d
        .allocations
        .iter()
        .take(allocs.height.saturating_sub(2) as usize)
        .map(|a| {
            TRow::new([
                format!("{:#x}", a.address),
                short_bytes(a.size),
                a.category.clone(),
                age(a.age_s as f64),
                a.tag.clone().unwrap_or_default(),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(9),
                Constraint::Length(14),
                Constraint::Length(6),
                Constraint::Min(10),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(alloc_title)),
        allocs,
    );
    let ev_title = if running {
        "recent events (newest first)"
    } else {
        "flight recorder: the last events before exit (newest first)"
    };
    let lines: Vec<Line> = d
        .events
        .iter()
        .take(events.height.saturating_sub(1) as usize)
        .map(|e| {
            let kind = match e.kind {
                ttmem_model::api::EventKind::Alloc => "alloc",
                ttmem_model::api::EventKind::Free => "free",
            };
            Line::from(format!(
                "{kind:<6} {:<10} {:#14x} {:>8} {}",
                e.category.as_deref().unwrap_or(""),
                e.address,
                short_bytes(e.size),
                e.tag.as_deref().unwrap_or("")
            ))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(ev_title)),
        events,
    );
}

fn render_help(f: &mut Frame, app: &App, area: Rect) {
    let keys = [
        ("q, Ctrl-C", "quit"),
        ("?, h, F1", "this help"),
        ("↑ ↓ j k, PgUp PgDn", "select a process"),
        (
            "Enter",
            "open: live allocations and events (an exited process: its flight recorder)",
        ),
        ("Esc", "back"),
        ("s / S, → / ←", "sort by the next / previous column"),
        ("r", "reverse the sort"),
        ("c", "show one chip's processes; again for the next chip, then all"),
        ("/", "filter by name (Enter keeps, Esc clears)"),
        ("+ / -", "refresh faster / slower"),
    ];
    let w = area.width.min(86);
    let h = (keys.len() as u16 + 4).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    let lines: Vec<Line> = keys.iter().map(|(k, v)| Line::from(format!(" {k:<20} {v}"))).collect();
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" keys (? closes) "))
            .style(app.style(Style::default())),
        r,
    );
}
