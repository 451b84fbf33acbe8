'use strict';
// Alerts: the list with filters (state, severity, text) and Acknowledge for
// operators, and a timeline of the last 24 hours (one bar per alert, from
// first seen to cleared or now, a tick where it was acknowledged).
(() => {
  const { $, el, svg, state, api, may, sevRank, time, dateTime } = TM;
  let all = [];
  const DAY = 24 * 3600 * 1000;

  async function load() {
    try {
      all = (await api('GET', '/alerts')).items || [];
    } catch (_) { return; }
    $('#alert-count').textContent = String(all.filter((a) => a.state === 'active').length);
    render();
  }

  function filtered() {
    const st = $('#alert-state').value, sev = $('#alert-severity').value, q = $('#alert-text').value.trim().toLowerCase();
    return all.filter((a) => (st === 'all' || (st === 'open' ? a.state === 'active' || a.state === 'acknowledged' : a.state === st)) &&
      (!sev || a.severity === sev) && (!q || a.entity.toLowerCase().includes(q) || a.ruleId.toLowerCase().includes(q)))
      .sort((a, b) => (a.state === 'cleared') - (b.state === 'cleared') || sevRank(b.severity) - sevRank(a.severity) ||
        Date.parse(b.lastSeen) - Date.parse(a.lastSeen));
  }

  function render() {
    const list = filtered();
    $('#no-alerts').hidden = list.length > 0;
    $('#alerts').replaceChildren(...list.map((a) => {
      let ack = el('span');
      if (may('operator')) {
        ack = el('button', { class: 'ack', text: 'Acknowledge', 'aria-label': `Acknowledge ${a.id}` });
        ack.disabled = a.state !== 'active';
        ack.addEventListener('click', async () => {
          ack.disabled = true;
          try { await api('POST', `/alerts/${encodeURIComponent(a.id)}/ack`); } catch (e) { ack.textContent = e.message; }
          load();
        });
      }
      const entity = el('button', { class: 'link inline', text: a.entity, 'aria-label': `Open ${a.entity}` });
      entity.addEventListener('click', () => TM.select(a.entity));
      return el('tr', { 'data-alert': a.id, 'data-state': a.state },
        el('td', {}, el('span', { class: 'sev ' + a.severity, text: a.severity })), el('td', {}, entity), el('td', { text: a.ruleId }),
        el('td', { text: a.message || '' }), el('td', { text: String(a.count) }), el('td', { text: dateTime(a.firstSeen) }),
        el('td', { text: time(a.lastSeen) }), el('td', { text: a.state }), el('td', {}, ack));
    }));
    timeline(list);
  }

  // timeline draws the alerts of list that were open in the last 24 hours.
  function timeline(list) {
    const now = Date.now(), from = now - DAY;
    const rows = list.filter((a) => !a.clearedAt || Date.parse(a.clearedAt) > from).slice(0, 20);
    const W = 1000, L = 170, R = 10, H = 22, top = 6, axis = 22;
    const x = (t) => L + ((Math.max(t, from) - from) / DAY) * (W - L - R);
    const box = svg('svg', { id: 'timeline', viewBox: `0 0 ${W} ${top + rows.length * H + axis}`, role: 'img',
      'aria-label': `Timeline of ${rows.length} alerts over the last 24 hours` });
    for (let h = 0; h <= 24; h += 3) {
      const t = from + h * 3600 * 1000, xx = x(t);
      box.append(svg('line', { x1: xx, x2: xx, y1: top, y2: top + rows.length * H, class: 'grid' }));
      const label = svg('text', { x: xx, y: top + rows.length * H + 15, 'text-anchor': 'middle', class: 'tick' });
      label.textContent = h === 24 ? 'now' : new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      box.append(label);
    }
    rows.forEach((a, i) => {
      const y = top + i * H;
      const name = svg('text', { x: L - 6, y: y + 12, 'text-anchor': 'end', class: 'row' });
      name.textContent = a.id.length > 26 ? '…' + a.id.slice(-25) : a.id;
      const end = a.clearedAt ? Date.parse(a.clearedAt) : now;
      const x0 = x(Date.parse(a.firstSeen)), x1 = Math.max(x(end), x0 + 3);
      const bar = svg('rect', { x: x0, y: y + 3, width: x1 - x0, height: H - 6, rx: 3,
        class: 'bar sev-' + a.severity + (a.state === 'cleared' ? ' cleared' : ''), 'data-bar': a.id });
      const tip = svg('title');
      tip.textContent = `${a.id} (${a.severity}, ${a.state}): ${dateTime(a.firstSeen)} – ${a.clearedAt ? dateTime(a.clearedAt) : 'now'}`;
      bar.append(tip);
      box.append(name, bar);
      if (a.ackedAt) box.append(svg('rect', { x: x(Date.parse(a.ackedAt)) - 1, y: y + 1, width: 2, height: H - 2, class: 'acked' }));
    });
    $('#timeline-box').replaceChildren(box);
    if (!rows.length) $('#timeline-box').append(el('p', { class: 'muted', text: 'No alert was open in the last 24 hours.' }));
  }

  for (const id of ['#alert-state', '#alert-severity']) $(id).addEventListener('change', render);
  $('#alert-text').addEventListener('input', () => TM.later('alert-filter', render, 120));
  Object.assign(TM, { loadAlerts: load });
})();
