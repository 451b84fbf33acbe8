'use strict';
// The overview: every building with its rooms as a grid of cells, coloured
// by the worst open alert beneath each room, or by a telemetry point's
// average in the room (its rollup), on a seven-step scale from the lowest
// to the highest value shown. Rollup events keep it live.
(() => {
  const { $, el, state, fmt, SEVERITIES, later } = TM;
  const STEPS = 7;

  // groups returns [{building, rooms: [...]}] from the entities: rooms (at
  // any depth) under their nearest building or site; a building without
  // rooms stands for itself.
  function groups() {
    const byId = state.entities;
    const top = (e) => {
      for (let p = e.parent; p && byId.has(p); p = byId.get(p).parent) {
        const a = byId.get(p);
        if (a.kind === 'building') return a;
      }
      let root = e;
      while (root.parent && byId.has(root.parent)) root = byId.get(root.parent);
      return root === e ? null : root;
    };
    const out = new Map();
    for (const e of byId.values()) {
      if (e.kind === 'building' && !out.has(e.id)) out.set(e.id, { head: e, cells: [] });
      if (e.kind !== 'room') continue;
      const b = top(e);
      const key = b ? b.id : '';
      if (!out.has(key)) out.set(key, { head: b, cells: [] });
      out.get(key).cells.push(e);
    }
    for (const g of out.values()) {
      if (!g.cells.length && g.head) g.cells.push(g.head);
      g.cells.sort((a, b) => a.id.localeCompare(b.id));
    }
    return [...out.values()].sort((a, b) => ((a.head || {}).id || '').localeCompare((b.head || {}).id || ''));
  }

  // points lists the numeric points that rooms roll up.
  function points() {
    const names = new Set();
    for (const e of state.entities.values()) {
      if (e.kind !== 'room' && e.kind !== 'building') continue;
      for (const [k, v] of Object.entries((state.twins.get(e.id) || {}).rollup || {})) {
        if (v && typeof v === 'object' && 'avg' in v) names.add(k);
      }
    }
    return [...names].sort();
  }

  function syncChoices() {
    const sel = $('#grid-by');
    const want = ['severity', ...points()];
    const have = [...sel.options].map((o) => o.value);
    if (want.join() === have.join()) return;
    const current = sel.value;
    sel.replaceChildren(...want.map((v) => el('option', { value: v, text: v === 'severity' ? 'alert severity' : v + ' (average)' })));
    sel.value = want.includes(current) ? current : 'severity';
  }

  function render() {
    syncChoices();
    const by = $('#grid-by').value;
    const list = groups();
    $('#grid-empty').hidden = list.length > 0;
    let lo = Infinity, hi = -Infinity;
    if (by !== 'severity') {
      for (const g of list) for (const c of g.cells) {
        const v = (((state.twins.get(c.id) || {}).rollup || {})[by] || {}).avg;
        if (typeof v === 'number') { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
    const cell = (e) => {
      const r = (state.twins.get(e.id) || {}).rollup || {};
      let cls, value, label;
      if (by === 'severity') {
        cls = r.alerts > 0 ? 'sev-' + (r.worstSeverity || 'info') : 'sev-none';
        value = r.alerts > 0 ? r.worstSeverity || 'alert' : 'no alerts';
        label = r.alerts > 0 ? `${r.alerts} open alerts, worst ${r.worstSeverity}` : 'no open alerts';
      } else {
        const v = (r[by] || {}).avg;
        if (typeof v === 'number') {
          const step = hi > lo ? Math.min(STEPS - 1, Math.floor(((v - lo) / (hi - lo)) * STEPS)) : Math.floor(STEPS / 2);
          cls = 'step-' + step;
          value = fmt(v);
          label = `${by} average ${fmt(v)}`;
        } else {
          cls = 'no-data';
          value = '—';
          label = `no ${by}`;
        }
      }
      const b = el('button', { class: 'cell ' + cls, 'data-cell': e.id, 'data-class': cls,
        'aria-label': `${e.id}: ${label}, ${r.connected || 0} of ${r.devices || 0} devices connected` },
      el('span', { class: 'cell-name', text: e.id }), el('span', { class: 'cell-value', text: value }),
      by === 'severity' && r.alerts > 0 ? el('span', { class: 'cell-devices', text: r.alerts === 1 ? '1 open alert' : `${r.alerts} open alerts` }) : null,
      el('span', { class: 'cell-devices', text: `${r.connected || 0}/${r.devices || 0} connected` }));
      b.addEventListener('click', () => TM.select(e.id));
      return b;
    };
    $('#grid').replaceChildren(...list.map((g) => el('section', { class: 'building', 'data-building': g.head ? g.head.id : '' },
      el('h3', { text: g.head ? `${g.head.id}` : 'other rooms' }), el('div', { class: 'cells' }, ...g.cells.map(cell)))));
    legend(by, lo, hi);
  }

  function legend(by, lo, hi) {
    const item = (cls, text) => el('span', { class: 'key' }, el('span', { class: 'swatch ' + cls, 'aria-hidden': 'true' }), text);
    if (by === 'severity') {
      $('#grid-legend').replaceChildren(item('sev-none', 'no alerts'), ...SEVERITIES.slice().reverse().map((s) => item('sev-' + s, s)));
      return;
    }
    if (!(hi >= lo)) { $('#grid-legend').replaceChildren(item('no-data', `no ${by} yet`)); return; }
    const keys = [];
    for (let i = 0; i < STEPS; i++) keys.push(el('span', { class: 'swatch step-' + i, 'aria-hidden': 'true' }));
    $('#grid-legend').replaceChildren(el('span', { class: 'key' }, fmt(lo) + ' ', ...keys, ' ' + fmt(hi)), item('no-data', 'no data'));
  }

  $('#grid-by').addEventListener('change', render);
  TM.on('tree-loaded', render);
  TM.on('rollup', () => later('grid', render, 200));
  Object.assign(TM, { renderGrid: render });
})();
