// The relay: its backends, the tabs open now, and recent LLM jobs.

import { api, explain } from '../core.js';
import { html } from '../html.js';
import { ago, shortId, status } from '../widgets.js';
import { jobHead, jobRow } from './jobs.js';

function backendRow([name, b]) {
  const detail = b.version || b.detail || b.base_url || (b.source ? JSON.stringify(b.source) : '');
  return html`<tr><td>${name}</td><td>${status(b.state)}</td><td class="muted">${detail}</td></tr>`;
}

function sessionRow(s) {
  const job = s.job_id ? html`<a href="#/jobs/${s.job_id}">${shortId(s.job_id)}</a>` : 'direct';
  return html`<tr><td class="mono">${job}</td><td>${s.profile}</td><td class="mono">${s.url}</td><td>${ago(s.started_at)}</td></tr>`;
}

export const relay = {
  title: () => 'Relay',
  async load() {
    const [overview, jobs] = await Promise.all([api('/api/overview'), api('/api/jobs?queue=llm&limit=20')]);
    const relay = overview.components.relay || {};
    let sessions = [], sessionsError = '';
    try { sessions = (await api('/api/relay/sessions')).sessions; } catch (err) { sessionsError = explain(err); }
    const backends = Object.entries((relay.detail && relay.detail.backends) || {}).map(backendRow);
    let open;
    if (sessionsError) open = html`<div class="error">${sessionsError}</div>`;
    else if (sessions.length) open = html`<div class="table-wrap"><table><thead><tr><th>Job</th><th>Profile</th><th>Page</th><th>Started</th></tr></thead><tbody>${sessions.map(sessionRow)}</tbody></table></div>`;
    else open = html`<div class="empty">No tab is open.</div>`;
    return html`
      <div class="grid two">
        <section class="panel"><h3>Relay</h3>
          ${relay.status === 'up' ? html`<table><tbody>${backends}</tbody></table>` : html`<div class="error">The relay is down: ${relay.error || 'no answer'}</div>`}
        </section>
        <section class="panel"><h3>Open sessions (tabs)</h3>${open}</section>
      </div>
      <section class="panel gap-top"><h3>Recent LLM jobs</h3>
        ${jobs.jobs.length
          ? html`<div class="table-wrap"><table>${jobHead}<tbody>${jobs.jobs.map(jobRow)}</tbody></table></div>`
          : html`<div class="empty">No LLM jobs yet. Submit one with dispatch "llm".</div>`}
      </section>`;
  },
};
