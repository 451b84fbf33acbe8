'use strict';
// Sign-in, the views, and the one WebSocket that keeps the page live.
(() => {
  const { $, state, api, may, adminOfAll, signOut, later, on, emit } = TM;
  const VIEWS = ['overview', 'entity', 'alerts', 'tokens', 'jobs'];

  function applyRole() {
    const s = state.self;
    $('#whoami').textContent = s.role + (s.under ? ' · ' + s.under : '') + (s.name ? ' · ' + s.name : '');
    for (const e of document.querySelectorAll('[data-role]')) {
      e.hidden = e.dataset.role === 'admin-whole' ? !adminOfAll() : !may(e.dataset.role);
    }
  }

  // show makes one view visible: overview, entity, alerts, tokens or jobs.
  function show(view) {
    state.view = view;
    for (const v of VIEWS) $('#' + v + '-view').hidden = v !== view;
    for (const [v, b] of [['overview', '#show-overview'], ['alerts', '#show-alerts'], ['tokens', '#show-tokens'], ['jobs', '#show-jobs']]) {
      $(b).setAttribute('aria-pressed', String(v === view));
    }
    if (view !== 'entity' && state.selected) { state.selected = null; emit('selected', null); subscribeSelected(); }
    if (view === 'alerts') TM.loadAlerts();
    if (view === 'tokens') TM.loadTokens();
    if (view === 'jobs') TM.loadJobs();
  }

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
  $('#show-overview').addEventListener('click', () => show('overview'));
  $('#show-alerts').addEventListener('click', () => show(state.view === 'alerts' ? 'overview' : 'alerts'));
  $('#show-tokens').addEventListener('click', () => show(state.view === 'tokens' ? 'overview' : 'tokens'));
  $('#show-jobs').addEventListener('click', () => show(state.view === 'jobs' ? 'overview' : 'jobs'));

  function start() {
    $('#signin-view').hidden = true;
    $('#app').hidden = false;
    $('#nav').hidden = false;
    $('#search-box').hidden = false;
    applyRole();
    show('overview');
    TM.loadTree();
    TM.loadAlerts();
    connect();
  }

  // ---- live updates --------------------------------------------------------------
  function send(frame) {
    const id = ++state.reqId;
    return new Promise((resolve, reject) => {
      if (!state.ws || state.ws.readyState !== WebSocket.OPEN) { reject(new Error('not connected')); return; }
      state.pending.set(id, { resolve, reject });
      state.ws.send(JSON.stringify({ id, ...frame }));
    });
  }

  // subscribeRoots subscribes to the subtree of every root the token sees,
  // replacing the subscriptions of an earlier tree.
  function subscribeRoots() {
    for (const sub of state.rootSubs || []) send({ op: 'unsubscribe', sub }).catch(() => {});
    state.rootSubs = [];
    for (const e of state.entities.values()) {
      if (!e.parent || !state.entities.has(e.parent)) {
        send({ op: 'subscribe', entity: e.id, subtree: true, events: ['connection', 'alert', 'topology', 'rollup'] })
          .then((r) => state.rootSubs.push(r.sub)).catch(() => {});
      }
    }
  }

  async function subscribeSelected() {
    if (state.selectedSub) { send({ op: 'unsubscribe', sub: state.selectedSub }).catch(() => {}); state.selectedSub = null; }
    if (!state.selected) return;
    try {
      const r = await send({ op: 'subscribe', entity: state.selected, events: ['twin', 'telemetry', 'connection', 'rollup', 'alert', 'validation'] });
      state.selectedSub = r.sub;
    } catch (_) { /* shown by the badge */ }
  }

  function onEvent(ev) {
    if (ev.type === 'connection' && ev.data && ev.data.state) TM.setConnection(ev.entity, ev.data);
    if (ev.type === 'rollup' && ev.data) { TM.setRollup(ev.entity, ev.data); emit('rollup', ev.entity); }
    if (ev.type === 'alert') later('alerts', TM.loadAlerts);
    if (ev.type === 'topology') later('tree', TM.loadTree, 300);
    if (ev.type === 'job') { TM.jobEvent(ev.data); return; }
    if (ev.entity !== state.selected || ev.sub !== state.selectedSub) return;
    if (ev.type === 'telemetry') { TM.entityTelemetry(ev); return; }
    if (ev.type === 'validation') { TM.modelValidation(ev); return; }
    later('twin', TM.refreshTwin, 100);
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
      // Every job's progress ("$jobs"), for admins of the whole tree.
      if (adminOfAll()) send({ op: 'subscribe', entity: '$jobs', events: ['job'] }).catch(() => {});
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
      state.rootSubs = [];
      setTimeout(connect, state.backoff);
      state.backoff = Math.min(state.backoff * 2, 10000);
    };
  }

  // A reloaded tree (topology changed) is subscribed again.
  on('tree-loaded', () => { if (state.ws && state.ws.readyState === WebSocket.OPEN) subscribeRoots(); });

  Object.assign(TM, { show, subscribeSelected });
  $('#signin-error').textContent = sessionStorage.getItem('twinmesh.message') || '';
  sessionStorage.removeItem('twinmesh.message');
  if (state.token) {
    api('GET', '/tokens/self').then((self) => { state.self = self; start(); }).catch(() => sessionStorage.removeItem('twinmesh.token'));
  }
})();
