// Jobs: the list with its filter and the submit form (rows follow job events in place), and
// one job's detail with cancel and requeue.

import { api, can, currentView, explain, hooks, routeId, state } from '../core.js';
import { element, html, put } from '../html.js';
import { ago, badge, shortId, status, toast, when } from '../widgets.js';

const JOB_STATUSES = ['accepted', 'in_progress', 'completed', 'failed', 'cancelled'];
const jobFilter = { queue: '', status: '' };

// Queues no node serves (from /api/queues, refreshed with the list): their waiting jobs say so.
const unserved = new Set();

// The header of a table of jobRow()s (the jobs list, the relay's recent jobs).
export const jobHead = html`<thead><tr><th>Job</th><th>Queue</th><th>Kind</th><th>Status</th><th>Node</th><th>Attempt</th><th>Error</th><th>Updated</th></tr></thead>`;

// An accepted job whose run_at is still ahead (submitted with --at/--in, or waiting to retry).
function isDelayed(j) {
  return j.status === 'accepted' && j.run_at && Date.parse(j.run_at) > Date.now();
}

// Finished jobs an admin may act on in bulk, when the list shows one of these statuses.
const BULK_STATUSES = ['failed', 'cancelled', 'completed'];
function bulkOn() {
  return can('admin') && BULK_STATUSES.includes(jobFilter.status) && currentView() === 'jobs';
}

export function jobRow(j, pick = false) {
  const waiting = j.status === 'accepted' && unserved.has(j.queue)
    && html`<div class="warn-note">waiting: no node serves queue ${j.queue}</div>`;
  const error = j.error && j.error.message;
  const delayed = isDelayed(j) && html`<div class="muted job-delayed">delayed until ${when(j.run_at)}</div>`;
  return html`<tr data-job="${j.job_id}">${pick && html`<td><input type="checkbox" class="pick" value="${j.job_id}" aria-label="Select job ${shortId(j.job_id)}"></td>`}
    <td class="mono"><a href="#/jobs/${j.job_id}" title="${j.job_id}">${shortId(j.job_id)}</a></td>
    <td>${j.queue}</td><td>${j.kind}</td><td class="job-status">${status(j.status)}${delayed}${waiting}</td>
    <td class="job-node mono">${j.node_id || '—'}</td><td>${j.attempt}</td>
    <td class="job-error">${error ? html`<span title="${error}">${error}</span>` : ''}</td>
    <td>${ago(j.updated_at)}</td></tr>`;
}

function rowElement(j) {
  return element(html`<table><tbody>${jobRow(j, bulkOn())}</tbody></table>`, 'tr');
}

// A job event: its row is replaced, or added to the list when it matches the filter.
export function updateJobRow(j) {
  const row = document.querySelector(`tr[data-job="${CSS.escape(j.job_id)}"]`);
  if (row) {
    const picked = row.querySelector('.pick:checked');
    const fresh = rowElement(state.jobs.get(j.job_id) || j);
    if (picked && fresh.querySelector('.pick')) fresh.querySelector('.pick').checked = true;
    row.replaceWith(fresh);
    return;
  }
  const body = document.getElementById('job-rows');
  const matches = (!jobFilter.queue || jobFilter.queue === j.queue) && (!jobFilter.status || jobFilter.status === j.status);
  if (body && matches && currentView() === 'jobs') {
    const empty = document.getElementById('jobs-empty');
    if (empty) empty.remove();
    document.getElementById('jobs-table').hidden = false;
    body.prepend(rowElement(j));
  }
}

function list(jobs) {
  const pick = bulkOn();
  const head = pick
    ? html`<thead><tr><th><input type="checkbox" id="pick-all" aria-label="Select every job shown"></th><th>Job</th><th>Queue</th><th>Kind</th><th>Status</th><th>Node</th><th>Attempt</th><th>Error</th><th>Updated</th></tr></thead>`
    : jobHead;
  return html`${!jobs.length && html`<div class="empty" id="jobs-empty">No jobs match. Submit one above, or with <code>sheratan submit</code>.</div>`}
    ${pick && jobs.length && bulkBar()}
    <div class="table-wrap" id="jobs-table" ${jobs.length ? '' : html`hidden`}><table>
      ${head}
      <tbody id="job-rows">${jobs.map((j) => jobRow(j, pick))}</tbody></table></div>`;
}

// Requeue or delete the selected jobs, each after a confirmation that says how many: one
// bulk action through Core, audited once by the hub.
function bulkBar() {
  const requeue = jobFilter.status !== 'completed';
  return html`<div class="row gap-bottom-small" id="bulk-bar">
      ${requeue && html`<button type="button" class="secondary" id="bulk-requeue" disabled>Requeue selected</button>`}
      <button type="button" class="secondary" id="bulk-delete" disabled>Delete selected</button>
      <span id="bulk-count" class="muted" role="status">none selected</span>
    </div>
    <div class="panel confirm" id="bulk-confirm" role="alertdialog" aria-labelledby="bulk-question" hidden>
      <p id="bulk-question"></p>
      <div class="row"><button type="button" id="bulk-yes">Yes</button><button type="button" class="secondary" id="bulk-no">Cancel</button></div>
    </div>`;
}

function picked(root) {
  return [...root.querySelectorAll('#job-rows .pick:checked')].map((b) => b.value);
}

function bindBulk(root) {
  const bar = root.querySelector('#bulk-bar');
  if (!bar) return;
  const confirm = root.querySelector('#bulk-confirm');
  const count = () => {
    const n = picked(root).length;
    root.querySelector('#bulk-count').textContent = n ? `${n} selected` : 'none selected';
    bar.querySelectorAll('button').forEach((b) => { b.disabled = n === 0; });
  };
  root.querySelector('#pick-all').onchange = (e) => {
    root.querySelectorAll('#job-rows .pick').forEach((b) => { b.checked = e.target.checked; });
    count();
  };
  root.querySelector('#job-rows').onchange = count;
  const ask = (action) => {
    const ids = picked(root);
    const verb = action === 'requeue' ? 'Requeue' : 'Delete';
    root.querySelector('#bulk-question').textContent = action === 'requeue'
      ? `${verb} ${ids.length} ${jobFilter.status} job(s)? They run again with fresh attempts.`
      : `${verb} ${ids.length} ${jobFilter.status} job(s) and their results? This cannot be undone.`;
    const yes = root.querySelector('#bulk-yes');
    yes.textContent = `${verb} ${ids.length}`;
    confirm.hidden = false;
    yes.focus();
    yes.onclick = () => bulk(root, action, ids);
  };
  const requeue = root.querySelector('#bulk-requeue');
  if (requeue) requeue.onclick = () => ask('requeue');
  root.querySelector('#bulk-delete').onclick = () => ask('delete');
  root.querySelector('#bulk-no').onclick = () => { confirm.hidden = true; };
}

async function bulk(root, action, ids) {
  root.querySelector('#bulk-yes').disabled = true;
  const body = { status: jobFilter.status, job_ids: ids };
  if (jobFilter.queue) body.queue = jobFilter.queue;
  try {
    const done = await api(`/api/jobs/bulk/${action}`, { method: 'POST', body });
    toast(`${action === 'requeue' ? 'Requeued' : 'Deleted'} ${done.count} job(s)`);
    // A full render: deleted jobs send no event that would take their rows away.
    hooks.render();
  } catch (err) {
    toast(explain(err), true);
    root.querySelector('#bulk-yes').disabled = false;
  }
}

const submitForm = html`
  <section class="panel">
    <h3>Submit a job</h3>
    <form id="submit-form" class="stack" novalidate>
      <div class="row">
        <label class="field" for="submit-kind">Kind<input id="submit-kind" required value="echo" size="14"></label>
        <label class="field" for="submit-dispatch">Dispatch
          <select id="submit-dispatch"><option value="queue">queue (workers)</option><option value="auction">auction (hosts)</option><option value="llm">llm (relay)</option></select></label>
        <label class="field" for="submit-queue">Queue<input id="submit-queue" value="default" size="12"></label>
        <label class="field" for="submit-priority">Priority<input id="submit-priority" type="number" value="0" class="narrow"></label>
      </div>
      <label class="field" for="submit-payload">Payload (JSON)<textarea id="submit-payload">{"hello": "world"}</textarea></label>
      <div class="row"><button id="submit-button" type="submit">Submit</button><span id="submit-result" role="status"></span></div>
    </form>
  </section>`;

export const jobs = {
  title: () => 'Jobs',
  keepForms: true,
  async load() {
    // A credential limited to queues lists one of them at a time.
    const mine = (state.who && state.who.queues) || [];
    if (mine.length && !mine.includes(jobFilter.queue)) jobFilter.queue = mine[0];
    const q = new URLSearchParams({ limit: '100' });
    if (jobFilter.queue) q.set('queue', jobFilter.queue);
    if (jobFilter.status) q.set('status', jobFilter.status);
    const [{ jobs }, { queues }] = await Promise.all([api(`/api/jobs?${q}`), api('/api/queues')]);
    unserved.clear();
    for (const queue of queues) if (!queue.served) unserved.add(queue.queue);
    for (const j of jobs) state.jobs.set(j.job_id, j);
    const options = JOB_STATUSES.map((s) => html`<option ${s === jobFilter.status && html`selected`}>${s}</option>`);
    return html`
      ${can('submit') && submitForm}
      <section class="panel${can('submit') ? ' gap-top' : ''}">
        <div class="row gap-bottom-small">
          <label class="field" for="filter-queue">Queue<input id="filter-queue" value="${jobFilter.queue}" placeholder="all" size="12"></label>
          <label class="field" for="filter-status">Status<select id="filter-status"><option value="">all</option>${options}</select></label>
          <button type="button" class="secondary" id="filter-apply">Apply</button>
        </div>
        <div id="jobs-list">${list(jobs)}</div>
      </section>`;
  },
  refresh() { /* rows update in place from events */ },
  bind(root) {
    const dispatch = root.querySelector('#submit-dispatch');
    const queue = root.querySelector('#submit-queue');
    const kind = root.querySelector('#submit-kind');
    if (dispatch) dispatch.onchange = () => {
      queue.disabled = dispatch.value !== 'queue';
      queue.value = dispatch.value === 'queue' ? 'default' : dispatch.value;
      // The relay runs the kinds chat and llm: keep the default kind one it offers.
      if (dispatch.value === 'llm' && kind.value === 'echo') kind.value = 'chat';
      if (dispatch.value !== 'llm' && kind.value === 'chat') kind.value = 'echo';
    };
    bindBulk(root);
    root.querySelector('#filter-apply').onclick = () => {
      jobFilter.queue = root.querySelector('#filter-queue').value.trim();
      jobFilter.status = root.querySelector('#filter-status').value;
      hooks.render();
    };
    const form = root.querySelector('#submit-form');
    if (form) {
      form.onsubmit = (e) => {
        e.preventDefault();
        submit(root, dispatch.value, queue.value);
      };
    }
  },
};

async function submit(root, dispatch, queue) {
  const out = root.querySelector('#submit-result');
  let payload;
  try {
    payload = JSON.parse(root.querySelector('#submit-payload').value || 'null');
  } catch (err) {
    put(out, html`<span class="error">The payload is not JSON: ${err.message}</span>`);
    return;
  }
  const body = {
    kind: root.querySelector('#submit-kind').value.trim(),
    dispatch,
    payload,
    priority: Number(root.querySelector('#submit-priority').value) || 0,
  };
  if (dispatch === 'queue') body.queue = queue.trim() || 'default';
  const button = root.querySelector('#submit-button');
  button.disabled = true;
  try {
    const answer = await api('/api/jobs', { method: 'POST', body });
    put(out, html`Submitted <a href="#/jobs/${answer.job_id}" class="mono">${shortId(answer.job_id)}</a> to ${answer.queue}${answer.warning && html` <span class="submit-warning" id="submit-warning">${answer.warning}</span>`}`);
    const job = { job_id: answer.job_id, queue: answer.queue, kind: body.kind, status: answer.status, attempt: 0, updated_at: Date.now() };
    state.jobs.set(job.job_id, { ...job, ...(state.jobs.get(job.job_id) || {}) });
    updateJobRow(state.jobs.get(job.job_id));
  } catch (err) {
    put(out, html`<span class="error">${explain(err)}</span>`);
  } finally {
    button.disabled = false;
  }
}

function pretty(value) {
  return html`<pre>${JSON.stringify(value, null, 2)}</pre>`;
}

// A job's latest progress: the fraction as a bar, its message, the end of its output.
function progressBody(p) {
  if (!p) return html`<div class="empty">None reported.</div>`;
  const pct = p.value != null ? Math.round(p.value * 100) : null;
  return html`${pct != null && html`<progress max="100" value="${pct}" aria-label="Done">${pct}%</progress> <span id="job-progress-pct">${pct}%</span>`}
    ${p.message && html`<div id="job-progress-message">${p.message}</div>`}
    ${p.output_tail && html`<pre class="output" id="job-output">${p.output_tail}</pre>`}`;
}

// A `progress` event: the open job's panel follows it without reloading the view.
export function updateJobProgress(e) {
  const id = routeId();
  if (currentView() !== 'job' || !id || !(e.job_id.endsWith(id) || e.job_id.startsWith(id))) return;
  const el = document.getElementById('job-progress');
  if (el) put(el, progressBody(e.progress));
  const out = document.getElementById('job-output');
  if (out) out.scrollTop = out.scrollHeight;
}

export const job = {
  title: () => `Job ${shortId(routeId())}`,
  async load() {
    const id = routeId();
    const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
    const live = state.jobs.get(id);
    const canCancel = can('submit') && (job.status === 'accepted' || job.status === 'in_progress');
    const canRequeue = can('admin') && (job.status === 'failed' || job.status === 'cancelled');
    const requires = (job.required_capabilities || []).map((c) => html`<span class="chip">${c}</span>`);
    return html`
      <div class="grid two">
        <section class="panel"><h3>Job</h3><dl class="kv">
          <dt>ID</dt><dd class="mono">${job.job_id}</dd>
          <dt>Status</dt><dd id="job-status">${status(job.status)}${live && live.status !== job.status && html` ${status(live.status)}`}</dd>
          <dt>Queue</dt><dd>${job.queue}</dd><dt>Kind</dt><dd>${job.kind}</dd>
          <dt>Attempts</dt><dd>${job.attempt} of ${job.max_attempts}</dd>
          <dt>Priority</dt><dd>${job.priority}</dd>
          <dt>Requires</dt><dd>${requires.length ? requires : '—'}</dd>
          <dt>Created</dt><dd>${when(job.created_at)}</dd><dt>Updated</dt><dd>${when(job.updated_at)}</dd>
          <dt>Runs at</dt><dd id="job-run-at">${when(job.run_at)}${isDelayed(job) && html` ${badge('delayed', 'warn')}`}</dd>
          <dt>Finished</dt><dd>${when(job.finished_at)}</dd>
          <dt>Node</dt><dd class="mono">${job.node_id || '—'}</dd>
          <dt>Lease</dt><dd>${job.lease ? html`${job.lease.node_id} until ${when(job.lease.expires_at)}` : '—'}</dd>
          ${job.queue === 'auction' && html`<dt>Auction</dt><dd><a href="#/auctions">see the auctions</a></dd>`}
        </dl>
        <div class="row gap-top">
          ${canCancel && html`<button type="button" class="danger" id="job-cancel">Cancel</button>`}
          ${canRequeue && html`<button type="button" class="secondary" id="job-requeue">Requeue</button>`}
          <a href="#/jobs">Back to jobs</a>
        </div></section>
        <section class="panel stack">
          <div><h3>Payload</h3>${pretty(job.payload)}</div>
          <div><h3>Progress</h3><div id="job-progress">${progressBody(job.progress)}</div></div>
          <div><h3>Result</h3>${job.result != null ? pretty(job.result) : html`<div class="empty">No result yet.</div>`}</div>
          ${job.error && html`<div><h3>Error</h3><div class="error">${job.error.message} ${job.error.retryable ? badge('retryable', 'warn') : badge('final', 'bad')}</div></div>`}
        </section>
      </div>`;
  },
  bind(root) {
    const id = encodeURIComponent(routeId());
    const act = (selector, path, done) => {
      const b = root.querySelector(selector);
      if (!b) return;
      b.onclick = async () => {
        b.disabled = true;
        try {
          await api(path, { method: 'POST' });
          toast(done);
          hooks.render({ quiet: true });
        } catch (err) { toast(explain(err), true); b.disabled = false; }
      };
    };
    act('#job-cancel', `/api/jobs/${id}/cancel`, 'Job cancelled');
    act('#job-requeue', `/api/jobs/${id}/requeue`, 'Job requeued');
  },
};
