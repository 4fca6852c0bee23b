// ttmem's dashboard: the host overview, live from the daemon's Server-Sent Events stream.
// Plain modules, no framework: the daemon embeds these files, nothing is fetched elsewhere.

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

const SVG = "http://www.w3.org/2000/svg";
const svgEl = (tag, attrs = {}) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
};

/** Bytes in short binary units, as `ttmem ps` writes them. */
export function shortBytes(n) {
  const units = ["B", "K", "M", "G", "T", "P"];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  if (u === 0) return `${n}B`;
  return v >= 100 ? `${v.toFixed(0)}${units[u]}` : `${v.toFixed(1)}${units[u]}`;
}

const state = {
  devices: [],       // the snapshot's device objects
  processes: [],     // the snapshot's process objects (totals only)
  alerts: new Map(), // fingerprint → alert (pending and firing)
  history: new Map(),// device id → [[unix s, DRAM bytes]]
  sort: { key: "bytes", up: false },
  view: { name: "overview" },
  page: { pid: 0, offset: 0, sort: "size", limit: 50 },
  chart: { window: 600, from: null, to: null }, // the chip page's history window (null: up to now)
  hover: null,       // { key, frac }: the overview line hovered, kept across redraws
  peers: new Map(),  // peer name → { info, up, error, devices, history, alerts, … } (the config's [[peers]])
};

const HISTORY_S = 600;

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.json().catch(() => ({}))).error ?? ""}`);
  return r.json();
}

function fingerprint(a) {
  return a.rule + Object.entries(a.labels).sort().map(([k, v]) => `,${k}=${v}`).join("");
}

function gauge(cat) {
  const pct = cat.total > 0 ? (100 * cat.used) / cat.total : 0;
  const fill = el("div", { class: pct >= 90 ? "bad" : pct >= 75 ? "warn" : "" });
  fill.style.width = `${Math.min(100, pct).toFixed(1)}%`;
  const exact = cat.total > 0
    ? `${cat.name}: ${cat.used.toLocaleString()} of ${cat.total.toLocaleString()} bytes (${pct.toFixed(2)}%), ${cat.count} allocations`
    : `${cat.name}: ${cat.used.toLocaleString()} bytes, capacity unknown`;
  const bar = el("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
                          "aria-valuenow": pct.toFixed(1), "aria-label": exact, title: exact }, fill);
  return el("div", { class: "gauge", title: exact },
    el("span", { text: cat.name }), bar,
    el("span", { class: "pct", text: cat.total > 0 ? `${pct.toFixed(0)}%` : shortBytes(cat.used) }));
}

/** A step series' value at time `t`: the last point at or before it (null before the first). */
function stepAt(points, t) {
  let v = null;
  for (const p of points) { if (p[0] <= t) v = p[1]; else break; }
  return v;
}

/** DRAM over the last minutes: the history's steps, carried on to now at today's value.
 * Hovering reads the exact bytes at that time (kept across live redraws, by `key`); a click
 * opens `href`, the chip's page, whose charts zoom. */
function sparkline(key, history, now, current, href) {
  const points = history.length ? [...history, [now, current]] : [[now - 1, current], [now, current]];
  const svg = svgEl("svg", { class: "spark", viewBox: "0 0 200 36", preserveAspectRatio: "none" });
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  const max = Math.max(...points.map((p) => p[1]), 1);
  let d = "";
  points.forEach(([t, v], i) => {
    const x = t1 > t0 ? ((t - t0) / (t1 - t0)) * 200 : 0;
    const y = 34 - (v / max) * 32;
    d += `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const title = svgEl("title");
  const last = points[points.length - 1][1];
  title.textContent = `DRAM over the last ${Math.max(1, Math.round((t1 - t0) / 60))} min: now ${last.toLocaleString()} bytes, peak ${max.toLocaleString()} bytes`;
  svg.append(title, svgEl("path", { d }));
  const readout = el("div", { class: "spark-readout" });
  const show = (frac) => {
    const t = t0 + frac * (t1 - t0);
    const v = stepAt(points, t) ?? points[0][1];
    svg.append(svgEl("line", { class: "cursor", x1: frac * 200, x2: frac * 200, y1: 0, y2: 36 }));
    readout.textContent = `${new Date(t * 1000).toLocaleTimeString()}: ${v.toLocaleString()} bytes of DRAM`;
  };
  if (state.hover?.key === key) show(state.hover.frac);
  svg.addEventListener("mousemove", (ev) => {
    const r = svg.getBoundingClientRect();
    state.hover = { key, frac: Math.min(1, Math.max(0, (ev.clientX - r.left) / Math.max(1, r.width))) };
    svg.querySelector("line.cursor")?.remove();
    show(state.hover.frac);
  });
  svg.addEventListener("mouseleave", () => {
    state.hover = null;
    svg.querySelector("line.cursor")?.remove();
    readout.textContent = "";
  });
  svg.addEventListener("click", () => { location.href = href; });
  return el("div", { class: "spark-box", "data-spark": key }, svg, readout);
}

/** A chip's card: gauges per buffer type, its sources, its DRAM line. `host` names a peer
 * (its chips link to its own dashboard) or is null for this host. */
function chipCard(d, history, host) {
  const href = host ? `${host.url}/#/chip/${d.id}` : `#/chip/${d.id}`;
  const key = host ? `${host.name}:${d.id}` : String(d.id);
  const sources = (d.sources ?? []).map((s) => el("span", { class: "badge", title: `figures from ${s}`, text: s }));
  return el("article", { class: "chip", [host ? "data-peer-device" : "data-device"]: key, "aria-label": `chip ${d.id}` },
    el("h3", {}, el("a", { href, text: `${d.id} ${d.name}` }),
      el("span", { class: "badge", text: `${d.processes} proc${d.processes === 1 ? "" : "s"}` })),
    el("div", { class: "meta", text: `${d.arch} · ${d.hw_id}${d.remote ? " · remote" : ""} ` }, ...sources),
    ...d.categories.filter((c) => c.total > 0 || c.used > 0).map(gauge),
    sparkline(key, history, Date.now() / 1000, d.categories.find((c) => c.name === "DRAM")?.used ?? 0, href));
}

function renderChips() {
  $("#chips").replaceChildren(...state.devices.map((d) => chipCard(d, state.history.get(d.id) ?? [], null)));
  $("#no-chips").hidden = state.devices.length > 0;
}

/** Adds an update's DRAM figures to `history` (device id → points), keeping `HISTORY_S`. */
function extendHistory(history, u) {
  const now = u.timestamp_ns / 1e9;
  for (const d of u.devices) {
    const dram = d.categories.find((c) => c.name === "DRAM");
    if (!dram) continue;
    const h = history.get(d.id) ?? [];
    h.push([now, dram.used]);
    while (h.length && h[0][0] < now - HISTORY_S) h.shift();
    history.set(d.id, h);
  }
}

/** Whether an update changes which chips or processes there are (then the snapshot is read
 * again), else applies its figures to `devices`. */
function applyUpdate(devices, u) {
  const known = new Set(devices.map((d) => d.id));
  if (u.process_changes.length || u.devices.some((d) => !known.has(d.id)) || u.devices.length !== known.size) {
    return true;
  }
  for (const d of u.devices) {
    Object.assign(devices.find((x) => x.id === d.id), { categories: d.categories, processes: d.processes });
  }
  return false;
}

function renderAlerts() {
  const list = [...state.alerts.values()].sort((a, b) =>
    (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) || a.active_since_unix_ns - b.active_since_unix_ns);
  $("#alerts").hidden = list.length === 0;
  $("#alert-list").replaceChildren(...list.map((a) =>
    el("li", { class: `${a.severity} ${a.state}`, "data-rule": a.rule },
      el("strong", { text: `${a.state === "firing" ? "FIRING" : "pending"} ${a.rule}: ` }), a.summary)));
}

function processBytes(p) {
  return (p.totals ?? []).reduce((s, t) => s + t.bytes, 0);
}

function renderProcesses() {
  const q = $("#filter").value.trim().toLowerCase();
  const { key, up } = state.sort;
  const value = (p) => ({ pid: p.pid, user: p.user, name: p.name, state: p.state, chips: (p.device_ids ?? []).join(","),
                          bytes: processBytes(p), source: p.source })[key];
  const rows = state.processes
    .filter((p) => !q || `${p.pid} ${p.name} ${p.user}`.toLowerCase().includes(q))
    .sort((a, b) => {
      const x = value(a), y = value(b);
      const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
      return up ? c : -c;
    });
  $("#procs tbody").replaceChildren(...rows.map((p) => {
    const bytes = processBytes(p);
    const tip = (p.totals ?? []).map((t) => `${t.name} ${t.bytes.toLocaleString()} bytes`).join(", ");
    return el("tr", { class: p.state, "data-pid": String(p.pid) },
      el("td", {}, el("a", { href: `#/process/${p.pid}`, text: String(p.pid) })),
      el("td", { text: p.user }), el("td", { text: p.name }),
      el("td", { text: p.state === "exited" && p.left_behind ? "exited, left memory" : p.state }),
      el("td", { text: (p.device_ids ?? []).join(", ") }),
      el("td", { class: "num", title: tip, text: shortBytes(bytes) }),
      el("td", { text: p.source }));
  }));
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    const on = b.dataset.sort === key;
    b.closest("th").setAttribute("aria-sort", on ? (up ? "ascending" : "descending") : "none");
  }
}

async function loadSnapshot() {
  const snap = await getJson("/api/v1/snapshot?detail=totals");
  state.devices = snap.devices;
  state.processes = snap.processes;
  renderChips();
  renderProcesses();
}

async function loadHistory() {
  const from = Math.floor(Date.now() / 1000) - HISTORY_S;
  await Promise.all(state.devices.map(async (d) => {
    try {
      const h = await getJson(`/api/v1/history?device=${d.id}&category=DRAM&from=${from}`);
      state.history.set(d.id, h.points);
    } catch { /* a chip without DRAM history draws no line */ }
  }));
  renderChips();
}

/** "1.5G", "64M", "4096" → bytes. */
export function parseBytes(text) {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) return null;
  const scale = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 }[m[2].toUpperCase()];
  return Math.round(parseFloat(m[1]) * scale);
}

const hex = (n) => `0x${n.toString(16)}`;

function show(name) {
  for (const v of ["overview", "chip", "process"]) $(`#view-${v}`).hidden = v !== name;
  state.view = { name };
}

async function showChip(id) {
  show("chip");
  state.view.chip = id;
  const d = state.devices.find((x) => x.id === id);
  $("#crumb").textContent = ` › chip ${id}`;
  $("#chip-title").textContent = d ? `Chip ${id} ${d.name}` : `Chip ${id}`;
  $("#chip-meta").textContent = d ? `${d.arch} · ${d.hw_id} · figures from ${(d.sources ?? []).join(", ")}` : "";
  const cats = (d?.categories ?? []).filter((c) => c.total > 0);
  $("#fit-category").replaceChildren(...cats.map((c) => el("option", { value: c.name, text: c.name })));
  $("#fit-answer").replaceChildren();
  const maps = await Promise.all(cats.map(async (c) => {
    try {
      const [map, fit] = await Promise.all([
        getJson(`/api/v1/devices/${id}/map?category=${encodeURIComponent(c.name)}&cells=128`),
        getJson(`/api/v1/fit?device=${id}&category=${encodeURIComponent(c.name)}&bytes=1`),
      ]);
      return drawMap(c, map, fit);
    } catch (e) {
      return el("section", { class: "map" }, el("h3", { text: c.name }), el("p", { class: "meta", text: e.message }));
    }
  }));
  $("#maps").replaceChildren(...maps);
  await loadChipHistory(id);
}

/** The chip page's history, one chart per buffer type in use, over the chosen window. */
async function loadChipHistory(id) {
  state.chart.loaded = Date.now();
  const d = state.devices.find((x) => x.id === id);
  const to = state.chart.to ?? Math.floor(Date.now() / 1000);
  const from = state.chart.from ?? to - state.chart.window;
  const span = to - from;
  const resolution = span <= 3600 ? "1s" : span <= 86400 ? "10s" : "1m";
  for (const b of document.querySelectorAll("#zoom button")) {
    b.setAttribute("aria-pressed", String(state.chart.from == null && Number(b.dataset.window) === state.chart.window));
  }
  // DRAM always, and the other buffer types in use now.
  const cats = (d?.categories ?? []).filter((c) => c.name === "DRAM" || c.used > 0);
  const charts = await Promise.all(cats.map(async (c) => {
    try {
      const h = await getJson(`/api/v1/history?device=${id}&category=${encodeURIComponent(c.name)}&resolution=${resolution}&from=${from}&to=${to}`);
      return historyChart(c, h.points, from, to);
    } catch (e) {
      return el("p", { class: "meta", text: `${c.name}: ${e.message}` });
    }
  }));
  $("#chip-charts").replaceChildren(...charts);
}

/** One step chart: hover reads the exact value at a time; dragging across zooms to the span. */
function historyChart(cat, points, from, lastSecond) {
  // A point at second S holds for [S, S + 1): the axis runs to the end of the last second.
  const W = 600, H = 90, to = lastSecond + 1;
  const x = (t) => ((t - from) / Math.max(1, to - from)) * W;
  const max = Math.max(cat.total || 0, ...points.map((p) => p[1]), 1);
  const y = (v) => H - 2 - (v / max) * (H - 4);
  let d = "";
  points.forEach(([t, v], i) => { d += i ? `H${x(t).toFixed(1)}V${y(v).toFixed(1)}` : `M${x(t).toFixed(1)},${y(v).toFixed(1)}`; });
  if (points.length) d += `H${W}`;
  const svg = svgEl("svg", { class: "history-chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `${cat.name} over ${Math.round((to - from) / 60)} min, peak ${shortBytes(Math.max(0, ...points.map((p) => p[1])))}` });
  const cursor = svgEl("line", { class: "cursor", y1: 0, y2: H, visibility: "hidden" });
  const band = svgEl("rect", { class: "band", y: 0, height: H, width: 0, visibility: "hidden" });
  svg.append(svgEl("path", { d }), band, cursor);
  const readout = el("span", { class: "readout", text: points.length ? "" : "no data in this window" });
  const timeAt = (ev) => {
    const r = svg.getBoundingClientRect();
    return from + ((ev.clientX - r.left) / Math.max(1, r.width)) * (to - from);
  };
  let dragFrom = null;
  svg.addEventListener("mousemove", (ev) => {
    const t = timeAt(ev);
    cursor.setAttribute("x1", x(t)); cursor.setAttribute("x2", x(t)); cursor.setAttribute("visibility", "visible");
    const v = stepAt(points, t);
    readout.textContent = `${new Date(t * 1000).toLocaleTimeString()}: ` +
      (v == null ? "no value" : `${v.toLocaleString()} bytes${cat.total ? ` (${((100 * v) / cat.total).toFixed(1)}%)` : ""}`);
    if (dragFrom != null) {
      const [a, b] = [x(dragFrom), x(t)].sort((m, n) => m - n);
      band.setAttribute("x", a); band.setAttribute("width", b - a); band.setAttribute("visibility", "visible");
    }
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); dragFrom = null; band.setAttribute("visibility", "hidden"); });
  svg.addEventListener("mousedown", (ev) => { dragFrom = timeAt(ev); ev.preventDefault(); });
  svg.addEventListener("mouseup", (ev) => {
    const t = timeAt(ev);
    if (dragFrom != null && Math.abs(x(t) - x(dragFrom)) > 4) {
      state.chart.from = Math.floor(Math.min(t, dragFrom));
      state.chart.to = Math.ceil(Math.max(t, dragFrom));
      loadChipHistory(state.view.chip).catch(showError);
    }
    dragFrom = null;
  });
  return el("figure", { class: "chart", "data-category": cat.name },
    el("figcaption", {}, el("strong", { text: cat.name }), " ", readout), svg);
}

/** A process's colour: hues spread by the golden angle, so neighbours differ. */
export function ownerHue(pid) {
  return Math.round((pid * 137.508) % 360);
}

function processName(pid) {
  const p = state.processes.find((x) => x.pid === pid);
  return p ? `${p.name} (pid ${pid})` : `pid ${pid}`;
}

/** One bank's address range as cells coloured by the process holding most of each, deeper
 * where fuller, the largest free gap outlined. */
function drawMap(cat, map, fit) {
  const span = Math.max(1, map.addr_end - map.addr_base);
  const width = span / map.cells.length;
  const gap = fit.best_gaps?.[0];
  const owners = map.owners ?? [];
  const cells = map.cells.map((occ, i) => {
    const start = map.addr_base + i * width;
    const inGap = gap && start >= gap.start && start + width <= gap.end;
    const owner = owners[i];
    const c = el("div", { class: inGap ? "gap" : "", "data-owner": owner == null ? "" : String(owner),
      title: `${hex(Math.floor(start))}–${hex(Math.floor(start + width))}: ${(occ * 100).toFixed(0)}% used` +
        `${owner == null ? "" : `, mostly by ${processName(owner)}`}${inGap ? " (in the largest free block)" : ""}` });
    if (occ > 0) {
      const colour = owner == null ? "var(--accent)" : `hsl(${ownerHue(owner)} 65% 50%)`;
      c.style.background = `color-mix(in srgb, ${colour} ${Math.round(25 + 75 * occ)}%, var(--line))`;
    }
    return c;
  });
  const holders = [...new Set(owners.filter((o) => o != null))].sort((a, b) => a - b);
  const key = el("p", { class: "owners" }, ...holders.map((pid) => {
    const sw = el("span", { class: "swatch" });
    sw.style.background = `hsl(${ownerHue(pid)} 65% 50%)`;
    return el("a", { href: `#/process/${pid}`, class: "owner" }, sw, processName(pid));
  }));
  const f = map.fragmentation;
  const legend = `one bank of ${shortBytes(span)}: ${shortBytes(f.free_per_bank)} free in ${f.free_blocks} blocks, ` +
    `the largest ${shortBytes(f.largest_free_per_bank)}${gap ? ` at ${hex(gap.start)} (marked below the cells)` : ""}; ${f.allocations} allocations`;
  return el("section", { class: "map", "data-category": cat.name },
    el("h3", { text: `${cat.name} · ${shortBytes(cat.used)} of ${shortBytes(cat.total)}` }),
    el("div", { class: "cells", role: "img", "aria-label": `${cat.name} memory map: ${legend}` }, ...cells),
    el("p", { class: "legend", text: legend }), key);
}

async function askFit(ev) {
  ev.preventDefault();
  const bytes = parseBytes($("#fit-bytes").value);
  const out = $("#fit-answer");
  if (bytes === null || bytes <= 0) {
    out.replaceChildren(el("p", { text: "Give a size: 4096, 64M, 1.5G." }));
    return;
  }
  const category = $("#fit-category").value;
  try {
    const f = await getJson(`/api/v1/fit?device=${state.view.chip}&category=${encodeURIComponent(category)}&bytes=${bytes}`);
    const verdict = f.fits
      ? `Yes: ${shortBytes(bytes)} of ${category} fits (${shortBytes(f.needed_per_bank)} per bank; the largest free block is ${shortBytes(f.largest_free_per_bank)}).`
      : `No: ${shortBytes(bytes)} of ${category} needs ${shortBytes(f.needed_per_bank)} per bank; the largest free block is ${shortBytes(f.largest_free_per_bank)}.`;
    const who = (n) => n ? `${shortBytes(n.size)} at ${hex(n.address)}${n.pid == null ? "" : ` (pid ${n.pid})`}` : "the range's end";
    out.replaceChildren(el("p", { class: f.fits ? "fits" : "no-fit", text: verdict }),
      el("ul", {}, ...f.best_gaps.map((g) => el("li", {
        text: `${shortBytes(g.end - g.start)} free at ${hex(g.start)}, between ${who(g.below)} and ${who(g.above)}` }))));
  } catch (e) {
    out.replaceChildren(el("p", { text: e.message }));
  }
}

async function showProcess(pid) {
  show("process");
  if (state.page.pid !== pid) state.page = { pid, offset: 0, sort: "size", limit: 50 };
  const p = state.processes.find((x) => x.pid === pid);
  $("#crumb").textContent = ` › process ${pid}`;
  $("#proc-title").textContent = p ? `${p.name} (pid ${pid})` : `Process ${pid}`;
  $("#proc-meta").textContent = p
    ? `${p.user} · ${p.state}${p.left_behind ? ", left memory behind" : ""} · chips ${(p.device_ids ?? []).join(", ")} · ` +
      (p.totals ?? []).map((t) => `${t.name} ${shortBytes(t.bytes)}`).join(", ")
    : "";
  const note = $("#proc-note");
  note.hidden = true;
  $("#dl-perfetto").href = `/api/v1/processes/${pid}/export?format=perfetto`;
  $("#dl-memory-viz").href = `/api/v1/processes/${pid}/export?format=memory-viz`;
  const { offset, sort, limit } = state.page;
  try {
    const page = await getJson(`/api/v1/processes/${pid}/allocations?sort=${sort}&offset=${offset}&limit=${limit}`);
    $("#alloc-count").textContent = `(${page.total.toLocaleString()} in all)`;
    $("#allocs tbody").replaceChildren(...page.items.map((a) => el("tr", {},
      el("td", { text: hex(a.address) }),
      el("td", { class: "num", title: `${a.size.toLocaleString()} bytes`, text: shortBytes(a.size) }),
      el("td", { text: a.device == null ? "" : String(a.device) }), el("td", { text: a.category }),
      el("td", { class: "num", text: `${a.age_s} s` }), el("td", { text: a.tag ?? "" }))));
    $("#page-info").textContent = page.total ? `${offset + 1}–${offset + page.items.length} of ${page.total}` : "none";
    $("#prev-page").disabled = offset === 0;
    $("#next-page").disabled = offset + page.items.length >= page.total;
    if (!page.complete) {
      note.hidden = false;
      note.textContent = `${page.events_lost} events were lost: allocations older than the loss may be missing.`;
    }
    const ev = await getJson(`/api/v1/processes/${pid}/events`);
    $("#timeline").replaceChildren(eventTimeline(ev));
    $("#events").replaceChildren(...[...ev.events].reverse().map((e) => el("li", { class: e.kind },
      `${e.kind} ${shortBytes(e.size)} ${e.category ?? ""} at ${hex(e.address)}` +
      `${e.device == null ? "" : ` on chip ${e.device}`}${e.tag ? ` [${e.tag}]` : ""}`)));
  } catch (e) {
    // Another user's process: the daemon says why (its detail is its owner's).
    note.hidden = false;
    note.textContent = e.message;
    $("#allocs tbody").replaceChildren();
    $("#events").replaceChildren();
    $("#timeline").replaceChildren();
    $("#alloc-count").textContent = "";
    $("#page-info").textContent = "";
  }
}

/** The recorded events on a time axis: allocations up, frees down, taller for bigger. */
function eventTimeline(ev) {
  const events = ev.events;
  if (!events.length) return el("p", { class: "meta", text: "no events recorded" });
  const W = 600, H = 60, mid = H / 2;
  const t0 = events[0].time_ns, t1 = events[events.length - 1].time_ns;
  const maxSize = Math.max(...events.map((e) => e.size), 1);
  const svg = svgEl("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": `${events.length} events over ${((t1 - t0) / 1e9).toFixed(1)} s` });
  svg.append(svgEl("line", { class: "axis", x1: 0, x2: W, y1: mid, y2: mid }));
  const toUnix = (t) => ev.clock ? (ev.clock.unix_ns + t - ev.clock.monotonic_ns) / 1e6 : null;
  for (const e of events) {
    const xpos = t1 > t0 ? ((e.time_ns - t0) / (t1 - t0)) * (W - 2) + 1 : W / 2;
    const len = 4 + (Math.log2(1 + e.size) / Math.log2(1 + maxSize)) * (mid - 6);
    const line = svgEl("line", { class: e.kind, x1: xpos, x2: xpos, y1: mid, y2: e.kind === "alloc" ? mid - len : mid + len });
    const title = svgEl("title");
    const when = toUnix(e.time_ns);
    title.textContent = `${e.kind} ${e.size.toLocaleString()} bytes of ${e.category ?? "?"} at ${hex(e.address)}` +
      `${e.device == null ? "" : ` on chip ${e.device}`}${e.tag ? ` [${e.tag}]` : ""}${when ? `, ${new Date(when).toLocaleTimeString()}` : ""}`;
    line.append(title);
    svg.append(line);
  }
  return svg;
}

function route() {
  const m = /^#\/(chip|process)\/(\d+)$/.exec(location.hash);
  if (m?.[1] === "chip") showChip(Number(m[2])).catch(showError);
  else if (m?.[1] === "process") showProcess(Number(m[2])).catch(showError);
  else {
    show("overview");
    $("#crumb").textContent = "";
  }
}

function connect() {
  const es = new EventSource("/api/v1/stream?peers=true");
  es.addEventListener("peer", onPeerEvent);
  es.addEventListener("open", () => { $("#status").textContent = "live"; });
  es.addEventListener("error", () => { $("#status").textContent = "disconnected; reconnecting…"; });
  es.addEventListener("update", (ev) => {
    const u = JSON.parse(ev.data);
    extendHistory(state.history, u);
    if (applyUpdate(state.devices, u)) {
      loadSnapshot().catch(showError);
      return;
    }
    renderChips();
    // The chip page's charts follow live while they show a window up to now.
    if (state.view.name === "chip" && state.chart.from == null && Date.now() - (state.chart.loaded ?? 0) > 5000) {
      loadChipHistory(state.view.chip).catch(showError);
    }
  });
  es.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    if (a.state === "resolved") state.alerts.delete(fingerprint(a));
    else state.alerts.set(fingerprint(a), a);
    renderAlerts();
  });
}

// Other hosts: the daemon's config names peer daemons. Their figures come through this
// daemon: snapshots under /api/v1/peers/{name}/…, live events as `peer` events of this page's
// one stream (a browser keeps at most six connections to a host, so not a stream per peer).

const peerPath = (peer, endpoint) => `/api/v1/peers/${encodeURIComponent(peer.info.name)}/${endpoint}`;

/** The peer of this name, made on first sight (its events may come before the listing). */
function peerNamed(name) {
  let peer = state.peers.get(name);
  if (!peer) {
    peer = { info: { name, url: "", reachable: false }, up: null, error: null, devices: [], processes: 0,
             history: new Map(), alerts: new Map(), loaded: false, loading: null };
    state.peers.set(name, peer);
  }
  return peer;
}

/** Lists the peers: names, URLs, and what their hosts call themselves. */
async function loadPeers() {
  const { peers } = await getJson("/api/v1/peers");
  $("#hosts").hidden = peers.length === 0;
  if (peers.length) $("#chips-title").textContent = "This host's chips";
  for (const info of peers) {
    const peer = peerNamed(info.name);
    peer.info = info;
    if (peer.up === null && (info.reachable || info.error)) {
      peer.up = info.reachable;
      peer.error = info.error ?? null;
    }
    if (peer.up && !peer.loaded) loadPeer(peer);
  }
  renderPeers();
}

/** Reads a peer's snapshot, alerts and DRAM history, which its events then move on. */
function loadPeer(peer) {
  peer.loading ??= (async () => {
    const snap = await getJson(peerPath(peer, "snapshot?detail=totals"));
    peer.devices = snap.devices;
    peer.processes = snap.processes.filter((p) => p.state !== "exited").length;
    const { active } = await getJson(peerPath(peer, "alerts"));
    peer.alerts = new Map(active.map((a) => [fingerprint(a), a]));
    const from = Math.floor(Date.now() / 1000) - HISTORY_S;
    await Promise.all(peer.devices.map(async (d) => {
      const h = await getJson(peerPath(peer, `history?device=${d.id}&category=DRAM&from=${from}`)).catch(() => null);
      if (!h) return;
      const last = h.points.at(-1)?.[0] ?? 0;
      peer.history.set(d.id, [...h.points, ...(peer.history.get(d.id) ?? []).filter((p) => p[0] > last)]);
    }));
    peer.loaded = true;
  })().catch((e) => { peer.error = e.message; })
    .finally(() => { peer.loading = null; renderPeers(); });
  return peer.loading;
}

/** A `peer` event of the stream: a link up or down, or a peer's own update or alert. */
function onPeerEvent(ev) {
  const e = JSON.parse(ev.data);
  if (e.kind === "resync") {
    for (const p of state.peers.values()) if (p.up) loadPeer(p);
    return;
  }
  const peer = peerNamed(e.peer);
  if (e.kind === "up") {
    Object.assign(peer, { up: true, error: null });
    loadPeer(peer);
    loadPeers().catch(showError); // its host name and version, read as the link came up
  } else if (e.kind === "down") {
    Object.assign(peer, { up: false, error: e.data, loaded: false });
  } else if (e.kind === "update") {
    extendHistory(peer.history, e.data);
    if (!peer.loaded || applyUpdate(peer.devices, e.data)) loadPeer(peer);
  } else if (e.kind === "alert") {
    if (e.data.state === "resolved") peer.alerts.delete(fingerprint(e.data));
    else peer.alerts.set(fingerprint(e.data), e.data);
  }
  renderPeers();
}

function renderPeers() {
  $("#host-list").replaceChildren(...[...state.peers.values()].map((peer) => {
    const { info } = peer;
    const firing = [...peer.alerts.values()].filter((a) => a.state === "firing");
    const status = peer.up === false
      ? el("span", { class: "badge down", title: peer.error ?? "", text: `unreachable: ${peer.error ?? "no answer"}` })
      : el("span", { class: "badge", text: peer.up ? "live" : "connecting…" });
    const alerts = peer.up && firing.length
      ? [el("span", { class: "badge firing", title: firing.map((a) => `${a.rule}: ${a.summary}`).join("\n"),
                      text: `${firing.length} alert${firing.length === 1 ? "" : "s"} firing` })]
      : [];
    const devices = peer.up ? peer.devices : [];
    return el("article", { class: "host", "data-peer": info.name, "aria-label": `host ${info.name}` },
      el("h3", {}, el("a", { href: `${info.url}/`, text: info.hostname || info.name }), " ", status, ...alerts),
      el("p", { class: "meta", text: peer.up
        ? `${info.name} · ${info.url} · v${info.version ?? "?"} · ${devices.length} chip${devices.length === 1 ? "" : "s"}, ${peer.processes} running process${peer.processes === 1 ? "" : "es"}`
        : `${info.name} · ${info.url}` }),
      el("div", { class: "chips" }, ...devices.map((d) => chipCard(d, peer.history.get(d.id) ?? [], info))));
  }));
}

function showError(e) {
  $("#status").textContent = `error: ${e.message}`;
}

async function main() {
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    b.addEventListener("click", () => {
      const key = b.dataset.sort;
      state.sort = { key, up: state.sort.key === key ? !state.sort.up : key !== "bytes" };
      renderProcesses();
    });
  }
  $("#filter").addEventListener("input", renderProcesses);
  $("#fit-form").addEventListener("submit", (ev) => askFit(ev).catch(showError));
  for (const b of document.querySelectorAll("#zoom button")) {
    b.addEventListener("click", () => {
      state.chart = { window: Number(b.dataset.window), from: null, to: null };
      loadChipHistory(state.view.chip).catch(showError);
    });
  }
  for (const b of document.querySelectorAll("th button[data-asort]")) {
    b.addEventListener("click", () => {
      state.page.sort = b.dataset.asort;
      state.page.offset = 0;
      showProcess(state.page.pid).catch(showError);
    });
  }
  $("#prev-page").addEventListener("click", () => {
    state.page.offset = Math.max(0, state.page.offset - state.page.limit);
    showProcess(state.page.pid).catch(showError);
  });
  $("#next-page").addEventListener("click", () => {
    state.page.offset += state.page.limit;
    showProcess(state.page.pid).catch(showError);
  });
  window.addEventListener("hashchange", route);
  const health = await getJson("/api/v1/health");
  $("#host").textContent = `${health.hostname ?? ""} · v${health.version}`;
  document.title = `ttmem · ${health.hostname ?? "host"}`;
  await loadSnapshot();
  route();
  // Live first; the history lines fill in as their answers come.
  connect();
  loadPeers().catch(showError);
  await loadHistory();
}

main().catch(showError);
