'use strict';
// Access tokens (admins of the whole tree): list, create (shown once), revoke.
(() => {
  const { $, el, api, dateTime } = TM;

  async function load() {
    const list = await api('GET', '/tokens');
    $('#tokens').replaceChildren(...list.items.map((t) => {
      const revoke = el('button', { class: 'ack', text: 'Revoke', 'aria-label': `Revoke token ${t.name || t.id}` });
      revoke.addEventListener('click', async () => {
        revoke.disabled = true;
        try { await api('DELETE', '/tokens/' + encodeURIComponent(t.id)); } catch (e) { revoke.textContent = e.message; }
        load();
      });
      return el('tr', { 'data-token': t.id }, el('td', { text: t.id }), el('td', { text: t.name || '' }), el('td', { text: t.role }),
        el('td', { text: t.under || '(whole tree)' }), el('td', { text: dateTime(t.expires) }), el('td', {}, revoke));
    }));
  }

  $('#token-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { role: $('#token-role').value, under: $('#token-under').value.trim(), name: $('#token-name').value.trim() };
    if ($('#token-ttl').value.trim()) body.ttl = $('#token-ttl').value.trim();
    try {
      const t = await api('POST', '/tokens', body);
      $('#token-result').textContent = 'New token (shown once): ' + t.token;
      load();
    } catch (e) { $('#token-result').textContent = 'refused: ' + e.message; }
  });

  Object.assign(TM, { loadTokens: load });
})();
