// The registry: every node with its status, health, attestation and load.

import { api, can, explain, hooks, state } from '../core.js';
import { html } from '../html.js';
import { ago, status, toast } from '../widgets.js';

function nodeRow(n) {
  const flag = n.attestation === 'SPOOF_SUSPECT' ? 'flag-bad' : n.attestation === 'DRIFT' ? 'flag-warn' : '';
  const load = n.load ? `${n.load.inflight}/${n.load.capacity}` : '—';
  const accept = n.attestation !== 'OK' && can('admin')
    && html`<button type="button" class="secondary" data-accept="${n.node_id}">Accept attestation</button>`;
  const capabilities = (n.capabilities || []).map((c) => html`<span class="chip">${c}</span>`);
  return html`<tr class="${flag}" data-node="${n.node_id}">
    <td class="mono">${n.node_id}</td><td>${n.role}</td>
    <td class="node-status">${status(n.status)}</td><td>${status(n.health)}</td>
    <td>${status(n.attestation)} ${accept}</td>
    <td>${ago(n.last_seen)}</td><td class="mono">${n.build_id}</td>
    <td>${capabilities.length ? capabilities : html`<span class="muted">—</span>`}</td>
    <td>${load}</td>
    <td>${can('admin') && html`<button type="button" class="secondary" data-remove="${n.node_id}">Remove</button>`}</td></tr>`;
}

export const nodes = {
  title: () => 'Nodes',
  async load() {
    const { nodes } = await api('/api/nodes');
    for (const n of nodes) state.nodes.set(n.node_id, n);
    if (!nodes.length) return html`<div class="empty">No nodes yet. Workers, hosts, the broker, the relay and core appear here once they heartbeat.</div>`;
    return html`<section class="panel"><div class="table-wrap"><table>
      <thead><tr><th>Node</th><th>Role</th><th>Status</th><th>Health</th><th>Attestation</th><th>Last seen</th><th>Build</th><th>Capabilities</th><th>Load</th><th><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${nodes.map(nodeRow)}</tbody></table></div></section>`;
  },
  bind(root) {
    // Two clicks: the first asks, the second removes (a node that still runs comes back with
    // its next heartbeat, so nothing is lost by mistake, but the list should not jump).
    root.querySelectorAll('[data-remove]').forEach((b) => {
      b.onclick = async () => {
        if (!b.dataset.armed) {
          b.dataset.armed = '1';
          b.textContent = 'Confirm remove';
          b.className = 'danger';
          return;
        }
        b.disabled = true;
        try {
          await api(`/api/nodes/${encodeURIComponent(b.dataset.remove)}`, { method: 'DELETE' });
          state.nodes.delete(b.dataset.remove);
          toast(`Removed ${b.dataset.remove}; it comes back if it heartbeats again`);
          hooks.render({ quiet: true });
        } catch (err) { toast(explain(err), true); b.disabled = false; }
      };
    });
    root.querySelectorAll('[data-accept]').forEach((b) => {
      b.onclick = async () => {
        b.disabled = true;
        try {
          await api(`/api/nodes/${encodeURIComponent(b.dataset.accept)}/attestation/accept`, { method: 'POST' });
          toast(`Accepted the attestation of ${b.dataset.accept}`);
          hooks.render({ quiet: true });
        } catch (err) { toast(explain(err), true); b.disabled = false; }
      };
    });
  },
};
