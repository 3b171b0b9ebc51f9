// lockscope dashboard: polls /api/summary and /api/history once a second
// and draws them. No libraries; every string from the server goes into the
// page as text (textContent), never as HTML.
'use strict';

const POLL_MS = 1000;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];

const $ = (id) => document.getElementById(id);

function fmtNs(ns) {
  if (ns === null || ns === undefined) return '-';
  if (ns < 1e3) return ns.toFixed(0) + ' ns';
  if (ns < 1e6) return (ns / 1e3).toPrecision(3) + ' us';
  if (ns < 1e9) return (ns / 1e6).toPrecision(3) + ' ms';
  if (ns < 600e9) return (ns / 1e9).toPrecision(3) + ' s';
  return (ns / 60e9).toPrecision(3) + ' m';
}

function fmtNum(v) {
  if (v === null || v === undefined) return '-';
  if (Math.abs(v) >= 1e9) return (v / 1e9).toPrecision(3) + 'G';
  if (Math.abs(v) >= 1e6) return (v / 1e6).toPrecision(3) + 'M';
  if (Math.abs(v) >= 1e4) return (v / 1e3).toPrecision(3) + 'k';
  if (Number.isInteger(v)) return String(v);
  return v.toPrecision(3);
}

function fmtBytes(b) {
  if (b >= 1 << 30) return (b / (1 << 30)).toFixed(2) + ' GiB';
  if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + ' MiB';
  return (b / 1024).toFixed(0) + ' KiB';
}

// One table row from cells: [text, className?] pairs.
function row(cells, attrs) {
  const tr = document.createElement('tr');
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, String(v));
  return tr;
}

function fill(tableId, rows, emptyText) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
  if (rows.length === 0) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    td.textContent = emptyText;
    td.className = 'empty';
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

// A line chart of several series over time on a canvas.
function drawChart(canvas, t, series, fmt) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 62, right = 10, top = 20, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  const ymax = max > 0 ? niceCeil(max) : 1;
  g.font = '11px system-ui, sans-serif';
  g.strokeStyle = '#e3e5e8';
  g.fillStyle = '#6b7075';
  g.lineWidth = 1;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.fillText(fmt((ymax * i) / 4), left - 6, y);
  }
  const n = t.length;
  if (n < 2) {
    g.textAlign = 'center';
    g.fillText('collecting…', left + pw / 2, top + ph / 2);
    return;
  }
  const t0 = t[0], t1 = t[n - 1], span = Math.max(1, t1 - t0);
  g.textAlign = 'center';
  g.textBaseline = 'top';
  for (let i = 0; i <= 4; i++) {
    const x = left + (pw * i) / 4;
    const ago = Math.round((span * (4 - i)) / 4 / 1000);
    g.fillText(ago === 0 ? 'now' : '-' + ago + ' s', x, top + ph + 5);
  }
  series.forEach((s, k) => {
    g.strokeStyle = COLORS[k % COLORS.length];
    g.lineWidth = 1.6;
    g.beginPath();
    s.values.forEach((v, i) => {
      const x = left + (pw * (t[i] - t0)) / span;
      const y = top + ph - (ph * v) / ymax;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
  // legend
  g.textAlign = 'left';
  g.textBaseline = 'middle';
  let x = left + 4;
  series.forEach((s, k) => {
    g.fillStyle = COLORS[k % COLORS.length];
    g.fillRect(x, 6, 10, 3);
    g.fillStyle = '#1d1f21';
    const label = s.name + ' ' + fmt(s.values[s.values.length - 1] || 0);
    g.fillText(label, x + 14, 8);
    x += g.measureText(label).width + 30;
  });
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const secs = (v) => fmtNs(v * 1e9) + '/s';
const perSec = (v) => fmtNum(v) + '/s';

// Wait totals of each lock at the previous poll, for "wait/s now".
let prevLocks = new Map();
let prevAt = 0;
let updates = 0;

function lockKey(r) {
  return r.source + '|' + r.kind + '|' + r.lock;
}

function render(s, h) {
  $('targets').textContent =
    'tracing ' + s.targets + ' · lockscope ' + s.version + ' · up ' +
    fmtNs(s.uptime_s * 1e9) + ' · ' + s.sources.map((x) =>
      x.name + (x.available ? ' (' + (x.backend || '?') + ')' : ' (unavailable)')).join(', ');

  const names = Object.keys(h.sources);
  const pick = (field) => names.map((n) => ({ name: n, values: h.sources[n][field] }));
  drawChart($('chart-wait'), h.t, pick('wait'), secs);
  drawChart($('chart-waits'), h.t, pick('waits'), perSec);
  const holdSources = s.sources.filter((x) => x.measures_hold).map((x) => x.name);
  drawChart($('chart-hold'), h.t, pick('hold').filter((x) => holdSources.includes(x.name)), secs);
  $('hold-note').textContent = holdSources.length
    ? ''
    : 'No running source measures hold times (kernel-contention sees waits only).';
  drawChart($('chart-lost'), h.t, pick('lost'), perSec);

  const now = s.unix_ms;
  const dt = prevAt ? (now - prevAt) / 1000 : 0;
  const seen = new Map();
  fill('locks', s.top_locks.map((r) => {
    const key = lockKey(r);
    seen.set(key, r.wait_ns.total);
    const before = prevLocks.get(key);
    const rate = dt > 0 && before !== undefined ? (r.wait_ns.total - before) / dt : null;
    return row([
      [r.lock_name || r.lock || '(several)', 'lock'],
      [r.caller || '?'],
      [r.kind || '(mixed)'],
      [r.source],
      [fmtNum(r.count), 'n'],
      [r.acquired == null ? '-' : fmtNum(r.acquired), 'n'],
      [fmtNs(r.wait_ns.total), 'n'],
      [rate === null ? '-' : fmtNs(rate) + '/s', 'n'],
      [fmtNs(r.wait_ns.max), 'n'],
      [fmtNs(r.wait_ns.p99), 'n'],
      [r.hold_ns ? fmtNs(r.hold_ns.total) : '-', 'n'],
    ], {
      'data-lock': r.lock || '',
      'data-caller': r.caller || '',
      'data-waits': r.count,
      'data-acquired': r.acquired == null ? '' : r.acquired,
      'data-wait-ns': r.wait_ns.total,
    });
  }), 'no contended waits yet');
  prevLocks = seen;
  prevAt = now;

  fill('procs', s.top_processes.map((p) => row([
    [String(p.pid), 'n'],
    [p.comm],
    [fmtNum(p.count), 'n'],
    [fmtNs(p.wait_ns.total), 'n'],
    [fmtNs(p.wait_ns.max), 'n'],
    [p.top_lock, 'lock'],
  ], { 'data-pid': p.pid, 'data-wait-ns': p.wait_ns.total })), 'no contended waits yet');

  fill('sources', s.sources.map((x) => {
    const lost = Object.values(x.lost).reduce((a, b) => a + b, 0);
    const tr = row([
      [x.name],
      [x.available ? (x.backend || '?') : 'unavailable: ' + (x.reason || '?')],
      [fmtNum(x.waits), 'n'],
      [x.acquired == null ? '-' : fmtNum(x.acquired), 'n'],
      [fmtNs(x.wait_ns), 'n'],
      [x.measures_hold ? fmtNum(x.holds) : '-', 'n'],
      [x.measures_hold ? fmtNs(x.hold_ns) : '-', 'n'],
      [fmtNum(x.aborted), 'n'],
      [fmtNum(x.failed), 'n'],
      [fmtNum(lost), 'n'],
      [fmtNum(x.bpf_runs), 'n'],
      [x.bpf_run_time_ns ? fmtNs(x.bpf_run_time_ns) : '-', 'n'],
    ], { 'data-source': x.name });
    if (lost > 0) tr.className = 'bad';
    return tr;
  }), 'no sources');

  fill('lost', Object.entries(s.lost).map(([k, v]) => {
    const tr = row([[k], [fmtNum(v), 'n']], { 'data-counter': k });
    if (v > 0) tr.className = 'bad';
    return tr;
  }), 'no loss counters');

  const me = s.self;
  $('self').textContent =
    'lockscope itself: CPU ' + (me.cpu_user_s + me.cpu_system_s).toFixed(2) + ' s (user ' +
    me.cpu_user_s.toFixed(2) + ', system ' + me.cpu_system_s.toFixed(2) + '), memory ' +
    fmtBytes(me.rss_bytes) + ' (peak ' + fmtBytes(me.peak_rss_bytes) + '), ' +
    me.threads + ' threads · ' + s.series + ' lock series of ' + s.max_series +
    ' (folded: ' + s.folded_series + ' label sets, ' + s.folded_processes + ' processes) · ' +
    'map read ' + fmtNs(s.collect_ns) + ', ' + s.collect_errors + ' read errors';
}

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}

async function poll() {
  const st = $('status');
  try {
    const [s, h] = await Promise.all([getJson('/api/summary'), getJson('/api/history')]);
    render(s, h);
    updates += 1;
    st.textContent = 'live · updated ' + new Date(s.unix_ms).toLocaleTimeString();
    st.className = 'status live';
    st.setAttribute('data-updates', String(updates));
  } catch (e) {
    st.textContent = 'no data: ' + e.message;
    st.className = 'status error';
  }
  setTimeout(poll, POLL_MS);
}

poll();
