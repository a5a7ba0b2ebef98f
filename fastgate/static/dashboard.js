// fastgate dashboard: fills the page from /dashboard/api/summary (every few seconds),
// /dashboard/api/history (every minute) and the /dashboard/events stream (every second).
// Plain browser JavaScript, no build; the only library is the vendored uPlot.
"use strict";

const LIVE_POINTS = 300;      // seconds on the live charts
const TAIL_ROWS = 500;        // rows the live tail keeps
const SUMMARY_EVERY_MS = 5000;
const HISTORY_EVERY_MS = 60000;

const $ = (sel) => document.querySelector(sel);

// --- formatting ---------------------------------------------------------------------

function num(n) { return n === null || n === undefined ? "–" : String(n); }
function ms(v) {
  if (v === null || v === undefined) return "–";
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
function rate(v) { return v >= 100 ? v.toFixed(0) : v.toFixed(1); }
function clock(msEpoch) {
  const d = new Date(msEpoch);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function apiLabel(api, stage) { return api ? `${api}/${stage}` : "gateway"; }

// a table cell with text only (never HTML: paths and routes come from clients)
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function fillRows(tbody, rows, makeRow, emptyText, columns) {
  tbody.replaceChildren();
  for (const r of rows) tbody.appendChild(makeRow(r));
  if (!rows.length && emptyText) {
    const tr = document.createElement("tr");
    const td = cell(tr, emptyText, "muted");
    td.colSpan = columns;
    tbody.appendChild(tr);
  }
}

// --- tiles --------------------------------------------------------------------------

function setTile(id, value, sub) {
  const el = document.getElementById(id);
  el.querySelector(".value").textContent = value;
  if (sub !== undefined) el.querySelector(".sub").textContent = sub;
}

function renderTiles(t) {
  setTile("tile-requests", num(t.requests), `2xx ${t.s2xx} · 3xx ${t.s3xx}`);
  setTile("tile-rps", rate(t.rps));
  setTile("tile-errors", `${t.error_pct}%`, `4xx ${t.s4xx} · 5xx ${t.s5xx}`);
  setTile("tile-p50", ms(t.p50_ms));
  setTile("tile-p95", ms(t.p95_ms));
  setTile("tile-p99", ms(t.p99_ms));
  setTile("tile-integration", ms(t.integration_p50_ms),
          `p95 ${ms(t.integration_p95_ms)} · ${t.integration_requests} calls`);
  // stage caches: hits (local or from Redis) over lookups, every cached stage, since start
  setTile("tile-cache", t.cache_hit_ratio === null ? "n/a" : `${(100 * t.cache_hit_ratio).toFixed(1)}%`,
          t.cache_hit_ratio === null ? "no cache lookups yet" :
          `${t.cache_hits} ${t.cache_hits === 1 ? "hit" : "hits"} · ${t.cache_misses} ${t.cache_misses === 1 ? "miss" : "misses"}`);
  setTile("tile-throttled", num(t.throttled));
  $("#uptime").textContent = `admin up ${Math.floor(t.uptime_s / 60)} min · ${t.open_connections} open connections`;
}

// --- charts -------------------------------------------------------------------------

function makeChart(el, series, opts) {
  const width = Math.max(el.clientWidth, 300);
  const data = [[]].concat(series.map(() => []));
  return new uPlot(Object.assign({
    width, height: 180,
    scales: { x: { time: true } },
    series: [{}].concat(series),
    axes: [{}, { size: 50 }],
    legend: { live: true },
  }, opts || {}), data, el);
}

// span: the seconds a point covers (1; an average over a minute from before the page opened)
const live = { t: [], rps: [], p50: [], p95: [], p99: [], ip50: [], e4: [], e5: [], thr: [], span: [] };
let charts = {};
let lastEnd = null; // where the last point's period ends, epoch s

function addPoint(p) {
  if (!p) return;
  if (live.t.length && p.t <= live.t[live.t.length - 1]) return;   // a backlog overlapping what we have
  // a point covers the second before it, or span_s seconds around it (an average)
  const span = p.span_s || 1;
  const start = span > 1 ? p.t - span / 2 : p.t - 1;
  if (lastEnd !== null && start - lastEnd > 2 && lastEnd + 1 < p.t) {
    // nothing was kept for that time (the gateway was down, or no page and no minute closed):
    // a gap, not a line across it
    live.t.push(lastEnd + 1);
    for (const k in live) if (k !== "t") live[k].push(null);
  }
  lastEnd = span > 1 ? p.t + span / 2 : p.t;
  live.t.push(p.t); live.rps.push(p.rps); live.span.push(span);
  live.p50.push(p.p50_ms); live.p95.push(p.p95_ms); live.p99.push(p.p99_ms); live.ip50.push(p.integration_p50_ms);
  live.e4.push(p.s4xx); live.e5.push(p.s5xx); live.thr.push(p.throttled);
  while (live.t.length > LIVE_POINTS) for (const k in live) live[k].shift();
}

function drawLive() {
  charts.rps.setData([live.t, live.rps]);
  charts.latency.setData([live.t, live.p50, live.p95, live.p99, live.ip50]);
  charts.errors.setData([live.t, live.e4, live.e5, live.thr]);
  for (const name of ["rps", "latency", "errors"]) {
    document.getElementById("chart-" + name).dataset.points = String(live.t.length);
  }
  $("#live-note").textContent = live.span.some((s) => s > 1) ?
    "before this page opened: one point a minute (averages per second, from the history); then one a second" : "";
}

function drawHistory(doc) {
  const pts = doc.points;
  const t = pts.map((p) => p.t);
  charts.history.setData([t, pts.map((p) => p.requests), pts.map((p) => p.s4xx + p.s5xx),
                          pts.map((p) => p.p95_ms)]);
  $("#chart-history").dataset.points = String(pts.length);
  $("#history-note").textContent = pts.length ? "" :
    "no minute recorded yet: a point is added at the end of each minute that had requests";
}

// --- tables -------------------------------------------------------------------------

const openGroups = new Set();   // API/stage groups whose routes are shown, across refreshes

function renderApis(apis) {
  const tbody = $("#apis tbody");
  tbody.replaceChildren();
  for (const g of apis) {
    const key = apiLabel(g.api, g.stage);
    const tr = document.createElement("tr");
    tr.className = "group" + (openGroups.has(key) ? " open" : "");
    tr.dataset.group = key;
    cell(tr, g.api ? `${g.name || g.api} (${g.api})` : "gateway routes");
    cell(tr, g.stage || "–");
    figureCells(tr, g);
    tr.addEventListener("click", () => {
      const open = !openGroups.has(key);
      if (open) openGroups.add(key); else openGroups.delete(key);
      tr.classList.toggle("open", open);
      for (const r of tbody.querySelectorAll("tr.route")) if (r.dataset.group === key) r.hidden = !open;
    });
    tbody.appendChild(tr);
    for (const r of g.routes) {
      const rt = document.createElement("tr");
      rt.className = "route";
      rt.dataset.group = key;
      rt.dataset.route = r.route;
      rt.hidden = !openGroups.has(key);
      cell(rt, r.route || "(no route)");
      cell(rt, "");
      figureCells(rt, r);
      tbody.appendChild(rt);
    }
  }
}

function figureCells(tr, f) {
  cell(tr, num(f.requests), "num requests");
  cell(tr, num(f.s4xx), "num s4");
  cell(tr, num(f.s5xx), "num s5");
  cell(tr, `${f.error_pct}`, "num");
  cell(tr, ms(f.p50_ms), "num");
  cell(tr, ms(f.p95_ms), "num");
  cell(tr, ms(f.p99_ms), "num");
  cell(tr, ms(f.integration_p50_ms), "num");
}

function renderSummary(s) {
  renderTiles(s.tiles);
  renderApis(s.apis);
  fillRows($("#top-routes tbody"), s.top_routes, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.route = r.route;
    cell(tr, r.route || "(no route)"); cell(tr, apiLabel(r.api, r.stage));
    cell(tr, num(r.requests), "num requests"); cell(tr, `${r.error_pct}`, "num");
    return tr;
  }, "no requests yet", 4);
  fillRows($("#slowest-routes tbody"), s.slowest_routes, (r) => {
    const tr = document.createElement("tr");
    cell(tr, r.route || "(no route)"); cell(tr, apiLabel(r.api, r.stage));
    cell(tr, ms(r.p95_ms), "num"); cell(tr, num(r.requests), "num");
    return tr;
  }, "no requests yet", 4);
  const b = s.breakdown;
  fillRows($("#by-class tbody"), Object.entries(b.by_class), ([c, n]) => {
    const tr = document.createElement("tr");
    tr.dataset.class = c;
    cell(tr, c); cell(tr, num(n), "num requests");
    return tr;
  });
  fillRows($("#by-type tbody"), b.by_type, (r) => {
    const tr = document.createElement("tr");
    tr.dataset.type = r.type;
    cell(tr, r.type); cell(tr, num(r.status), "num"); cell(tr, r.kind); cell(tr, num(r.requests), "num requests");
    return tr;
  }, "no gateway responses", 4);
  $("#by-type-note").textContent = s.tail_available ?
    `counted from the request tail since ${new Date(b.since_s * 1000).toLocaleString()}` +
    (b.by_type_exact ? "" : " (some entries were lost: a lower bound)") :
    "the request tail is not available in this gateway";
  fillRows($("#upstreams tbody"), s.upstreams, (u) => {
    const tr = document.createElement("tr");
    cell(tr, u.upstream); cell(tr, u.target);
    if (u.healthy === null) cell(tr, "not checked", "muted");
    else cell(tr, u.healthy ? "healthy" : "unhealthy", u.healthy ? "ok" : "bad");
    cell(tr, num(u.connections), "num");
    return tr;
  }, "no upstreams configured", 4);
  fillRows($("#websockets tbody"), s.websockets, (w) => {
    const tr = document.createElement("tr");
    cell(tr, apiLabel(w.api, w.stage)); cell(tr, num(w.connections), "num");
    cell(tr, num(w.connects), "num"); cell(tr, num(w.messages_in), "num");
    cell(tr, w.in_per_s === null ? "–" : rate(w.in_per_s), "num");
    cell(tr, num(w.messages_out), "num");
    cell(tr, w.out_per_s === null ? "–" : rate(w.out_per_s), "num");
    cell(tr, num(w.errors), w.errors ? "num bad" : "num");
    return tr;
  }, "no WebSocket APIs", 8);
  fillRows($("#stages tbody"), s.stages, (st) => {
    const tr = document.createElement("tr");
    cell(tr, st.name ? `${st.name} (${st.api})` : st.api); cell(tr, st.stage);
    cell(tr, st.deployment || "–"); cell(tr, st.deployed ? new Date(st.deployed * 1000).toLocaleString() : "–");
    cell(tr, st.canary ? `${st.canary.percent}% → ${st.canary.deployment}` : "–");
    return tr;
  }, "no API stages deployed (the control API creates them)", 5);
  const k = s.keys;
  fillRows($("#keys tbody"), k.keys, (r) => {
    const tr = document.createElement("tr");
    cell(tr, r.id); cell(tr, r.name); cell(tr, r.plan || "–");
    // usage against quota: "used / limit per period (pct)"; over 90% is flagged
    const quota = r.quota_limit ? `${r.used} / ${r.quota_limit} per ${r.quota_period.toLowerCase()} (${r.used_pct}%)`
                                : `${num(r.used)} (no quota)`;
    cell(tr, quota, r.used_pct !== null && r.used_pct >= 90 ? "num bad" : "num");
    cell(tr, num(r.remaining), "num");
    cell(tr, num(r.requests), "num"); cell(tr, num(r.throttled), "num");
    cell(tr, num(r.s4xx), "num"); cell(tr, num(r.s5xx), "num");
    return tr;
  }, "no keys", 9);
  $("#keys-note").textContent = k.note;
}

// --- live tail ----------------------------------------------------------------------

function statusMatches(filter, status) {
  // "404", "5xx", "4" and comma lists: "404, 5xx"
  return filter.split(",").map((f) => f.trim().toLowerCase()).filter(Boolean).some((f) => {
    if (/^[1-5]xx$/.test(f)) return String(status)[0] === f[0];
    return String(status).startsWith(f);
  });
}

function tailVisible(e) {
  const route = $("#filter-route").value.trim();
  const status = $("#filter-status").value.trim();
  const key = $("#filter-key").value.trim();
  if (route && !e.route.includes(route) && !e.path.includes(route)) return false;
  if (status && !statusMatches(status, e.status)) return false;
  if (key && !e.key_id.includes(key)) return false;
  return true;
}

const tailEntries = new Map();   // <tr> -> entry, for refiltering
let tailSeq = -1;                // highest seq shown: the summary's tail and the stream overlap

function addTail(entries) {
  const tbody = $("#tail tbody");
  for (const e of entries) {
    if (e.seq <= tailSeq) continue;
    tailSeq = e.seq;
    const tr = document.createElement("tr");
    tr.dataset.requestId = e.request_id;
    tr.dataset.status = String(e.status);
    cell(tr, clock(e.time_ms)); cell(tr, e.method); cell(tr, e.path); cell(tr, e.route || "–");
    cell(tr, String(e.status), e.status >= 500 ? "s5" : e.status >= 400 ? "s4" : "");
    cell(tr, e.error_type || ""); cell(tr, ms(e.latency_us / 1000), "num"); cell(tr, String(e.bytes_out), "num");
    cell(tr, e.key_id); cell(tr, e.source_ip); cell(tr, e.request_id);
    tr.hidden = !tailVisible(e);
    tailEntries.set(tr, e);
    tbody.insertBefore(tr, tbody.firstChild);
  }
  while (tbody.rows.length > TAIL_ROWS) {
    const last = tbody.lastElementChild;
    tailEntries.delete(last);
    last.remove();
  }
  $("#tail-count").textContent = `(${tbody.rows.length} most recent, newest first)`;
}

function refilterTail() {
  for (const [tr, e] of tailEntries) tr.hidden = !tailVisible(e);
}

// --- wiring -------------------------------------------------------------------------

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

async function refreshSummary() {
  try {
    const s = await getJSON("/dashboard/api/summary");
    renderSummary(s);
    addTail(s.tail);
    if (!s.tail_available) $("#tail-note").textContent = "no request tail in this gateway";
    for (const p of s.points) addPoint(p);
    drawLive();
  } catch (err) {
    console.warn("summary refresh failed", err);   // the next refresh tries again
  }
}

async function refreshHistory() {
  try { drawHistory(await getJSON("/dashboard/api/history")); }
  catch (err) { console.warn("history refresh failed", err); }
}

function connect() {
  const es = new EventSource("/dashboard/events");
  const conn = $("#conn");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn on"; });
  es.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; });
  es.addEventListener("hello", (ev) => {
    for (const p of JSON.parse(ev.data).points) addPoint(p);
    drawLive();
  });
  es.addEventListener("tick", (ev) => {
    const d = JSON.parse(ev.data);
    addPoint(d.point);
    drawLive();
    renderTiles(d.tiles);
    addTail(d.tail);
    if (d.tail_lost) $("#tail-note").textContent = `${d.tail_lost} entries went by too fast to show`;
  });
}

function start() {
  const stroke = (c) => ({ stroke: c, width: 1.5, spanGaps: false });
  charts.rps = makeChart($("#chart-rps"), [Object.assign({ label: "req/s" }, stroke("#2563eb"))]);
  charts.latency = makeChart($("#chart-latency"), [
    Object.assign({ label: "p50" }, stroke("#16a34a")), Object.assign({ label: "p95" }, stroke("#d97706")),
    Object.assign({ label: "p99" }, stroke("#dc2626")), Object.assign({ label: "integration p50" }, stroke("#7c3aed"))]);
  charts.errors = makeChart($("#chart-errors"), [
    Object.assign({ label: "4xx" }, stroke("#d97706")), Object.assign({ label: "5xx" }, stroke("#dc2626")),
    Object.assign({ label: "throttled" }, stroke("#7c3aed"))]);
  charts.history = makeChart($("#chart-history"), [
    Object.assign({ label: "requests/min" }, stroke("#2563eb")),
    Object.assign({ label: "errors/min" }, stroke("#dc2626")),
    Object.assign({ label: "p95 ms", scale: "ms" }, stroke("#d97706"))],
    { axes: [{}, { size: 50 }, { side: 1, scale: "ms", grid: { show: false } }] });
  for (const id of ["filter-route", "filter-status", "filter-key"]) {
    document.getElementById(id).addEventListener("input", refilterTail);
  }
  refreshSummary().then(connect);
  refreshHistory();
  setInterval(refreshSummary, SUMMARY_EVERY_MS);
  setInterval(refreshHistory, HISTORY_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
