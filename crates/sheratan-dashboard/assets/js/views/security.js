// Security: the alerts the audit watcher raised and the audit log, newest first.

import { api } from '../core.js';
import { html } from '../html.js';
import { details, status, when } from '../widgets.js';

function alertRow(a) {
  return html`
    <tr data-alert-rule="${a.rule}"><td>${when(a.ts)}</td><td>${a.rule}</td><td>${status(a.severity)}</td>
    <td class="mono">${a.source}</td><td>${a.count}</td><td class="message">${a.message}</td></tr>`;
}

function auditRow(e) {
  return html`
    <tr><td>${when(e.ts)}</td><td>${e.event}${e.count > 1 && ` ×${e.count}`}</td><td>${status(e.severity)}</td><td>${e.plane || ''}</td>
    <td class="mono">${e.remote_addr || ''}</td><td class="mono">${e.node_id || ''}</td>
    <td class="mono">${e.credential || ''}</td><td class="detail">${details(e.detail)}</td></tr>`;
}

export const security = {
  title: () => 'Security',
  async load() {
    const [alerts, audit] = await Promise.all([api('/api/alerts?limit=100'), api('/api/audit?limit=200')]);
    const alertRows = (alerts.entries || []).slice().reverse().map(alertRow);
    const auditRows = (audit.entries || []).slice().reverse().map(auditRow);
    return html`
      <section class="panel"><h3>Alerts</h3>
        ${alertRows.length
          ? html`<div class="table-wrap"><table id="alerts-table"><thead><tr><th>When</th><th>Rule</th><th>Severity</th><th>Source</th><th>Count</th><th>Message</th></tr></thead><tbody>${alertRows}</tbody></table></div>`
          : html`<div class="empty" id="alerts-empty">No alerts. They appear here when the audit watcher sees a burst (e.g. 10 failed logins from one address in a minute).</div>`}
      </section>
      <section class="panel gap-top"><h3>Audit log (newest first)</h3>
        ${auditRows.length
          ? html`<div class="table-wrap"><table><thead><tr><th>When</th><th>Event</th><th>Severity</th><th>Plane</th><th>Peer</th><th>Node</th><th>Credential</th><th>Detail</th></tr></thead><tbody>${auditRows}</tbody></table></div>`
          : html`<div class="empty">The audit log is empty.</div>`}
      </section>`;
  },
};
