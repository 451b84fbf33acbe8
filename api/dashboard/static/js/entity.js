'use strict';
// The entity page: its twin (desired, reported, delta), connection state or
// rollup, telemetry values and charts, and the forms its role may use.
(() => {
  const { $, el, state, api, fmt, time, isAggregate, emit } = TM;

  async function select(id) {
    state.selected = id;
    TM.show('entity');
    emit('selected', id);
    state.twin = null;
    TM.destroyCharts();
    $('#charts').replaceChildren();
    $('#history-note').textContent = '';
    await refresh();
    if (state.selected !== id) return;
    if (state.twin) await TM.renderModel(state.twin); // names and units for the charts
    if (state.selected !== id) return;
    await TM.loadCharts(id);
    TM.subscribeSelected();
  }

  async function refresh() {
    if (!state.selected) return;
    try {
      state.twin = await api('GET', '/twins/' + encodeURIComponent(state.selected));
    } catch (e) {
      if (e.status === 404) { state.selected = null; TM.show('overview'); }
      return;
    }
    render();
  }

  function flatten(obj, prefix = '', out = []) {
    for (const [k, v] of Object.entries(obj || {})) {
      if (k.startsWith('$')) continue;
      if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, prefix + k + '.', out);
      else out.push([prefix + k, v]);
    }
    return out;
  }

  function kvRows(obj) {
    const rows = flatten(obj).map(([k, v]) => el('tr', {}, el('td', { text: k }), el('td', { class: 'val', text: fmt(v) })));
    return rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', text: 'nothing' }))];
  }

  function render() {
    const t = state.twin;
    $('#entity-title').textContent = t.id;
    $('#entity-kind').textContent = t.kind;
    $('#entity-version').textContent = 'version ' + t.version;
    const r = t.rollup || {};
    const badge = $('#connection');
    // The protocol of the device's session (mqtt, coap, coaps).
    const proto = t.connection && t.connection.state === 'connected' && t.connection.protocol;
    $('#connection-protocol').textContent = proto ? 'over ' + proto : '';
    if (isAggregate(t.kind, t)) {
      // Buildings and rooms do not connect: they count what does.
      const n = r.devices || 0, c = r.connected || 0;
      badge.textContent = `${c}/${n} connected`;
      badge.className = 'badge ' + (n === 0 ? 'neutral' : c === n ? 'connected' : c === 0 ? 'neutral' : 'unreachable');
    } else {
      const c = (t.connection && t.connection.state) || 'disconnected';
      badge.textContent = c;
      badge.className = 'badge ' + c;
      TM.setConnection(t.id, t.connection || { state: c });
    }
    TM.setRollup(t.id, r);
    $('#desired').replaceChildren(...kvRows(t.desired));
    $('#reported').replaceChildren(...kvRows(t.reported));
    $('#delta').replaceChildren(...kvRows(t.delta));
    renderPoints();
    TM.renderModel(t);
    $('#rollup-box').hidden = Object.keys(r).length === 0;
    const tiles = [];
    const tile = (big, small) => el('div', { class: 'tile' }, el('b', { text: big }), el('small', { text: small }));
    if ('devices' in r) tiles.push(tile(`${r.connected}/${r.devices}`, 'devices connected'));
    if ('alerts' in r) tiles.push(tile(String(r.alerts), 'open alerts' + (r.worstSeverity ? ', worst ' + r.worstSeverity : '')));
    for (const [k, v] of Object.entries(r)) {
      if (v && typeof v === 'object' && 'avg' in v) tiles.push(tile(fmt(v.avg), `${k} avg (min ${fmt(v.min)}, max ${fmt(v.max)}, n=${v.count})`));
    }
    $('#rollup').replaceChildren(...tiles);
  }

  function renderPoints() {
    const pts = (state.twin && state.twin.telemetry) || {};
    // A modelled device's points show their display names and units.
    const rows = Object.keys(pts).sort().map((k) => {
      const p = TM.modelPoint(k);
      return el('tr', {},
        el('td', { text: p.label, title: p.label !== k ? k : null }), el('td', { class: 'val', 'data-point': k, text: fmt(pts[k].value) }),
        p.unit ? el('td', { class: 'unit', 'data-unit': k, text: p.unit }) : null,
        el('td', { class: 'muted', text: time(pts[k].ts) }));
    });
    $('#points').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', text: 'no telemetry yet' }))]));
    $('#telemetry-box').hidden = !rows.length && isAggregate(state.twin.kind, state.twin);
  }

  // telemetry applies a live telemetry event of the selected entity.
  function telemetry(ev) {
    if (!state.twin || !ev.data || !ev.data.points) return;
    state.twin.telemetry = state.twin.telemetry || {};
    for (const [k, v] of Object.entries(ev.data.points)) state.twin.telemetry[k] = { value: v, ts: ev.data.ts };
    renderPoints();
    TM.liveCharts(ev.data.ts, ev.data.points);
  }

  // ---- forms -------------------------------------------------------------------
  $('#patch-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const desired = JSON.parse($('#patch-json').value);
      const t = await api('PATCH', '/twins/' + encodeURIComponent(state.selected), { desired });
      $('#patch-result').textContent = 'applied, version ' + t.version;
      state.twin = t;
      render();
    } catch (e) { $('#patch-result').textContent = 'refused: ' + e.message; }
  });

  $('#invoke-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('#invoke-result').textContent = 'waiting for the device…';
    try {
      const payload = JSON.parse($('#method-payload').value || 'null');
      const r = await api('POST', `/devices/${encodeURIComponent(state.selected)}/methods/${encodeURIComponent($('#method-name').value)}`,
        { payload, timeoutSeconds: Number($('#method-timeout').value) || 30 });
      $('#invoke-result').textContent = `status ${r.status}: ${JSON.stringify(r.payload)}`;
    } catch (e) { $('#invoke-result').textContent = 'failed: ' + e.message; }
  });

  Object.assign(TM, { select, refreshTwin: refresh, entityTelemetry: telemetry, renderPoints });
})();
