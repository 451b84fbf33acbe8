'use strict';
// The topology tree (a WAI-ARIA tree: arrow keys move, Enter opens) with
// each device's connection state and each building's or room's connected
// count, loaded at sign-in and kept live by WebSocket events; and the
// device search in the header.
(() => {
  const { $, el, state, api, pages, isAggregate, emit, on } = TM;
  const ORDER = { site: 0, building: 1, floor: 2, room: 3, gateway: 4, device: 5 };
  const sorted = (list) => list.slice().sort((a, b) => (ORDER[a.kind] ?? 9) - (ORDER[b.kind] ?? 9) || a.id.localeCompare(b.id));
  const collapsed = new Set();
  let kids = new Map();

  // load reads the entities and the live state of every twin (connection,
  // rollup, telemetry), so that the tree is right before anything is clicked.
  async function load() {
    const [ents, twins] = await Promise.all([
      pages('/entities?limit=1000'),
      pages('/twins?limit=1000', 20).catch(() => []),
    ]);
    state.entities = new Map(ents.map((e) => [e.id, e]));
    for (const t of twins) {
      state.twins.set(t.id, { kind: t.kind, connection: t.connection || null, rollup: t.rollup || {}, telemetry: t.telemetry || {} });
    }
    render();
    emit('tree-loaded');
  }

  const twinOf = (id) => {
    if (!state.twins.has(id)) state.twins.set(id, { kind: (state.entities.get(id) || {}).kind, connection: null, rollup: {}, telemetry: {} });
    return state.twins.get(id);
  };

  // status is what the tree shows beside an entity: a dot for what
  // connects, "connected/devices" for what aggregates.
  function status(e) {
    const t = state.twins.get(e.id) || {};
    if (isAggregate(e.kind, t)) {
      const r = t.rollup || {};
      const n = r.devices || 0, c = r.connected || 0;
      const cls = n === 0 ? 'none' : c === n ? 'all' : c === 0 ? 'nothing' : 'some';
      const kids = [el('span', { class: 'ratio ' + cls, 'data-ratio': e.id, title: `${c} of ${n} devices connected`, text: `${c}/${n}` })];
      if (r.alerts > 0) kids.push(el('span', { class: 'sevdot ' + (r.worstSeverity || ''), title: `${r.alerts} open alerts, worst ${r.worstSeverity || '?'}` }));
      return kids;
    }
    const st = (t.connection && t.connection.state) || 'disconnected';
    return [el('span', { class: 'dot ' + st, 'data-conn': st, title: st }), el('span', { class: 'sr-only', text: st })];
  }

  function render() {
    kids = new Map();
    const via = new Map();
    for (const e of state.entities.values()) {
      if (e.parent && state.entities.has(e.parent)) {
        if (!kids.has(e.parent)) kids.set(e.parent, []);
        kids.get(e.parent).push(e);
      }
      if (e.connectedVia) {
        if (!via.has(e.connectedVia)) via.set(e.connectedVia, []);
        via.get(e.connectedVia).push(e);
      }
    }
    const node = (e, level) => {
      const children = sorted(kids.get(e.id) || []);
      const open = !collapsed.has(e.id);
      const label = el('div', { class: 'item' + (e.id === state.selected ? ' sel' : ''), 'data-entity': e.id },
        children.length ? el('span', { class: 'twisty', 'aria-hidden': 'true', text: open ? '▾' : '▸' }) : el('span', { class: 'twisty' }),
        el('span', { class: 'status', 'data-status': e.id }, ...status(e)), el('span', { class: 'name', text: e.id }),
        el('span', { class: 'k', text: e.kind }));
      const li = el('li', { role: 'treeitem', 'aria-level': level, 'aria-selected': e.id === state.selected ? 'true' : 'false',
        'aria-expanded': children.length ? String(open) : undefined, tabindex: '-1', 'data-item': e.id }, label);
      label.addEventListener('click', (ev) => {
        if (ev.target.classList.contains('twisty') && children.length) { toggle(e.id); return; }
        TM.select(e.id);
      });
      if (children.length) {
        const ul = el('ul', { role: 'group' }, ...children.map((c) => node(c, level + 1)));
        ul.hidden = !open;
        li.append(ul);
      }
      const through = via.get(e.id) || [];
      if (e.kind === 'gateway' && through.length) {
        li.append(el('p', { class: 'via muted', text: 'connected via ' + e.id + ': ' + through.map((d) => d.id).join(', ') }));
      }
      return li;
    };
    // A scoped token's root has a parent it cannot see.
    const roots = sorted([...state.entities.values()].filter((e) => !e.parent || !state.entities.has(e.parent)));
    $('#tree').replaceChildren(...roots.map((e) => node(e, 1)));
    const current = document.querySelector(`#tree [data-item="${CSS.escape(state.selected || '')}"]`) || document.querySelector('#tree [role=treeitem]');
    if (current) current.tabIndex = 0;
  }

  function toggle(id, open) {
    const want = open === undefined ? collapsed.has(id) : open;
    if (want) collapsed.delete(id); else collapsed.add(id);
    render();
    focusItem(id);
  }

  function refreshStatus(id) {
    const e = state.entities.get(id);
    const box = document.querySelector(`[data-status="${CSS.escape(id)}"]`);
    if (e && box) box.replaceChildren(...status(e));
  }

  function setConnection(id, conn) {
    twinOf(id).connection = conn;
    refreshStatus(id);
  }

  function setRollup(id, rollup) {
    twinOf(id).rollup = rollup || {};
    refreshStatus(id);
  }

  function markSelected(id) {
    for (const n of document.querySelectorAll('#tree [data-entity]')) n.classList.toggle('sel', n.dataset.entity === id);
    for (const n of document.querySelectorAll('#tree [role=treeitem]')) {
      n.setAttribute('aria-selected', n.dataset.item === id ? 'true' : 'false');
      n.tabIndex = n.dataset.item === id ? 0 : -1;
    }
  }

  // reveal opens the ancestors of id and brings it into view.
  function reveal(id) {
    let changed = false;
    for (let p = (state.entities.get(id) || {}).parent; p; p = (state.entities.get(p) || {}).parent) {
      if (collapsed.delete(p)) changed = true;
    }
    if (changed) render();
    const item = document.querySelector(`#tree [data-item="${CSS.escape(id)}"]`);
    if (item) item.scrollIntoView({ block: 'nearest' });
  }

  function focusItem(id) {
    const item = document.querySelector(`#tree [data-item="${CSS.escape(id)}"]`);
    if (!item) return;
    for (const n of document.querySelectorAll('#tree [role=treeitem]')) n.tabIndex = -1;
    item.tabIndex = 0;
    item.focus();
  }

  // Keyboard: Up/Down move, Right opens or goes to the first child, Left
  // closes or goes to the parent, Home/End, Enter or Space opens the entity.
  $('#tree').addEventListener('keydown', (ev) => {
    const item = ev.target.closest('[role=treeitem]');
    if (!item) return;
    const visible = [...document.querySelectorAll('#tree [role=treeitem]')].filter((n) => n.offsetParent !== null);
    const i = visible.indexOf(item);
    const id = item.dataset.item;
    const expanded = item.getAttribute('aria-expanded');
    let next = null;
    switch (ev.key) {
      case 'ArrowDown': next = visible[i + 1]; break;
      case 'ArrowUp': next = visible[i - 1]; break;
      case 'Home': next = visible[0]; break;
      case 'End': next = visible[visible.length - 1]; break;
      case 'ArrowRight':
        if (expanded === 'false') { toggle(id, true); ev.preventDefault(); return; }
        if (expanded === 'true') next = item.querySelector('[role=treeitem]');
        break;
      case 'ArrowLeft':
        if (expanded === 'true') { toggle(id, false); ev.preventDefault(); return; }
        next = item.parentElement.closest('[role=treeitem]');
        break;
      case 'Enter': case ' ':
        TM.select(id);
        ev.preventDefault();
        return;
      default: return;
    }
    ev.preventDefault();
    if (next) focusItem(next.dataset.item);
  });

  // ---- device search ----------------------------------------------------------
  const search = $('#search');
  const results = $('#search-results');
  let active = -1;
  function matches(q) {
    q = q.trim().toLowerCase();
    if (!q) return [];
    const hit = (e) => e.id.toLowerCase().includes(q) || e.kind.toLowerCase() === q ||
      Object.entries(e.tags || {}).some(([k, v]) => `${k}=${v}`.toLowerCase().includes(q));
    return sorted([...state.entities.values()].filter(hit)).sort((a, b) => (b.kind === 'device') - (a.kind === 'device')).slice(0, 12);
  }
  function showResults() {
    const list = matches(search.value);
    active = list.length ? 0 : -1;
    results.replaceChildren(...list.map((e, i) => {
      const path = [];
      for (let p = e.parent; p && state.entities.has(p); p = state.entities.get(p).parent) path.unshift(p);
      const li = el('li', { role: 'option', id: 'result-' + i, 'data-result': e.id, 'aria-selected': i === active ? 'true' : 'false' },
        el('span', { class: 'status' }, ...status(e)), el('b', { text: e.id }), el('span', { class: 'k', text: e.kind }),
        el('span', { class: 'muted path', text: path.join(' › ') }));
      li.addEventListener('mousedown', (ev) => { ev.preventDefault(); pick(e.id); });
      return li;
    }));
    if (search.value.trim() && !list.length) results.append(el('li', { class: 'muted', text: 'no match' }));
    results.hidden = !search.value.trim();
    search.setAttribute('aria-expanded', String(!results.hidden));
    search.setAttribute('aria-activedescendant', active >= 0 ? 'result-' + active : '');
  }
  function pick(id) {
    search.value = '';
    results.hidden = true;
    search.setAttribute('aria-expanded', 'false');
    reveal(id);
    TM.select(id);
    focusItem(id);
  }
  search.addEventListener('input', showResults);
  search.addEventListener('blur', () => { results.hidden = true; search.setAttribute('aria-expanded', 'false'); });
  search.addEventListener('keydown', (ev) => {
    const opts = [...results.querySelectorAll('[role=option]')];
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      if (!opts.length) return;
      active = (active + (ev.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length;
      opts.forEach((o, i) => o.setAttribute('aria-selected', i === active ? 'true' : 'false'));
      search.setAttribute('aria-activedescendant', 'result-' + active);
      ev.preventDefault();
    } else if (ev.key === 'Enter') {
      if (active >= 0 && opts[active]) pick(opts[active].dataset.result);
      ev.preventDefault();
    } else if (ev.key === 'Escape') {
      search.value = '';
      showResults();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === '/' && !['INPUT', 'TEXTAREA', 'SELECT'].includes(document.activeElement.tagName) && !$('#search-box').hidden) {
      ev.preventDefault();
      search.focus();
    }
  });

  on('selected', (id) => { markSelected(id); reveal(id); });
  Object.assign(TM, { loadTree: load, renderTree: render, setConnection, setRollup, twinOf });
})();
