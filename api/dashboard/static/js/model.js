'use strict';
// The device model (DTDL, CONTRACT section 12) on the entity page: display
// names and units for telemetry, the properties with typed inputs for the
// writable ones (number, enum as a select, boolean as a switch), the
// commands as buttons with a request form, and the last refusal the model
// caused (validation events). The server validates everything again: the
// inputs only make the right thing easy to type.
(() => {
  const { $, el, state, api, fmt, may } = TM;
  const models = new Map(); // DTMI → resolved model (GET /models/{id}?view=resolved), or null

  // Common DTDL units as people write them; other units show their name.
  const UNITS = { degreeCelsius: '°C', degreeFahrenheit: '°F', kelvin: 'K', percent: '%', watt: 'W', kilowatt: 'kW',
    kilowattHour: 'kWh', volt: 'V', ampere: 'A', pascal: 'Pa', hectopascal: 'hPa', kilopascal: 'kPa', bar: 'bar',
    metre: 'm', centimetre: 'cm', millimetre: 'mm', kilometre: 'km', second: 's', millisecond: 'ms', minute: 'min',
    hour: 'h', day: 'd', hertz: 'Hz', lux: 'lx', decibel: 'dB', litre: 'L', gram: 'g', kilogram: 'kg',
    metrePerSecond: 'm/s', kilometrePerHour: 'km/h', partsPerMillion: 'ppm', byte: 'B', kilobyte: 'kB', megabyte: 'MB' };
  const unitText = (u) => (u ? UNITS[u] || u : '');
  const label = (x) => x.displayName || x.name;
  const INTEGER = ['integer', 'long', 'short', 'byte', 'unsignedByte', 'unsignedShort', 'unsignedInteger', 'unsignedLong'];
  const DECIMAL = ['double', 'float', 'decimal'];
  const HINT = { date: '2024-01-31', dateTime: '2024-01-31T08:00:00Z', time: '08:00:00', duration: 'PT5M', uuid: 'uuid' };

  async function modelOf(id) {
    if (!id) return null;
    if (!models.has(id)) {
      try { models.set(id, await api('GET', '/models/' + encodeURIComponent(id) + '?view=resolved')); } catch (_) { models.set(id, null); }
    }
    return models.get(id);
  }

  // current returns the model of the selected twin, if loaded.
  const current = () => (state.twin && state.twin.modelId && models.get(state.twin.modelId)) || null;

  // point describes a telemetry point for the telemetry table.
  function point(name) {
    const m = current();
    const t = m && m.telemetry.find((x) => x.name === name);
    return t ? { label: label(t), unit: unitText(t.unit) } : { label: name, unit: '' };
  }

  // input builds the typed control for a schema; read gets its value back.
  function input(schema, id, value, labelText) {
    let e;
    if (schema.kind === 'boolean') {
      e = el('input', { id, type: 'checkbox', role: 'switch', class: 'switch', 'aria-label': labelText });
      e.checked = value === true;
    } else if (schema.kind === 'Enum') {
      e = el('select', { id, 'aria-label': labelText }, ...schema.enumValues.map((v) =>
        el('option', { value: JSON.stringify(v.enumValue), text: label(v), selected: v.enumValue === value })));
    } else if (INTEGER.includes(schema.kind) || DECIMAL.includes(schema.kind)) {
      e = el('input', { id, type: 'number', step: INTEGER.includes(schema.kind) ? '1' : 'any', 'aria-label': labelText });
      if (typeof value === 'number') e.value = String(value);
    } else if (schema.kind in HINT || schema.kind === 'string') {
      e = el('input', { id, type: 'text', placeholder: HINT[schema.kind] || '', 'aria-label': labelText });
      if (typeof value === 'string') e.value = value;
    } else {
      e = el('textarea', { id, rows: '2', placeholder: 'JSON', 'aria-label': labelText });
      if (value !== undefined) e.value = JSON.stringify(value);
    }
    e.dataset.kind = schema.kind;
    return e;
  }

  function read(schema, e) {
    if (schema.kind === 'boolean') return e.checked;
    if (schema.kind === 'Enum') return JSON.parse(e.value);
    if (e.type === 'number') return e.value === '' ? null : Number(e.value);
    if (e.tagName === 'TEXTAREA') return e.value.trim() === '' ? null : JSON.parse(e.value);
    return e.value;
  }

  // reportedValue unwraps an IoT Plug and Play acknowledgement.
  const reportedValue = (v) => (v && typeof v === 'object' && 'ac' in v && 'value' in v ? v.value : v);

  function renderProperties(m, t) {
    const rows = m.properties.map((p) => {
      const rep = reportedValue((t.reported || {})[p.name]);
      const des = (t.desired || {})[p.name];
      const unit = unitText(p.unit);
      const cells = [el('td', { text: label(p) }),
        el('td', { class: 'val', 'data-prop': p.name, text: rep === undefined ? '—' : fmt(rep) + (unit ? ' ' + unit : '') })];
      if (p.writable && may('operator')) {
        const id = 'prop-' + p.name;
        const ctl = input(p.schema, id, des !== undefined ? des : rep, 'New ' + label(p));
        const set = el('button', { type: 'button', 'data-set': p.name, text: 'Set' });
        set.addEventListener('click', async () => {
          const out = $('#model-result');
          try {
            const v = read(p.schema, ctl);
            const nt = await api('PATCH', '/twins/' + encodeURIComponent(state.selected), { desired: { [p.name]: v } });
            out.textContent = `${label(p)} set to ${fmt(v)}, version ${nt.version}`;
            TM.refreshTwin();
          } catch (e) { out.textContent = 'refused: ' + e.message; }
        });
        cells.push(el('td', { class: 'ctl' }, ctl, unit ? el('span', { class: 'unit', text: unit }) : null, set));
      } else {
        cells.push(el('td', { class: 'muted', text: p.writable ? 'writable' : 'read-only' }));
      }
      return el('tr', {}, ...cells);
    });
    $('#model-props').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { class: 'muted', text: 'no properties' }))]));
  }

  function renderCommands(m) {
    const box = $('#model-commands');
    if (!may('operator') || !m.commands.length) { box.replaceChildren(); box.hidden = true; return; }
    box.hidden = false;
    const open = $('#command-form');
    box.replaceChildren(el('h3', { text: 'Commands' }), ...m.commands.map((c) => {
      const b = el('button', { type: 'button', class: 'command', 'data-command': c.name, text: label(c) });
      b.addEventListener('click', () => showCommand(c));
      return b;
    }), open || el('form', { id: 'command-form', hidden: true }));
  }

  function showCommand(c) {
    const f = $('#command-form');
    const req = c.request;
    const ctl = req ? input(req.schema, 'command-request', undefined, label(req)) : null;
    const status = el('p', { id: 'command-result', class: 'muted', role: 'status' });
    f.replaceChildren(el('h4', { text: label(c) + (c.description ? ' — ' + c.description : '') }),
      req ? el('label', { for: 'command-request', text: label(req) + (req.unit ? ` (${unitText(req.unit)})` : '') + (req.nullable ? ', optional' : '') }) : el('p', { class: 'muted', text: 'no request' }),
      ctl, el('button', { type: 'submit', id: 'command-send', text: 'Send' }), status);
    f.hidden = false;
    f.onsubmit = async (ev) => {
      ev.preventDefault();
      status.textContent = 'waiting for the device…';
      try {
        const payload = ctl ? read(req.schema, ctl) : null;
        const r = await api('POST', `/devices/${encodeURIComponent(state.selected)}/methods/${encodeURIComponent(c.name)}`, { payload });
        status.textContent = `status ${r.status}: ${JSON.stringify(r.payload)}`;
      } catch (e) { status.textContent = 'refused: ' + e.message; }
    };
  }

  // render shows the model section of the selected twin, or hides it.
  async function render(t) {
    const box = $('#model-box');
    if (!t.modelId) { box.hidden = true; return; }
    const m = await modelOf(t.modelId);
    if (state.twin !== t) return; // another twin was rendered meanwhile
    box.hidden = false;
    $('#model-name').textContent = m ? label({ displayName: m.displayName, name: m.id }) : 'model not registered';
    $('#model-id').textContent = t.modelId;
    if (!m) { $('#model-props').replaceChildren(); $('#model-commands').hidden = true; return; }
    renderProperties(m, t);
    if (!$('#model-commands').childElementCount || $('#model-commands').dataset.model !== m.id) {
      renderCommands(m);
      $('#model-commands').dataset.model = m.id;
    }
    TM.renderPoints();
  }

  // validation shows a refusal the device's model caused.
  function validation(ev) {
    const d = ev.data || {};
    const note = $('#validation-note');
    note.textContent = `refused ${d.kind} at ${new Date(ev.ts).toLocaleTimeString()}: ${d.reason}`;
    note.hidden = false;
  }

  TM.on('selected', () => {
    $('#validation-note').hidden = true;
    $('#model-commands').replaceChildren();
    $('#model-commands').dataset.model = '';
  });
  Object.assign(TM, { renderModel: render, modelPoint: point, modelValidation: validation });
})();
