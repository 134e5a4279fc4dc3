// Auctions: each job's rounds, every host's bid, and the winner.

import { api } from '../core.js';
import { html } from '../html.js';
import { ago, badge, shortId, status } from '../widgets.js';

function bidRow(b, winner) {
  return html`<tr><td class="mono">${b.node_id}${b.node_id === winner && html` ${badge('winner', 'ok')}`}</td>
    <td>${b.accept ? badge('bid', 'info') : badge('declined', '')}</td><td>${b.accept ? b.price.toFixed(3) : '—'}</td>
    <td>${b.accept ? `${b.eta_ms} ms` : '—'}</td><td class="muted">${b.reason}</td></tr>`;
}

function round(r) {
  const bids = r.bids.map((b) => bidRow(b, r.winner));
  return html`
    <div class="table-wrap gap-top-small"><table>
      <caption>Round ${r.round} · ${r.outcome} · bids in ${Number(r.bid_ms || 0).toFixed(1)} ms · ${r.elapsed_ms} ms in all · ${ago(r.started_at)}</caption>
      <thead><tr><th>Host</th><th>Answer</th><th>Price</th><th>ETA</th><th>Reason</th></tr></thead>
      <tbody>${bids.length ? bids : html`<tr><td colspan="5" class="muted">No host was asked (none ONLINE with the capabilities).</td></tr>`}</tbody>
    </table></div>`;
}

function auction(a) {
  const last = a.rounds[a.rounds.length - 1];
  return html`
    <section class="panel gap-bottom" data-auction="${a.job_id}">
      <div class="row spread">
        <div><a class="mono" href="#/jobs/${a.job_id}">${shortId(a.job_id)}</a> · winner <strong>${a.winner || '—'}</strong> · ${a.rounds.length} round${a.rounds.length === 1 ? '' : 's'}</div>
        <div>${last && status(last.outcome)}</div>
      </div>
      ${a.rounds.map(round)}
    </section>`;
}

export const auctions = {
  title: () => 'Auctions',
  async load() {
    const { auctions } = await api('/api/auctions?limit=50');
    if (!auctions.length) return html`<div class="empty">No auctions yet. Submit a job with dispatch "auction" and the broker asks the hosts for bids.</div>`;
    return html`${auctions.map(auction)}`;
  },
};
