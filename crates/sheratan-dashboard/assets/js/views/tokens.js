// Tokens (admins only): every credential with its role, scope and dates (never a secret),
// a form to create one (its secret is shown once, here), and revocation with two clicks.

import { api, explain, hooks } from '../core.js';
import { element, html, put } from '../html.js';
import { status, toast, when } from '../widgets.js';

function tokenRow(c) {
  const live = !c.revoked_at;
  return html`<tr data-token="${c.name}">
    <td class="mono">${c.name}</td><td>${c.role}</td>
    <td>${(c.queues || []).join(', ') || html`<span class="muted">all</span>`}</td>
    <td>${when(c.created_at)}</td><td>${when(c.last_used_at)}</td><td>${when(c.expires_at)}</td>
    <td>${live ? status('live') : html`${status('revoked')} ${when(c.revoked_at)}`}</td>
    <td>${live && html`<button type="button" class="secondary" data-revoke="${c.name}">Revoke</button>`}</td></tr>`;
}

const createForm = html`
  <section class="panel">
    <h3>Create a credential</h3>
    <form id="token-form" class="stack" novalidate>
      <div class="row">
        <label class="field" for="token-name">Name<input id="token-name" required size="16" placeholder="gpu-1"></label>
        <label class="field" for="token-role">Role
          <select id="token-role"><option>read</option><option>submit</option><option>node</option><option>admin</option></select></label>
        <label class="field" for="token-queues">Queues (submit)<input id="token-queues" size="14" placeholder="all"></label>
        <label class="field" for="token-days">Expires in days<input id="token-days" type="number" min="1" class="narrow" placeholder="never"></label>
      </div>
      <div class="row"><button id="token-create" type="submit">Create</button></div>
      <div id="token-secret" role="status"></div>
    </form>
  </section>`;

export const tokens = {
  title: () => 'Tokens',
  keepForms: true,
  async load() {
    const { credentials } = await api('/api/tokens');
    return html`
      ${createForm}
      <section class="panel gap-top">
        ${!credentials.length && html`<div class="empty">No credentials yet: everything uses the mesh token.</div>`}
        <div class="table-wrap" ${credentials.length ? '' : html`hidden`}><table id="tokens-table">
          <thead><tr><th>Name</th><th>Role</th><th>Queues</th><th>Created</th><th>Last used</th><th>Expires</th><th>State</th><th><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>${credentials.map(tokenRow)}</tbody></table></div>
      </section>`;
  },
  refresh() { /* nothing live here */ },
  bind(root) {
    root.querySelector('#token-form').onsubmit = (e) => {
      e.preventDefault();
      create(root);
    };
    root.querySelectorAll('[data-revoke]').forEach(bindRevoke);
  },
};

// Two clicks: the first asks, the second revokes (a revoked name is never reused).
function bindRevoke(b) {
  b.onclick = async () => {
    if (!b.dataset.armed) {
      b.dataset.armed = '1';
      b.textContent = 'Confirm revoke';
      b.className = 'danger';
      return;
    }
    b.disabled = true;
    try {
      await api(`/api/tokens/${encodeURIComponent(b.dataset.revoke)}`, { method: 'DELETE' });
      toast(`Revoked ${b.dataset.revoke}: every hub refuses it within seconds`);
      hooks.render();
    } catch (err) { toast(explain(err), true); b.disabled = false; }
  };
}

async function create(root) {
  const out = root.querySelector('#token-secret');
  const queues = root.querySelector('#token-queues').value.split(',').map((q) => q.trim()).filter(Boolean);
  const days = Number(root.querySelector('#token-days').value);
  const body = {
    name: root.querySelector('#token-name').value.trim(),
    role: root.querySelector('#token-role').value,
    queues,
  };
  if (days > 0) body.expires_in_s = Math.round(days * 86400);
  const button = root.querySelector('#token-create');
  button.disabled = true;
  try {
    const created = await api('/api/tokens', { method: 'POST', body });
    put(out, html`<div class="panel secret"><p>The secret of <b>${created.credential.name}</b> (${created.credential.role}), shown this once: copy it now.</p>
      <code id="token-secret-value" class="mono">${created.secret}</code></div>`);
    const rows = document.querySelector('#tokens-table tbody');
    const row = element(tokenRow(created.credential), 'tr');
    rows.append(row);
    rows.closest('.table-wrap').hidden = false;
    row.querySelectorAll('[data-revoke]').forEach(bindRevoke);
  } catch (err) {
    put(out, html`<span class="error">${explain(err)}</span>`);
  } finally {
    button.disabled = false;
  }
}
