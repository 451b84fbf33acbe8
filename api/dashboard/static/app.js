'use strict';
// twinmesh dashboard: REST for state, one WebSocket for live changes.
const $ = (s) => document.querySelector(s);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};

const state = {
  token: sessionStorage.getItem('twinmesh.token') || '',
  entities: new Map(), conn: new Map(), selected: null, twin: null,
  series: new Map(), ws: null, backoff: 500, reqId: 0, pending: new Map(),
  selectedSub: null, timers: {}, self: null,
};

// ---- what the token may do (GET /tokens/self; the server enforces it) ------
const RANK = { viewer: 1, operator: 2, admin: 3 };
const may = (role) => !!state.self && (RANK[state.self.role] || 0) >= RANK[role];
const adminOfAll = () => may('admin') && !state.self.under;

function applyRole() {
  const s = state.self;
  $('#whoami').textContent = s.role + (s.under ? ' · ' + s.under : '') + (s.name ? ' · ' + s.name : '');
  for (const e of document.querySelectorAll('[data-role]')) {
    e.hidden = e.dataset.role === 'admin-whole' ? !adminOfAll() : !may(e.dataset.role);
  }
}

function signOut(message) {
  sessionStorage.removeItem('twinmesh.token');
  if (message) sessionStorage.setItem('twinmesh.message', message);
  location.reload();
}

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + state.token };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch('/api/v1' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (res.status === 401 && state.self) signOut('Your token is no longer valid (revoked or expired).');
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function later(name, fn, ms = 150) { // coalesce bursts of events into one refresh
  clearTimeout(state.timers[name]);
  state.timers[name] = setTimeout(fn, ms);
}

// ---- sign in ---------------------------------------------------------------
$('#signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  state.token = $('#token').value.trim();
  try {
    state.self = await api('GET', '/tokens/self');
    sessionStorage.setItem('twinmesh.token', state.token);
    start();
  } catch (e) {
    $('#signin-error').textContent = e.status === 401 ? 'That token is not valid.' : 'Cannot reach the node: ' + e.message;
  }
});
$('#signout').addEventListener('click', () => signOut());
$('#show-alerts').addEventListener('click', () => { $('#alerts-view').hidden = !$('#alerts-view').hidden; });
$('#show-tokens').addEventListener('click', () => {
  $('#tokens-view').hidden = !$('#tokens-view').hidden;
  if (!$('#tokens-view').hidden) loadTokens();
});

function start() {
  $('#signin-view').hidden = true;
  $('#app').hidden = false;
  $('#nav').hidden = false;
  applyRole();
  loadTree();
  loadAlerts();
  connect();
}

// ---- topology tree -----------------------------------------------------------
async function loadTree() {
  const all = [];
  let cursor = '';
  do {
    const page = await api('GET', '/entities?limit=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    all.push(...page.items);
    cursor = page.next || '';
  } while (cursor);
  state.entities = new Map(all.map((e) => [e.id, e]));
  const kids = new Map();
  const via = new Map();
  for (const e of all) {
    if (e.parent && state.entities.has(e.parent)) {
      if (!kids.has(e.parent)) kids.set(e.parent, []);
      kids.get(e.parent).push(e);
    }
    if (e.connectedVia) {
      if (!via.has(e.connectedVia)) via.set(e.connectedVia, []);
      via.get(e.connectedVia).push(e);
    }
  }
  const order = { site: 0, building: 1, floor: 2, room: 3, gateway: 4, device: 5 };
  const sorted = (list) => list.slice().sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9) || a.id.localeCompare(b.id));
  const node = (e) => {
    const dot = el('span', { class: 'dot ' + (state.conn.get(e.id) || '') });
    const label = el('span', { 'data-entity': e.id, class: e.id === state.selected ? 'sel' : '' }, dot, e.id, el('span', { class: 'k', text: e.kind }));
    label.addEventListener('click', () => select(e.id));
    const li = el('li', {}, label);
    const children = sorted(kids.get(e.id) || []);
    if (children.length) li.append(el('ul', {}, ...children.map(node)));
    const through = via.get(e.id) || [];
    if (e.kind === 'gateway' && through.length) {
      li.append(el('ul', {}, el('li', { class: 'muted', text: 'connected via ' + e.id + ': ' + through.map((d) => d.id).join(', ') })));
    }
    return li;
  };
  // A scoped token's root has a parent it cannot see.
  const roots = sorted(all.filter((e) => !e.parent || !state.entities.has(e.parent)));
  $('#tree').replaceChildren(...roots.map(node));
  if (state.ws && state.ws.readyState === WebSocket.OPEN) subscribeRoots();
}

function setDot(id, st) {
  state.conn.set(id, st);
  const label = document.querySelector(`[data-entity="${CSS.escape(id)}"] .dot`);
  if (label) label.className = 'dot ' + st;
}

// ---- entity page -------------------------------------------------------------
async function select(id) {
  state.selected = id;
  document.querySelectorAll('[data-entity]').forEach((n) => n.classList.toggle('sel', n.dataset.entity === id));
  $('#entity-view').hidden = false;
  state.series = new Map();
  await refreshTwin();
  try {
    const hist = await api('GET', `/twins/${encodeURIComponent(id)}/telemetry?limit=200`);
    for (const rec of hist.items.slice().reverse()) addSample(rec.ts, rec.points || {});
  } catch (_) { /* entities without telemetry */ }
  renderCharts();
  if (state.ws && state.ws.readyState === WebSocket.OPEN) subscribeSelected();
}

async function refreshTwin() {
  if (!state.selected) return;
  try {
    state.twin = await api('GET', '/twins/' + encodeURIComponent(state.selected));
  } catch (e) {
    if (e.status === 404) { $('#entity-view').hidden = true; state.selected = null; }
    return;
  }
  renderTwin();
}

function flatten(obj, prefix = '', out = []) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (k.startsWith('$')) continue;
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, prefix + k + '.', out);
    else out.push([prefix + k, v]);
  }
  return out;
}

const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/\.?0+$/, '')) : JSON.stringify(v));

function kvRows(obj) {
  const rows = flatten(obj).map(([k, v]) => el('tr', {}, el('td', { text: k }), el('td', { class: 'val', text: fmt(v) })));
  return rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', text: 'nothing' }))];
}

function renderTwin() {
  const t = state.twin;
  $('#entity-title').textContent = t.id;
  $('#entity-kind').textContent = t.kind;
  $('#entity-version').textContent = 'version ' + t.version;
  const c = (t.connection && t.connection.state) || 'disconnected';
  $('#connection').textContent = c;
  $('#connection').className = 'badge ' + c;
  setDot(t.id, c);
  $('#desired').replaceChildren(...kvRows(t.desired));
  $('#reported').replaceChildren(...kvRows(t.reported));
  $('#delta').replaceChildren(...kvRows(t.delta));
  renderPoints();
  const r = t.rollup || {};
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
  const rows = Object.keys(pts).sort().map((k) => el('tr', {},
    el('td', { text: k }), el('td', { class: 'val', 'data-point': k, text: fmt(pts[k].value) }),
    el('td', { class: 'muted', text: new Date(pts[k].ts).toLocaleTimeString() })));
  $('#points').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', text: 'no telemetry yet' }))]));
  $('#telemetry-box').hidden = !rows.length && !(state.twin.kind === 'device' || state.twin.kind === 'gateway');
}

function addSample(ts, points) {
  for (const [k, v] of Object.entries(points)) {
    if (typeof v !== 'number') continue;
    if (!state.series.has(k)) state.series.set(k, []);
    const s = state.series.get(k);
    s.push([Date.parse(ts), v]);
    if (s.length > 500) s.shift();
  }
}

function renderCharts() {
  const NS = 'http://www.w3.org/2000/svg';
  const charts = [];
  for (const [name, pts] of [...state.series.entries()].sort()) {
    if (pts.length < 2) continue;
    const W = 300, H = 110, P = 4;
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi === lo) { hi += 1; lo -= 1; }
    const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - 2 * P);
    const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('data-chart', name);
    svg.setAttribute('preserveAspectRatio', 'none');
    const axis = document.createElementNS(NS, 'line');
    for (const [a, v] of [['x1', P], ['y1', H - P], ['x2', W - P], ['y2', H - P], ['class', 'axis']]) axis.setAttribute(a, v);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' '));
    const label = (txt, yy) => { const t = document.createElementNS(NS, 'text'); t.setAttribute('x', P + 2); t.setAttribute('y', yy); t.textContent = txt; return t; };
    svg.append(axis, line, label(fmt(hi), 12), label(fmt(lo), H - 8));
    charts.push(el('div', { class: 'chart' }, el('div', { class: 'muted', text: `${name} — last ${pts.length} values` }), svg));
  }
  $('#charts').replaceChildren(...charts);
}

// ---- forms -------------------------------------------------------------------
$('#patch-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const desired = JSON.parse($('#patch-json').value);
    const t = await api('PATCH', '/twins/' + encodeURIComponent(state.selected), { desired });
    $('#patch-result').textContent = 'applied, version ' + t.version;
    state.twin = t;
    renderTwin();
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

// ---- alerts ------------------------------------------------------------------
async function loadAlerts() {
  const [active, acked] = await Promise.all([api('GET', '/alerts?state=active'), api('GET', '/alerts?state=acknowledged')]);
  const list = [...active.items, ...acked.items];
  $('#alert-count').textContent = String(active.items.length);
  $('#no-alerts').hidden = list.length > 0;
  $('#alerts').replaceChildren(...list.map((a) => {
    const ack = may('operator') ? el('button', { class: 'ack', text: 'Acknowledge' }) : el('span');
    ack.disabled = a.state !== 'active';
    ack.addEventListener('click', async () => {
      if (!may('operator')) return;
      ack.disabled = true;
      try { await api('POST', `/alerts/${encodeURIComponent(a.id)}/ack`); } catch (e) { ack.textContent = e.message; }
      loadAlerts();
    });
    const entity = el('span', { class: 'link', text: a.entity });
    entity.addEventListener('click', () => select(a.entity));
    return el('tr', { 'data-alert': a.id, 'data-state': a.state },
      el('td', { class: 'sev ' + a.severity, text: a.severity }), el('td', {}, entity), el('td', { text: a.ruleId }),
      el('td', { text: a.message || '' }), el('td', { text: String(a.count) }),
      el('td', { text: new Date(a.lastSeen).toLocaleTimeString() }), el('td', { text: a.state }), el('td', {}, ack));
  }));
}

// ---- access tokens (admins of the whole tree) ----------------------------------
async function loadTokens() {
  const list = await api('GET', '/tokens');
  $('#tokens').replaceChildren(...list.items.map((t) => {
    const revoke = el('button', { class: 'ack', text: 'Revoke' });
    revoke.addEventListener('click', async () => {
      revoke.disabled = true;
      try { await api('DELETE', '/tokens/' + encodeURIComponent(t.id)); } catch (e) { revoke.textContent = e.message; }
      loadTokens();
    });
    return el('tr', { 'data-token': t.id }, el('td', { text: t.id }), el('td', { text: t.name || '' }), el('td', { text: t.role }),
      el('td', { text: t.under || '(whole tree)' }), el('td', { text: new Date(t.expires).toLocaleString() }), el('td', {}, revoke));
  }));
}

$('#token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { role: $('#token-role').value, under: $('#token-under').value.trim(), name: $('#token-name').value.trim() };
  if ($('#token-ttl').value.trim()) body.ttl = $('#token-ttl').value.trim();
  try {
    const t = await api('POST', '/tokens', body);
    $('#token-result').textContent = 'New token (shown once): ' + t.token;
    loadTokens();
  } catch (e) { $('#token-result').textContent = 'refused: ' + e.message; }
});

// ---- live updates --------------------------------------------------------------
function send(frame) {
  const id = ++state.reqId;
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    state.ws.send(JSON.stringify({ id, ...frame }));
  });
}

function subscribeRoots() {
  for (const e of state.entities.values()) {
    if (!e.parent || !state.entities.has(e.parent)) send({ op: 'subscribe', entity: e.id, subtree: true, events: ['connection', 'alert', 'topology', 'rollup'] }).catch(() => {});
  }
}

async function subscribeSelected() {
  if (state.selectedSub) { send({ op: 'unsubscribe', sub: state.selectedSub }).catch(() => {}); state.selectedSub = null; }
  if (!state.selected) return;
  try {
    const r = await send({ op: 'subscribe', entity: state.selected, events: ['twin', 'telemetry', 'connection', 'rollup', 'alert'] });
    state.selectedSub = r.sub;
  } catch (_) { /* shown by the badge */ }
}

function onEvent(ev) {
  if (ev.type === 'connection' && ev.data && ev.data.state) setDot(ev.entity, ev.data.state);
  if (ev.type === 'alert') later('alerts', loadAlerts);
  if (ev.type === 'topology') later('tree', loadTree, 300);
  if (ev.entity !== state.selected || ev.sub !== state.selectedSub) return;
  if (ev.type === 'telemetry' && ev.data && ev.data.points && state.twin) {
    for (const [k, v] of Object.entries(ev.data.points)) state.twin.telemetry[k] = { value: v, ts: ev.data.ts };
    renderPoints();
    addSample(ev.data.ts, ev.data.points);
    later('charts', renderCharts, 80);
    return;
  }
  later('twin', refreshTwin, 100);
}

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onopen = () => {
    state.backoff = 500;
    $('#ws-state').textContent = 'live';
    $('#ws-state').className = 'badge on';
    subscribeRoots();
    subscribeSelected();
  };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id !== undefined && state.pending.has(msg.id)) {
      const p = state.pending.get(msg.id);
      state.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg); else p.reject(new Error(msg.error && msg.error.message));
      return;
    }
    if (msg.type) onEvent(msg);
  };
  ws.onclose = (ev) => {
    if (ev.code === 1008) { signOut('Your token was revoked or has expired.'); return; }
    $('#ws-state').textContent = 'reconnecting';
    $('#ws-state').className = 'badge off';
    for (const p of state.pending.values()) p.reject(new Error('connection lost'));
    state.pending.clear();
    state.selectedSub = null;
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 10000);
  };
}

$('#signin-error').textContent = sessionStorage.getItem('twinmesh.message') || '';
sessionStorage.removeItem('twinmesh.message');
if (state.token) {
  api('GET', '/tokens/self').then((self) => { state.self = self; start(); }).catch(() => sessionStorage.removeItem('twinmesh.token'));
}
