// Small pieces of markup the views share: times, ids, badges, toasts and charts.

import { html } from './html.js';

export function ago(ts) {
  if (!ts) return '—';
  const ms = Date.now() - (typeof ts === 'number' ? ts : Date.parse(ts));
  if (Number.isNaN(ms)) return String(ts);
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(Date.now() - ms).toLocaleString();
}

// A timestamp as local time, the exact value in a tooltip.
export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return html`<time datetime="${ts}" title="${ts}">${d.toLocaleString()}</time>`;
}

// The end of a job id: a UUIDv7 starts with its creation time (jobs of one minute share
// their first 8 characters) and ends with random bits that tell jobs apart. The CLI and Core
// accept these 8 characters as the job's id.
export function shortId(id) {
  return '…' + String(id).slice(-8);
}

// An audit line's details as key/value pairs (nested values as compact JSON).
export function details(detail) {
  if (detail == null || detail === '') return '';
  if (typeof detail !== 'object' || Array.isArray(detail)) return String(JSON.stringify(detail));
  const pairs = Object.entries(detail).map(([k, v]) => html`<dt>${k}</dt><dd>${typeof v === 'string' ? v : JSON.stringify(v)}</dd>`);
  return html`<dl class="detail-kv">${pairs}</dl>`;
}

export function badge(text, kind) {
  return html`<span class="badge ${kind || ''}">${text}</span>`;
}

const STATUS_KIND = {
  ONLINE: 'ok', STALE: 'warn', DEAD: 'bad', GREEN: 'ok', YELLOW: 'warn', RED: 'bad',
  OK: 'ok', DRIFT: 'warn', SPOOF_SUSPECT: 'bad',
  accepted: 'info', in_progress: 'warn', completed: 'ok', failed: 'bad', cancelled: '',
  up: 'ok', down: 'bad', connected: 'ok', idle: 'info', unavailable: 'bad', configured: 'ok', not_configured: '',
  critical: 'bad', high: 'bad', warning: 'warn', medium: 'warn', info: 'info', low: '',
};

export function status(text) {
  return badge(text, STATUS_KIND[text] || '');
}

export function toast(message, bad) {
  const el = document.createElement('div');
  el.className = 'toast' + (bad ? ' bad' : '');
  el.textContent = message;
  document.getElementById('toasts').appendChild(el);
  setTimeout(() => el.remove(), 6000);
}

// A line chart of one series of /api/history's points.
export function chart(points, key, label, kind) {
  if (!points.length) return html`<div class="empty">No samples yet (Core samples the hub every 10 s).</div>`;
  const w = 600, hgt = 140, pad = 6;
  const values = points.map((p) => Number(p[key]) || 0);
  const max = Math.max(1, ...values);
  const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const y = (v) => hgt - pad - (v / max) * (hgt - 2 * pad);
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(values[i]).toFixed(1)}`).join(' ');
  const area = `${line} L${x(t1).toFixed(1)},${hgt - pad} L${x(t0).toFixed(1)},${hgt - pad} Z`;
  const now = values[values.length - 1];
  const peak = Math.max(...values);
  return html`<div class="chart" role="img" aria-label="${label}: now ${now}, peak ${peak} over the last hour">
    <svg viewBox="0 0 ${w} ${hgt}" preserveAspectRatio="none">
      <line class="axis" x1="${pad}" y1="${hgt - pad}" x2="${w - pad}" y2="${hgt - pad}"/>
      <path class="area ${kind || ''}" d="${area}"/><path class="line ${kind || ''}" d="${line}"/>
    </svg>
    <div class="legend"><span>${new Date(t0).toLocaleTimeString()}</span><span>now ${now} · peak ${peak}</span></div>
  </div>`;
}
