// Queues: every queue with its depth, running jobs, whether a node serves it, and its
// settings (docs/API.md, "Queue settings"). Admins pause, resume and change limits here.

import { api, can, explain, hooks } from '../core.js';
import { element, html } from '../html.js';
import { badge, toast } from '../widgets.js';

function rate(r) {
  if (!r) return '—';
  const period = { 1: 's', 60: 'm', 3600: 'h', 86400: 'd' }[r.period_s || 1] || `${r.period_s}s`;
  return `${r.limit}/${period}${r.burst ? `, burst ${r.burst}` : ''}`;
}

function queueRow(q) {
  const s = q.settings || {};
  const admin = can('admin');
  return html`<tr data-queue="${q.queue}">
    <td class="mono">${q.queue}</td><td>${q.depth}</td><td>${q.running || 0}</td>
    <td>${q.served ? badge('served', 'ok') : badge('no node', 'warn')}</td>
    <td>${s.paused ? badge('paused', 'warn') : 'no'}</td>
    <td>${s.concurrency || '—'}</td><td>${s.key_concurrency || '—'}</td>
    <td>${rate(s.rate)}</td><td>${rate(s.key_rate)}</td>
    <td>${admin && html`<button type="button" class="secondary" data-pause="${q.queue}" data-paused="${s.paused ? '1' : ''}">${s.paused ? 'Resume' : 'Pause'}</button>`}</td></tr>`;
}

const settingsForm = html`
  <section class="panel gap-top">
    <h3>Change a queue's settings</h3>
    <p class="muted">Fields left empty keep their value; <code>none</code> removes a limit. Limits apply from the next lease; running jobs are left alone.</p>
    <form id="queue-form" class="stack" novalidate>
      <div class="row">
        <label class="field" for="q-name">Queue<input id="q-name" required size="14" placeholder="default"></label>
        <label class="field" for="q-concurrency">Concurrency<input id="q-concurrency" size="6" placeholder="none"></label>
        <label class="field" for="q-key-concurrency">Per key<input id="q-key-concurrency" size="6" placeholder="none"></label>
        <label class="field" for="q-rate">Rate<input id="q-rate" size="8" placeholder="5/s"></label>
        <label class="field" for="q-key-rate">Per-key rate<input id="q-key-rate" size="8" placeholder="60/m"></label>
      </div>
      <div class="row"><button id="queue-save" type="submit">Save</button></div>
    </form>
  </section>`;

export const queues = {
  title: () => 'Queues',
  keepForms: true,
  async load() {
    const { queues } = await api('/api/queues');
    return html`
      <section class="panel">
        ${!queues.length && html`<div class="empty">No queues yet: they appear with their first job or worker.</div>`}
        <div class="table-wrap" ${queues.length ? '' : html`hidden`}><table id="queues-table">
          <thead><tr><th>Queue</th><th>Depth</th><th>Running</th><th>Served</th><th>Paused</th><th>Concurrency</th><th>Per key</th><th>Rate</th><th>Per-key rate</th><th><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${queues.map(queueRow)}</tbody></table></div>
      </section>
      ${can('admin') && settingsForm}`;
  },
  refresh(root, markup) {
    // Live updates keep what the operator is typing: only the table is replaced.
    const table = element(markup, '#queues-table');
    const old = root.querySelector('#queues-table');
    if (table && old) { old.replaceWith(table); bindButtons(root); }
  },
  bind(root) {
    bindButtons(root);
    const form = root.querySelector('#queue-form');
    if (form) form.onsubmit = (e) => { e.preventDefault(); save(root); };
  },
};

function bindButtons(root) {
  root.querySelectorAll('[data-pause]').forEach((b) => {
    b.onclick = async () => {
      b.disabled = true;
      const paused = !b.dataset.paused;
      try {
        await api(`/api/queues/${encodeURIComponent(b.dataset.pause)}/settings`, { method: 'PUT', body: { paused } });
        toast(`Queue ${b.dataset.pause} ${paused ? 'paused' : 'resumed'}`);
        hooks.render({ quiet: true });
      } catch (err) { toast(explain(err), true); b.disabled = false; }
    };
  });
}

// "5/s", "60/m", "10/30s:20" → {limit, period_s, burst?}; "none" → null.
function parseRate(text) {
  if (text === 'none') return null;
  const m = /^(\d+)\/(\d*)(s|m|h|d)(?::(\d+))?$/.exec(text);
  if (!m) throw new Error(`${text}: write a rate as 5/s, 60/m or 10/30s:20`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[m[3]];
  const rate = { limit: Number(m[1]), period_s: (m[2] ? Number(m[2]) : 1) * unit };
  if (m[4]) rate.burst = Number(m[4]);
  return rate;
}

async function save(root) {
  const value = (id) => root.querySelector(id).value.trim();
  const queue = value('#q-name');
  if (!queue) { toast('Name the queue', true); return; }
  const patch = {};
  try {
    for (const [id, field] of [['#q-concurrency', 'concurrency'], ['#q-key-concurrency', 'key_concurrency']]) {
      const v = value(id);
      if (v) patch[field] = v === 'none' ? null : Number(v);
    }
    for (const [id, field] of [['#q-rate', 'rate'], ['#q-key-rate', 'key_rate']]) {
      const v = value(id);
      if (v) patch[field] = parseRate(v);
    }
  } catch (err) { toast(err.message, true); return; }
  try {
    await api(`/api/queues/${encodeURIComponent(queue)}/settings`, { method: 'PUT', body: patch });
    toast(`Queue ${queue} saved`);
    root.querySelector('#queue-form').reset();
    hooks.render({ quiet: true });
  } catch (err) { toast(explain(err), true); }
}
