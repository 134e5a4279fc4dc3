// Schedules: every schedule with its cron and time zone, next runs, last run, last job and
// how it stands, and its counts (docs/API.md, "Schedules"). Admins pause, resume and run a
// schedule now; creating one is `sheratan schedule add` or POST /v1/schedules.

import { api, can, explain, hooks } from '../core.js';
import { html } from '../html.js';
import { badge, shortId, status, toast, when } from '../widgets.js';

function lastRun(s) {
  const run = s.last_run;
  if (!run) return html`<span class="muted">never</span>`;
  const kind = { submitted: 'ok', skipped: 'warn', missed: 'bad' }[run.outcome] || '';
  return html`${badge(run.outcome, kind)} ${when(run.tick)}${run.reason && html`<div class="muted schedule-reason">${run.reason}</div>`}`;
}

function lastJob(s) {
  const job = s.last_job;
  if (!job) return '—';
  return html`<a href="#/jobs/${job.job_id}" class="mono" title="${job.job_id}">${shortId(job.job_id)}</a> ${job.status ? status(job.status) : html`<span class="muted">gone</span>`}`;
}

function nextRuns(s) {
  if (s.paused) return badge('paused', 'warn');
  const [first, ...rest] = s.next_runs;
  if (!first) return '—';
  return html`${when(first)}${rest.length ? html`<div class="muted">then ${rest.slice(0, 2).map((t) => new Date(t).toLocaleString()).join(', ')}</div>` : ''}`;
}

function scheduleRow(s) {
  const admin = can('admin');
  return html`<tr data-schedule="${s.name}">
    <td class="mono">${s.name}</td>
    <td><code>${s.cron}</code><div class="muted">${s.timezone}</div></td>
    <td>${s.job.kind} <span class="muted">on</span> ${s.job.queue}</td>
    <td class="schedule-next">${nextRuns(s)}</td>
    <td class="schedule-last">${lastRun(s)}</td>
    <td class="schedule-job">${lastJob(s)}</td>
    <td class="schedule-counts">${s.runs} / ${s.skipped} / ${s.missed > 0 ? badge(String(s.missed), 'bad') : '0'}</td>
    <td>${admin && html`<button type="button" class="secondary" data-pause="${s.name}" data-paused="${s.paused ? '1' : ''}">${s.paused ? 'Resume' : 'Pause'}</button>
      <button type="button" class="secondary" data-run="${s.name}">Run now</button>`}</td></tr>`;
}

export const schedules = {
  title: () => 'Schedules',
  async load() {
    const { schedules } = await api('/api/schedules');
    return html`
      <section class="panel">
        ${!schedules.length && html`<div class="empty">No schedules yet. Create one with <code>sheratan schedule add NAME --cron "*/5 * * * *" --kind KIND</code>.</div>`}
        <div class="table-wrap" ${schedules.length ? '' : html`hidden`}><table id="schedules-table">
          <thead><tr><th>Schedule</th><th>Cron</th><th>Job</th><th>Next run</th><th>Last run</th><th>Last job</th><th title="submitted / skipped / missed">Runs / skipped / missed</th><th><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${schedules.map(scheduleRow)}</tbody></table></div>
      </section>`;
  },
  bind(root) {
    root.querySelectorAll('[data-pause]').forEach((b) => {
      b.onclick = () => act(b, `/api/schedules/${encodeURIComponent(b.dataset.pause)}`,
        { method: 'PATCH', body: { paused: !b.dataset.paused } },
        `Schedule ${b.dataset.pause} ${b.dataset.paused ? 'resumed' : 'paused'}`);
    });
    root.querySelectorAll('[data-run]').forEach((b) => {
      b.onclick = () => act(b, `/api/schedules/${encodeURIComponent(b.dataset.run)}/run`,
        { method: 'POST' }, (answer) => `Schedule ${b.dataset.run} ran now: job ${shortId(answer.job_id)}`);
    });
  },
};

async function act(button, path, request, said) {
  button.disabled = true;
  try {
    const answer = await api(path, request);
    toast(typeof said === 'function' ? said(answer) : said);
    hooks.render({ quiet: true });
  } catch (err) { toast(explain(err), true); button.disabled = false; }
}
