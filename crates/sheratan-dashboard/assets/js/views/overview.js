// The overview: counts, the last hour's charts, the components' health, recent alerts.

import { api } from '../core.js';
import { html } from '../html.js';
import { ago, chart, status } from '../widgets.js';

function card(value, label, sub) {
  return html`<div class="panel card"><div class="value">${value ?? '—'}</div><div class="label">${label}</div>${sub && html`<div class="sub">${sub}</div>`}</div>`;
}

export const overview = {
  title: () => 'Overview',
  async load() {
    const [overview, history, alerts] = await Promise.all([
      api('/api/overview'),
      api('/api/history'),
      api('/api/alerts?limit=5'),
    ]);
    const byStatus = (overview.nodes || {}).by_status;
    const data = (overview.components.data || {}).detail || {};
    const jobs = overview.jobs || {};
    const components = Object.entries(overview.components).map(([name, c]) => html`
      <tr><td>${name}</td><td>${status(c.status)}</td>
      <td class="muted">${c.error || (c.latency_ms != null ? c.latency_ms.toFixed(1) + ' ms' : '')}</td></tr>`);
    const alertRows = (alerts.entries || []).slice().reverse().map((a) => html`
      <tr><td>${ago(a.ts)}</td><td>${a.rule}</td><td>${status(a.severity)}</td><td class="message">${a.message || ''}</td></tr>`);
    const points = history.points || [];
    return html`
      <div class="grid cards">
        ${card(byStatus ? byStatus.ONLINE : '—', 'nodes online', `${byStatus ? byStatus.STALE : 0} stale · ${byStatus ? byStatus.DEAD : 0} dead`)}
        ${card(data.queue_depth, 'queue depth')}
        ${card(data.inflight, 'inflight')}
        ${card(jobs.results_pending, 'results pending', 'finished, not yet collected by a submitter that follows its results (Core and dashboard jobs never count)')}
        ${card(jobs.auth_failures_1m, 'failed auth, last minute')}
      </div>
      <div class="grid two gap-top">
        <section class="panel"><h3>Queue depth, last hour</h3>${chart(points, 'queue_depth', 'Queue depth')}</section>
        <section class="panel"><h3>Failed authentications per minute, last hour</h3>${chart(points, 'auth_failures_1m', 'Failed authentications', 'bad')}</section>
        <section class="panel"><h3>Components</h3><div class="table-wrap"><table><tbody>${components}</tbody></table></div></section>
        <section class="panel wide" id="recent-alerts"><h3>Recent alerts</h3>${alertRows.length
          ? html`<div class="table-wrap"><table><thead><tr><th>When</th><th>Rule</th><th>Severity</th><th>Message</th></tr></thead><tbody>${alertRows}</tbody></table></div>`
          : html`<div class="empty">No alerts. The audit watcher raises them on bursts of security events.</div>`}</section>
      </div>`;
  },
};
