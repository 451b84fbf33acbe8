'use strict';
// Telemetry charts: one uPlot chart per numeric point, with a time axis.
// History comes from the warm store (GET /twins/{id}/telemetry, the range
// picked above the charts, last hour by default); live telemetry events
// are appended, and points older than the range slide out.
//
// uPlot (vendor/uPlot.iife.min.js, MIT, 1.6.32) draws them: 50 KB, no
// dependencies, canvas, fast with ten thousand points, time axes whose
// ticks follow the zoom, and a cursor legend with the value under it.
(() => {
  const { $, el, state, api, fmt } = TM;
  const LIMIT = 10000; // the API's largest page
  const charts = new Map(); // point name → {u, xs, ys}
  let series = new Map(); // point name → [[unix seconds, value]]
  let loadedFor = null;
  const range = () => Number($('#range').value) || 3600;

  // load reads the selected entity's history for the chosen range and draws it.
  async function load(id) {
    loadedFor = id;
    series = new Map();
    const from = new Date(Date.now() - range() * 1000).toISOString();
    let items = [];
    try {
      items = (await api('GET', `/twins/${encodeURIComponent(id)}/telemetry?from=${encodeURIComponent(from)}&limit=${LIMIT}`)).items;
    } catch (_) { /* entities without telemetry */ }
    if (loadedFor !== id) return; // another entity was opened meanwhile
    for (const rec of items.slice().reverse()) add(rec.ts, rec.points || {}, false);
    $('#history-note').textContent = items.length >= LIMIT
      ? `Showing the newest ${LIMIT} messages of the range.`
      : items.length ? `${items.length} messages from the warm store, live updates appended.` : '';
    render();
  }

  function add(ts, points, live) {
    const t = Date.parse(ts) / 1000;
    for (const [k, v] of Object.entries(points)) {
      if (typeof v !== 'number') continue;
      if (!series.has(k)) series.set(k, []);
      series.get(k).push([t, v]);
    }
    if (live) {
      const oldest = Date.now() / 1000 - range();
      for (const s of series.values()) while (s.length && s[0][0] < oldest) s.shift();
    }
  }

  function destroy() {
    for (const c of charts.values()) c.u.destroy();
    charts.clear();
  }

  function options(name, width) {
    const css = getComputedStyle(document.documentElement);
    const ink = css.getPropertyValue('--muted').trim() || '#5b6673';
    const line = css.getPropertyValue('--line').trim() || '#e2e7ec';
    const accent = css.getPropertyValue('--accent').trim() || '#2463eb';
    const axis = { stroke: ink, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 }, font: '11px system-ui, sans-serif' };
    const now = Date.now() / 1000;
    return {
      width, height: 170,
      scales: { x: { time: true, range: (u, lo, hi) => [Math.min(lo, now - range()), Math.max(hi, Date.now() / 1000)] } },
      series: [{ label: 'time', value: (u, v) => (v == null ? '' : new Date(v * 1000).toLocaleString()) },
        { label: name, stroke: accent, width: 2, points: { size: 5 }, value: (u, v) => (v == null ? '' : fmt(v)) }],
      axes: [axis, { ...axis, size: 50 }],
      legend: { live: true },
    };
  }

  function render() {
    destroy();
    const box = $('#charts');
    box.replaceChildren();
    // Every card first, then the charts: a chart takes the width its card
    // has once all cards share the row.
    const holders = [];
    for (const [name, pts] of [...series.entries()].sort()) {
      if (!pts.length) continue;
      // A modelled device's charts carry the point's display name and unit.
      const p = TM.modelPoint(name);
      const caption = p.label + (p.unit ? ` (${p.unit})` : '');
      const holder = el('figure', { class: 'chart', 'data-chart': name, role: 'img',
        'aria-label': `${caption} over the ${$('#range').selectedOptions[0].textContent}` },
      el('figcaption', { text: caption }));
      box.append(holder);
      holders.push([name, pts, holder]);
    }
    for (const [name, pts, holder] of holders) {
      const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
      const u = new uPlot(options(name, Math.max(200, holder.clientWidth - 18)), [xs, ys], holder);
      charts.set(name, { u, xs, ys });
    }
  }

  // live appends a telemetry event of the selected entity.
  function live(ts, points) {
    const before = new Set(series.keys());
    add(ts, points, true);
    const fresh = [...series.keys()].some((k) => !before.has(k));
    if (fresh) { render(); return; }
    for (const [name, c] of charts) {
      const pts = series.get(name) || [];
      c.xs = pts.map((p) => p[0]);
      c.ys = pts.map((p) => p[1]);
      c.u.setData([c.xs, c.ys]);
    }
  }

  function resize() {
    for (const c of charts.values()) {
      const w = c.u.root.parentElement.clientWidth - 18;
      if (w > 0) c.u.setSize({ width: w, height: 170 });
    }
  }
  window.addEventListener('resize', () => TM.later('chart-resize', resize, 100));
  $('#range').addEventListener('change', () => { if (state.selected) load(state.selected); });

  // chartInfo tells tests and tools what a chart holds: its number of
  // points and the time span of its x scale, in seconds.
  const chartInfo = (name) => {
    const c = charts.get(name);
    return c ? { points: c.xs.length, span: c.u.scales.x.max - c.u.scales.x.min, last: c.ys[c.ys.length - 1] } : null;
  };
  Object.assign(TM, { loadCharts: load, liveCharts: live, destroyCharts: destroy, chartInfo });
})();
