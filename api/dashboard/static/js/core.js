'use strict';
// twinmesh dashboard: shared state and helpers. The page is plain scripts
// (no build step, nothing fetched from elsewhere): REST for state, one
// WebSocket for live changes. Each script adds its part to window.TM.
window.TM = (() => {
  const $ = (s) => document.querySelector(s);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v === true ? '' : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  };
  const NS = 'http://www.w3.org/2000/svg';
  const svg = (tag, attrs = {}) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  };

  const state = {
    token: sessionStorage.getItem('twinmesh.token') || '',
    self: null,
    entities: new Map(), // id → entity {id, kind, parent, connectedVia, tags}
    twins: new Map(), // id → live state {kind, connection, rollup, telemetry}
    selected: null,
    view: 'overview',
    ws: null, backoff: 500, reqId: 0, pending: new Map(), selectedSub: null,
    timers: {},
  };

  // ---- what the token may do (GET /tokens/self; the server enforces it) ----
  const RANK = { viewer: 1, operator: 2, admin: 3 };
  const may = (role) => !!state.self && (RANK[state.self.role] || 0) >= RANK[role];
  const adminOfAll = () => may('admin') && !state.self.under;

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

  // pages reads every page of a list ({"items":[…],"next":"cursor"}), at
  // most max pages.
  async function pages(path, max = 50) {
    const all = [];
    let cursor = '';
    const sep = path.includes('?') ? '&' : '?';
    for (let i = 0; i < max; i++) {
      const page = await api('GET', path + (cursor ? sep + 'cursor=' + encodeURIComponent(cursor) : ''));
      all.push(...page.items);
      cursor = page.next || '';
      if (!cursor) break;
    }
    return all;
  }

  function later(name, fn, ms = 150) { // coalesce bursts of events into one refresh
    clearTimeout(state.timers[name]);
    state.timers[name] = setTimeout(fn, ms);
  }

  const fmt = (v) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2).replace(/\.?0+$/, '')) : JSON.stringify(v));
  const time = (ts) => (ts ? new Date(ts).toLocaleTimeString() : '');
  const dateTime = (ts) => (ts ? new Date(ts).toLocaleString() : '');

  // Severities, worst first (as the rules engine ranks them).
  const SEVERITIES = ['critical', 'major', 'minor', 'warning', 'info'];
  const sevRank = (s) => { const i = SEVERITIES.indexOf(s); return i < 0 ? 0 : SEVERITIES.length - i; };

  // Kinds that aggregate what lies beneath them (a rollup) rather than
  // connect: their state is counts, never "disconnected".
  const isAggregate = (kind, twin) => ['site', 'building', 'floor', 'room'].includes(kind) ||
    (!!twin && !!twin.rollup && 'devices' in twin.rollup && kind !== 'device' && kind !== 'gateway');
  const isDeviceLike = (kind) => kind === 'device' || kind === 'gateway' || !isAggregate(kind);

  // A tiny event bus between the parts of the page.
  const bus = new EventTarget();
  const on = (name, fn) => bus.addEventListener(name, (e) => fn(e.detail));
  const emit = (name, detail) => bus.dispatchEvent(new CustomEvent(name, { detail }));

  return { $, el, svg, state, may, adminOfAll, signOut, api, pages, later, fmt, time, dateTime, SEVERITIES, sevRank,
    isAggregate, isDeviceLike, on, emit };
})();
