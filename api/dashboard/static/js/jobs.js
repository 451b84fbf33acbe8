'use strict';
// Fleet jobs (admins of the whole tree): their status and progress, kept
// live by the "job" events of the "$jobs" subscription, and cancel.
(() => {
  const { $, el, api, dateTime, state } = TM;
  const jobs = new Map(); // jobId → job document

  function row(j) {
    const p = j.progress || {};
    const done = j.status === 'completed' || j.status === 'failed' || j.status === 'cancelled';
    const cancel = el('button', { class: 'ack', text: 'Cancel', 'aria-label': `Cancel job ${j.jobId}` });
    cancel.hidden = done;
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try { setJob(await api('POST', '/jobs/' + encodeURIComponent(j.jobId) + '/cancel')); } catch (e) { cancel.textContent = e.message; }
    });
    const bar = el('progress', { max: String(p.total || 0), value: String((p.succeeded || 0) + (p.failed || 0)),
      'aria-label': `Progress of job ${j.jobId}` });
    return el('tr', { 'data-job': j.jobId }, el('td', { text: j.jobId }), el('td', { text: j.type }),
      el('td', { text: j.condition }), el('td', { text: j.status }), el('td', {}, bar),
      el('td', { text: `${p.succeeded || 0} / ${p.failed || 0} / ${p.pending || 0} of ${p.total || 0}` }),
      el('td', { text: dateTime(j.createdTime) }), el('td', {}, cancel));
  }

  function render() {
    const list = [...jobs.values()].sort((a, b) => (b.createdTime || '').localeCompare(a.createdTime || ''));
    $('#jobs').replaceChildren(...list.map(row));
    $('#no-jobs').hidden = list.length > 0;
  }

  function setJob(j) {
    if (!j || !j.jobId) return;
    jobs.set(j.jobId, j);
    if (state.view === 'jobs') render();
  }

  async function load() {
    const list = await api('GET', '/jobs');
    jobs.clear();
    for (const j of list.items) jobs.set(j.jobId, j);
    render();
  }

  Object.assign(TM, { loadJobs: load, jobEvent: setJob });
})();
