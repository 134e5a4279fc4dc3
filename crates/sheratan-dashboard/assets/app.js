// Sheratan dashboard: a small single-page app over the Core API. No framework and no build
// step: plain modules the binary embeds. Every piece of data comes from Core with the token
// from sessionStorage in an Authorization header (never in a URL); live updates come from
// Core's server-sent events, read with fetch so the header can be sent.

'use strict';

window.__sheratanErrors = [];
window.addEventListener('error', (e) => window.__sheratanErrors.push(String(e.message || e)));
document.addEventListener('securitypolicyviolation', (e) => window.__sheratanErrors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));
window.addEventListener('unhandledrejection', (e) => window.__sheratanErrors.push(String(e.reason && e.reason.message || e.reason)));

const TOKEN_KEY = 'sheratan.token';
const app = document.getElementById('app');
const state = {
  coreUrl: '',
  version: '',
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  live: 'off',
  hubDown: false,
  jobs: new Map(),      // job_id -> latest job event or view
  nodes: new Map(),     // node_id -> node view (or event fields)
  alerts: [],
  stream: null,
};

// ---------- helpers ----------

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function h(html) {
  const t = document.createElement('template');
  t.innerHTML = html.trim();
  return t.content;
}

function ago(ts) {
  if (!ts) return '—';
  const ms = Date.now() - (typeof ts === 'number' ? ts : Date.parse(ts));
  if (Number.isNaN(ms)) return esc(ts);
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(Date.now() - ms).toLocaleString();
}

// A timestamp as local time, the exact value in a tooltip.
function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return esc(ts);
  return `<time datetime="${esc(ts)}" title="${esc(ts)}">${esc(d.toLocaleString())}</time>`;
}

function shortId(id) {
  return esc(String(id).slice(0, 8));
}

function badge(text, kind) {
  return `<span class="badge ${kind || ''}">${esc(text)}</span>`;
}

const STATUS_KIND = {
  ONLINE: 'ok', STALE: 'warn', DEAD: 'bad', GREEN: 'ok', YELLOW: 'warn', RED: 'bad',
  OK: 'ok', DRIFT: 'warn', SPOOF_SUSPECT: 'bad',
  accepted: 'info', in_progress: 'warn', completed: 'ok', failed: 'bad', cancelled: '',
  up: 'ok', down: 'bad', connected: 'ok', idle: 'info', unavailable: 'bad', configured: 'ok', not_configured: '',
  critical: 'bad', high: 'bad', warning: 'warn', medium: 'warn', info: 'info', low: '',
};

function status(text) {
  return badge(text, STATUS_KIND[text] || '');
}

function toast(message, bad) {
  const el = document.createElement('div');
  el.className = 'toast' + (bad ? ' bad' : '');
  el.textContent = message;
  document.getElementById('toasts').appendChild(el);
  setTimeout(() => el.remove(), 6000);
}

class ApiError extends Error {
  constructor(kind, message, extra) {
    super(message);
    this.kind = kind;
    Object.assign(this, extra || {});
  }
}

// What the operator should read when Core cannot be reached or the token is wrong.
function explain(err) {
  if (err.kind === 'down') {
    return `Cannot reach the Core API at ${state.coreUrl}. Is it running (sheratan up, or sheratan core)?`;
  }
  if (err.code === 'AUTH_FAIL') {
    return 'The token does not match the hub\'s token. Use the contents of $SHERATAN_HOME/hub_token (or SHERATAN_HUB_TOKEN).';
  }
  return `${err.code ? err.code + ': ' : ''}${err.message}${err.hint ? ' — ' + err.hint : ''}`;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(state.coreUrl + path, {
      method: options.method || 'GET',
      headers: { Authorization: `Bearer ${state.token}`, ...(options.body ? { 'Content-Type': 'application/json' } : {}) },
      body: options.body ? JSON.stringify(options.body) : undefined,
    });
  } catch (e) {
    throw new ApiError('down', String(e.message || e));
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const error = (body && body.error) || {};
    if (error.code === 'AUTH_FAIL' && path !== '/api/overview') logout('The token was refused: log in again.');
    throw new ApiError('api', error.message || `HTTP ${response.status}`, { status: response.status, code: error.code, hint: error.hint });
  }
  return body;
}

// ---------- live updates (server-sent events over fetch) ----------

function setLive(value) {
  state.live = value;
  const el = document.getElementById('live');
  if (!el) return;
  el.className = 'live ' + (value === 'on' ? 'on' : value === 'off' ? 'off' : '');
  el.textContent = value === 'on' ? 'Live' : value === 'off' ? 'Disconnected' : 'Connecting…';
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  let wait = 1000;
  while (!controller.signal.aborted) {
    setLive('connecting');
    try {
      const response = await fetch(state.coreUrl + '/api/events', {
        headers: { Authorization: `Bearer ${state.token}` },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      setLive('on');
      wait = 1000;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trim());
          }
          if (data.length) {
            try { onEvent(name, JSON.parse(data.join('\n'))); } catch (e) { /* a keep-alive or a torn line */ }
          }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setLive('off');
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 15000);
  }
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

let rerenderTimer = null;
function rerenderSoon(views) {
  if (!views.includes(currentView())) return;
  clearTimeout(rerenderTimer);
  rerenderTimer = setTimeout(() => render({ quiet: true }), 150);
}

function onEvent(name, data) {
  if (name === 'job') {
    const old = state.jobs.get(data.job_id) || {};
    state.jobs.set(data.job_id, { ...old, ...data });
    updateJobRow(data);
    // An auction's record changes with its job: the auctions view follows job events too.
    rerenderSoon(['overview', 'relay', 'job', 'auctions']);
  } else if (name === 'node') {
    const old = state.nodes.get(data.node_id) || {};
    state.nodes.set(data.node_id, { ...old, ...data });
    rerenderSoon(['overview', 'nodes']);
  } else if (name === 'alert') {
    state.alerts.push(data);
    toast(`Alert: ${data.message || data.rule || data.event}`, true);
    rerenderSoon(['overview', 'security']);
  } else if (name === 'hub') {
    state.hubDown = !data.reachable;
    render({ quiet: true });
  } else if (name === 'lagged') {
    render({ quiet: true });
  }
}

// ---------- shell and routing ----------

const VIEWS = [
  ['overview', 'Overview'],
  ['nodes', 'Nodes'],
  ['jobs', 'Jobs'],
  ['auctions', 'Auctions'],
  ['security', 'Security'],
  ['relay', 'Relay'],
];

function currentView() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [view, id] = hash.split('/');
  if (view === 'jobs' && id) return 'job';
  return VIEWS.some(([v]) => v === view) ? view : 'overview';
}

function routeId() {
  return decodeURIComponent(location.hash.replace(/^#\/?/, '').split('/')[1] || '');
}

function shell(title, actions) {
  const view = currentView() === 'job' ? 'jobs' : currentView();
  return `
  <div class="shell">
    <nav class="side" aria-label="Sections">
      <div class="brand"><img src="/favicon.svg" alt="">Sheratan</div>
      ${VIEWS.map(([v, label]) => `<a href="#/${v}" ${v === view ? 'aria-current="page"' : ''}>${label}</a>`).join('')}
      <div class="foot">Core: ${esc(state.coreUrl)}<br>${esc(state.version)}</div>
    </nav>
    <main class="main">
      <div class="top">
        <h2>${esc(title)}</h2>
        <div class="right">${actions || ''}<span id="live" class="live">Connecting…</span>
          <button class="secondary" id="logout" type="button">Log out</button></div>
      </div>
      ${state.hubDown ? '<div class="banner" role="alert">The hub is not answering Core. Data shown may be stale.</div>' : ''}
      <div id="view"><div class="loading">Loading…</div></div>
    </main>
  </div>`;
}

const renderers = {};
let renderSeq = 0;

async function render(opts = {}) {
  if (!state.token) return renderLogin();
  const view = currentView();
  const seq = ++renderSeq;
  const r = renderers[view];
  const focused = document.activeElement && document.activeElement.id;
  if (!opts.quiet || !document.getElementById('view')) {
    app.innerHTML = shell(r.title(), r.actions ? r.actions() : '');
    document.getElementById('logout').onclick = () => logout();
    setLive(state.live);
  }
  try {
    const html = await r.load();
    if (seq !== renderSeq) return;
    const target = document.getElementById('view');
    // Keep what the operator is typing: forms are not re-rendered by live updates.
    if (opts.quiet && target.querySelector('form') && r.keepForms) {
      r.refresh && r.refresh(target, html);
    } else {
      target.innerHTML = html;
      r.bind && r.bind(target);
    }
    if (focused) { const el = document.getElementById(focused); if (el) el.focus(); }
  } catch (err) {
    if (seq !== renderSeq) return;
    const target = document.getElementById('view');
    if (target) target.innerHTML = `<div class="error" role="alert">${esc(explain(err))}</div>
      <p><button type="button" class="secondary" id="retry">Retry</button></p>`;
    const retry = document.getElementById('retry');
    if (retry) retry.onclick = () => render();
  }
}

// ---------- login ----------

function renderLogin(message) {
  stopStream();
  app.innerHTML = `
  <form class="login" id="login" autocomplete="off">
    <h1>Sheratan</h1>
    <p>Sign in with the mesh token. It stays in this browser tab only.</p>
    <label for="login-token">Token</label>
    <input id="login-token" type="password" required autofocus aria-describedby="login-help">
    <p id="login-help" class="help">On the hub's machine: <code>cat .sheratan/hub_token</code></p>
    <div id="login-error" role="alert" ${message ? 'class="error"' : ''}>${esc(message || '')}</div>
    <button id="login-submit" type="submit">Sign in</button>
  </form>`;
  document.getElementById('login').onsubmit = async (e) => {
    e.preventDefault();
    const button = document.getElementById('login-submit');
    const box = document.getElementById('login-error');
    button.disabled = true;
    button.textContent = 'Checking…';
    state.token = document.getElementById('login-token').value.trim();
    try {
      await api('/api/overview');
      sessionStorage.setItem(TOKEN_KEY, state.token);
      if (!location.hash) location.hash = '#/overview';
      render();
      startStream();
    } catch (err) {
      state.token = '';
      box.className = 'error';
      box.textContent = explain(err);
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  };
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  state.jobs.clear();
  state.nodes.clear();
  renderLogin(message);
}

// ---------- charts ----------

function chart(points, key, label, kind) {
  if (!points.length) return `<div class="empty">No samples yet (Core samples the hub every 10 s).</div>`;
  const w = 600, hgt = 140, pad = 6;
  const values = points.map((p) => Number(p[key]) || 0);
  const max = Math.max(1, ...values);
  const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
  const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const y = (v) => hgt - pad - (v / max) * (hgt - 2 * pad);
  const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(values[i]).toFixed(1)}`).join(' ');
  const area = `${line} L${x(t1).toFixed(1)},${hgt - pad} L${x(t0).toFixed(1)},${hgt - pad} Z`;
  const now = values[values.length - 1];
  return `<div class="chart" role="img" aria-label="${esc(label)}: now ${now}, peak ${Math.max(...values)} over the last hour">
    <svg viewBox="0 0 ${w} ${hgt}" preserveAspectRatio="none">
      <line class="axis" x1="${pad}" y1="${hgt - pad}" x2="${w - pad}" y2="${hgt - pad}"/>
      <path class="area ${kind || ''}" d="${area}"/><path class="line ${kind || ''}" d="${line}"/>
    </svg>
    <div class="legend"><span>${new Date(t0).toLocaleTimeString()}</span><span>now ${esc(now)} · peak ${esc(Math.max(...values))}</span></div>
  </div>`;
}

// ---------- views ----------

renderers.overview = {
  title: () => 'Overview',
  async load() {
    const [overview, history, alerts] = await Promise.all([
      api('/api/overview'),
      api('/api/history'),
      api('/api/alerts?limit=5'),
    ]);
    const nodes = overview.nodes || { by_status: {}, by_role: {} };
    const data = (overview.components.data || {}).detail || {};
    const jobs = overview.jobs || {};
    const card = (value, label, sub) => `<div class="panel card"><div class="value">${esc(value ?? '—')}</div><div class="label">${esc(label)}</div>${sub ? `<div class="sub">${sub}</div>` : ''}</div>`;
    const components = Object.entries(overview.components).map(([name, c]) =>
      `<tr><td>${esc(name)}</td><td>${status(c.status)}</td><td class="muted">${esc(c.error || (c.latency_ms != null ? c.latency_ms.toFixed(1) + ' ms' : ''))}</td></tr>`).join('');
    const alertRows = (alerts.entries || []).slice().reverse().map((a) =>
      `<tr><td>${ago(a.ts)}</td><td>${esc(a.rule)}</td><td>${status(a.severity)}</td><td>${esc(a.message || '')}</td></tr>`).join('');
    const points = history.points || [];
    return `
      <div class="grid cards">
        ${card(nodes.by_status ? nodes.by_status.ONLINE : '—', 'nodes online', `${esc(nodes.by_status ? nodes.by_status.STALE : 0)} stale · ${esc(nodes.by_status ? nodes.by_status.DEAD : 0)} dead`)}
        ${card(data.queue_depth, 'queue depth')}
        ${card(data.inflight, 'inflight')}
        ${card(jobs.results_pending, 'results pending')}
        ${card(jobs.auth_failures_1m, 'failed auth, last minute')}
      </div>
      <div class="grid two gap-top">
        <section class="panel"><h3>Queue depth, last hour</h3>${chart(points, 'queue_depth', 'Queue depth')}</section>
        <section class="panel"><h3>Failed authentications per minute, last hour</h3>${chart(points, 'auth_failures_1m', 'Failed authentications', 'bad')}</section>
        <section class="panel"><h3>Components</h3><div class="table-wrap"><table><tbody>${components}</tbody></table></div></section>
        <section class="panel"><h3>Recent alerts</h3>${alertRows ? `<div class="table-wrap"><table><thead><tr><th>When</th><th>Rule</th><th>Severity</th><th>Message</th></tr></thead><tbody>${alertRows}</tbody></table></div>` : '<div class="empty">No alerts. The audit watcher raises them on bursts of security events.</div>'}</section>
      </div>`;
  },
};

renderers.nodes = {
  title: () => 'Nodes',
  async load() {
    const { nodes } = await api('/api/nodes');
    for (const n of nodes) state.nodes.set(n.node_id, n);
    if (!nodes.length) return '<div class="empty">No nodes yet. Workers, hosts, the broker, the relay and core appear here once they heartbeat.</div>';
    const rows = nodes.map((n) => {
      const flag = n.attestation === 'SPOOF_SUSPECT' ? 'flag-bad' : n.attestation === 'DRIFT' ? 'flag-warn' : '';
      const load = n.load ? `${n.load.inflight}/${n.load.capacity}` : '—';
      const accept = n.attestation !== 'OK' ? `<button type="button" class="secondary" data-accept="${esc(n.node_id)}">Accept attestation</button>` : '';
      return `<tr class="${flag}" data-node="${esc(n.node_id)}">
        <td class="mono">${esc(n.node_id)}</td><td>${esc(n.role)}</td>
        <td class="node-status">${status(n.status)}</td><td>${status(n.health)}</td>
        <td>${status(n.attestation)} ${accept}</td>
        <td>${ago(n.last_seen)}</td><td class="mono">${esc(n.build_id)}</td>
        <td>${(n.capabilities || []).map((c) => `<span class="chip">${esc(c)}</span>`).join('') || '<span class="muted">—</span>'}</td>
        <td>${esc(load)}</td></tr>`;
    }).join('');
    return `<section class="panel"><div class="table-wrap"><table>
      <thead><tr><th>Node</th><th>Role</th><th>Status</th><th>Health</th><th>Attestation</th><th>Last seen</th><th>Build</th><th>Capabilities</th><th>Load</th></tr></thead>
      <tbody>${rows}</tbody></table></div></section>`;
  },
  bind(root) {
    root.querySelectorAll('[data-accept]').forEach((b) => {
      b.onclick = async () => {
        b.disabled = true;
        try {
          await api(`/api/nodes/${encodeURIComponent(b.dataset.accept)}/attestation/accept`, { method: 'POST' });
          toast(`Accepted the attestation of ${b.dataset.accept}`);
          render({ quiet: true });
        } catch (err) { toast(explain(err), true); b.disabled = false; }
      };
    });
  },
};

const JOB_STATUSES = ['accepted', 'in_progress', 'completed', 'failed', 'cancelled'];
const jobFilter = { queue: '', status: '' };

function jobRow(j) {
  return `<tr data-job="${esc(j.job_id)}">
    <td class="mono"><a href="#/jobs/${esc(j.job_id)}">${shortId(j.job_id)}</a></td>
    <td>${esc(j.queue)}</td><td>${esc(j.kind)}</td><td class="job-status">${status(j.status)}</td>
    <td>${esc(j.attempt)}</td><td>${ago(j.updated_at)}</td></tr>`;
}

function updateJobRow(j) {
  const row = document.querySelector(`tr[data-job="${CSS.escape(j.job_id)}"]`);
  if (row) {
    row.replaceWith(h(`<table><tbody>${jobRow(state.jobs.get(j.job_id) || j)}</tbody></table>`).querySelector('tr'));
    return;
  }
  const body = document.getElementById('job-rows');
  const matches = (!jobFilter.queue || jobFilter.queue === j.queue) && (!jobFilter.status || jobFilter.status === j.status);
  if (body && matches && currentView() === 'jobs') {
    const empty = document.getElementById('jobs-empty');
    if (empty) empty.remove();
    document.getElementById('jobs-table').hidden = false;
    body.prepend(h(`<table><tbody>${jobRow(j)}</tbody></table>`).querySelector('tr'));
  }
}

renderers.jobs = {
  title: () => 'Jobs',
  keepForms: true,
  async load() {
    const q = new URLSearchParams({ limit: '100' });
    if (jobFilter.queue) q.set('queue', jobFilter.queue);
    if (jobFilter.status) q.set('status', jobFilter.status);
    const { jobs } = await api(`/api/jobs?${q}`);
    for (const j of jobs) state.jobs.set(j.job_id, j);
    return `
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
      </section>
      <section class="panel gap-top">
        <div class="row gap-bottom-small">
          <label class="field" for="filter-queue">Queue<input id="filter-queue" value="${esc(jobFilter.queue)}" placeholder="all" size="12"></label>
          <label class="field" for="filter-status">Status<select id="filter-status"><option value="">all</option>${JOB_STATUSES.map((s) => `<option ${s === jobFilter.status ? 'selected' : ''}>${s}</option>`).join('')}</select></label>
          <button type="button" class="secondary" id="filter-apply">Apply</button>
        </div>
        <div id="jobs-list">${this.list(jobs)}</div>
      </section>`;
  },
  list(jobs) {
    return `${jobs.length ? '' : '<div class="empty" id="jobs-empty">No jobs match. Submit one above, or with <code>sheratan submit</code>.</div>'}
      <div class="table-wrap" id="jobs-table" ${jobs.length ? '' : 'hidden'}><table>
        <thead><tr><th>Job</th><th>Queue</th><th>Kind</th><th>Status</th><th>Attempt</th><th>Updated</th></tr></thead>
        <tbody id="job-rows">${jobs.map(jobRow).join('')}</tbody></table></div>`;
  },
  refresh() { /* rows update in place from events */ },
  bind(root) {
    const dispatch = root.querySelector('#submit-dispatch');
    const queue = root.querySelector('#submit-queue');
    dispatch.onchange = () => {
      queue.disabled = dispatch.value !== 'queue';
      queue.value = dispatch.value === 'queue' ? 'default' : dispatch.value;
    };
    root.querySelector('#filter-apply').onclick = () => {
      jobFilter.queue = root.querySelector('#filter-queue').value.trim();
      jobFilter.status = root.querySelector('#filter-status').value;
      render();
    };
    root.querySelector('#submit-form').onsubmit = async (e) => {
      e.preventDefault();
      const out = root.querySelector('#submit-result');
      let payload;
      try {
        payload = JSON.parse(root.querySelector('#submit-payload').value || 'null');
      } catch (err) {
        out.innerHTML = `<span class="error">The payload is not JSON: ${esc(err.message)}</span>`;
        return;
      }
      const body = {
        kind: root.querySelector('#submit-kind').value.trim(),
        dispatch: dispatch.value,
        payload,
        priority: Number(root.querySelector('#submit-priority').value) || 0,
      };
      if (dispatch.value === 'queue') body.queue = queue.value.trim() || 'default';
      const button = root.querySelector('#submit-button');
      button.disabled = true;
      try {
        const answer = await api('/api/jobs', { method: 'POST', body });
        out.innerHTML = `Submitted <a href="#/jobs/${esc(answer.job_id)}" class="mono">${shortId(answer.job_id)}</a> to ${esc(answer.queue)}`;
        const job = { job_id: answer.job_id, queue: answer.queue, kind: body.kind, status: answer.status, attempt: 0, updated_at: Date.now() };
        state.jobs.set(job.job_id, { ...job, ...(state.jobs.get(job.job_id) || {}) });
        updateJobRow(state.jobs.get(job.job_id));
      } catch (err) {
        out.innerHTML = `<span class="error">${esc(explain(err))}</span>`;
      } finally {
        button.disabled = false;
      }
    };
  },
};

renderers.job = {
  title: () => `Job ${routeId().slice(0, 8)}`,
  async load() {
    const id = routeId();
    const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
    const live = state.jobs.get(id);
    const canCancel = job.status === 'accepted' || job.status === 'in_progress';
    const canRequeue = job.status === 'failed' || job.status === 'cancelled';
    const pretty = (v) => `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;
    return `
      <div class="grid two">
        <section class="panel"><h3>Job</h3><dl class="kv">
          <dt>ID</dt><dd class="mono">${esc(job.job_id)}</dd>
          <dt>Status</dt><dd id="job-status">${status(job.status)}${live && live.status !== job.status ? ' ' + status(live.status) : ''}</dd>
          <dt>Queue</dt><dd>${esc(job.queue)}</dd><dt>Kind</dt><dd>${esc(job.kind)}</dd>
          <dt>Attempts</dt><dd>${esc(job.attempt)} of ${esc(job.max_attempts)}</dd>
          <dt>Priority</dt><dd>${esc(job.priority)}</dd>
          <dt>Requires</dt><dd>${(job.required_capabilities || []).map((c) => `<span class="chip">${esc(c)}</span>`).join('') || '—'}</dd>
          <dt>Created</dt><dd>${when(job.created_at)}</dd><dt>Updated</dt><dd>${when(job.updated_at)}</dd>
          <dt>Finished</dt><dd>${when(job.finished_at)}</dd>
          <dt>Lease</dt><dd>${job.lease ? `${esc(job.lease.node_id)} until ${when(job.lease.expires_at)}` : '—'}</dd>
          ${job.queue === 'auction' ? `<dt>Auction</dt><dd><a href="#/auctions">see the auctions</a></dd>` : ''}
        </dl>
        <div class="row gap-top">
          ${canCancel ? '<button type="button" class="danger" id="job-cancel">Cancel</button>' : ''}
          ${canRequeue ? '<button type="button" class="secondary" id="job-requeue">Requeue</button>' : ''}
          <a href="#/jobs">Back to jobs</a>
        </div></section>
        <section class="panel stack">
          <div><h3>Payload</h3>${pretty(job.payload)}</div>
          <div><h3>Result</h3>${job.result != null ? pretty(job.result) : '<div class="empty">No result yet.</div>'}</div>
          ${job.error ? `<div><h3>Error</h3><div class="error">${esc(job.error.message)} ${job.error.retryable ? badge('retryable', 'warn') : badge('final', 'bad')}</div></div>` : ''}
        </section>
      </div>`;
  },
  bind(root) {
    const id = routeId();
    const act = (selector, path, done) => {
      const b = root.querySelector(selector);
      if (!b) return;
      b.onclick = async () => {
        b.disabled = true;
        try { await api(path, { method: 'POST' }); toast(done); render({ quiet: true }); } catch (err) { toast(explain(err), true); b.disabled = false; }
      };
    };
    act('#job-cancel', `/api/jobs/${encodeURIComponent(id)}/cancel`, 'Job cancelled');
    act('#job-requeue', `/api/jobs/${encodeURIComponent(id)}/requeue`, 'Job requeued');
  },
};

renderers.auctions = {
  title: () => 'Auctions',
  async load() {
    const { auctions } = await api('/api/auctions?limit=50');
    if (!auctions.length) return '<div class="empty">No auctions yet. Submit a job with dispatch "auction" and the broker asks the hosts for bids.</div>';
    return auctions.map((a) => `
      <section class="panel gap-bottom" data-auction="${esc(a.job_id)}">
        <div class="row spread">
          <div><a class="mono" href="#/jobs/${esc(a.job_id)}">${shortId(a.job_id)}</a> · winner <strong>${esc(a.winner || '—')}</strong> · ${a.rounds.length} round${a.rounds.length === 1 ? '' : 's'}</div>
          <div>${a.rounds.length ? status(a.rounds[a.rounds.length - 1].outcome === 'completed' ? 'completed' : a.rounds[a.rounds.length - 1].outcome) : ''}</div>
        </div>
        ${a.rounds.map((r) => `
          <div class="table-wrap gap-top-small"><table>
            <caption>Round ${esc(r.round)} · ${esc(r.outcome)} · bids in ${Number(r.bid_ms || 0).toFixed(1)} ms · ${esc(r.elapsed_ms)} ms in all · ${ago(r.started_at)}</caption>
            <thead><tr><th>Host</th><th>Answer</th><th>Price</th><th>ETA</th><th>Reason</th></tr></thead>
            <tbody>${r.bids.map((b) => `<tr><td class="mono">${esc(b.node_id)}${b.node_id === r.winner ? ' ' + badge('winner', 'ok') : ''}</td>
              <td>${b.accept ? badge('bid', 'info') : badge('declined', '')}</td><td>${b.accept ? esc(b.price.toFixed(3)) : '—'}</td>
              <td>${b.accept ? esc(b.eta_ms) + ' ms' : '—'}</td><td class="muted">${esc(b.reason)}</td></tr>`).join('') || '<tr><td colspan="5" class="muted">No host was asked (none ONLINE with the capabilities).</td></tr>'}</tbody>
          </table></div>`).join('')}
      </section>`).join('');
  },
};

renderers.security = {
  title: () => 'Security',
  async load() {
    const [alerts, audit] = await Promise.all([api('/api/alerts?limit=100'), api('/api/audit?limit=200')]);
    const alertRows = (alerts.entries || []).slice().reverse().map((a) => `
      <tr data-alert-rule="${esc(a.rule)}"><td>${when(a.ts)}</td><td>${esc(a.rule)}</td><td>${status(a.severity)}</td>
      <td class="mono">${esc(a.source)}</td><td>${esc(a.count)}</td><td>${esc(a.message)}</td></tr>`).join('');
    const auditRows = (audit.entries || []).slice().reverse().map((e) => `
      <tr><td>${when(e.ts)}</td><td>${esc(e.event)}${e.count > 1 ? ' ×' + esc(e.count) : ''}</td><td>${status(e.severity)}</td><td>${esc(e.plane || '')}</td>
      <td class="mono">${esc(e.remote_addr || '')}</td><td class="mono">${esc(e.node_id || '')}</td>
      <td class="muted mono detail">${esc(e.detail ? JSON.stringify(e.detail) : '')}</td></tr>`).join('');
    return `
      <section class="panel"><h3>Alerts</h3>
        ${alertRows ? `<div class="table-wrap"><table id="alerts-table"><thead><tr><th>When</th><th>Rule</th><th>Severity</th><th>Source</th><th>Count</th><th>Message</th></tr></thead><tbody>${alertRows}</tbody></table></div>`
          : '<div class="empty" id="alerts-empty">No alerts. They appear here when the audit watcher sees a burst (e.g. 10 failed logins from one address in a minute).</div>'}
      </section>
      <section class="panel gap-top"><h3>Audit log (newest first)</h3>
        ${auditRows ? `<div class="table-wrap"><table><thead><tr><th>When</th><th>Event</th><th>Severity</th><th>Plane</th><th>Peer</th><th>Node</th><th>Detail</th></tr></thead><tbody>${auditRows}</tbody></table></div>`
          : '<div class="empty">The audit log is empty.</div>'}
      </section>`;
  },
};

renderers.relay = {
  title: () => 'Relay',
  async load() {
    const [overview, jobs] = await Promise.all([api('/api/overview'), api('/api/jobs?queue=llm&limit=20')]);
    const relay = overview.components.relay || {};
    let sessions = null, sessionsError = '';
    try { sessions = (await api('/api/relay/sessions')).sessions; } catch (err) { sessionsError = explain(err); }
    const backends = (relay.detail && relay.detail.backends) || {};
    const backendRows = Object.entries(backends).map(([name, b]) => `<tr><td>${esc(name)}</td><td>${status(b.state)}</td>
      <td class="muted">${esc(b.version || b.detail || b.base_url || (b.source ? JSON.stringify(b.source) : ''))}</td></tr>`).join('');
    const sessionRows = (sessions || []).map((s) => `<tr><td class="mono">${s.job_id ? `<a href="#/jobs/${esc(s.job_id)}">${shortId(s.job_id)}</a>` : 'direct'}</td>
      <td>${esc(s.profile)}</td><td class="mono">${esc(s.url)}</td><td>${ago(s.started_at)}</td></tr>`).join('');
    return `
      <div class="grid two">
        <section class="panel"><h3>Relay</h3>
          ${relay.status === 'up' ? `<table><tbody>${backendRows}</tbody></table>` : `<div class="error">The relay is down: ${esc(relay.error || 'no answer')}</div>`}
        </section>
        <section class="panel"><h3>Open sessions (tabs)</h3>
          ${sessionsError ? `<div class="error">${esc(sessionsError)}</div>` : sessionRows ? `<div class="table-wrap"><table><thead><tr><th>Job</th><th>Profile</th><th>Page</th><th>Started</th></tr></thead><tbody>${sessionRows}</tbody></table></div>` : '<div class="empty">No tab is open.</div>'}
        </section>
      </div>
      <section class="panel gap-top"><h3>Recent LLM jobs</h3>
        ${jobs.jobs.length ? `<div class="table-wrap"><table><thead><tr><th>Job</th><th>Queue</th><th>Kind</th><th>Status</th><th>Attempt</th><th>Updated</th></tr></thead><tbody>${jobs.jobs.map(jobRow).join('')}</tbody></table></div>`
          : '<div class="empty">No LLM jobs yet. Submit one with dispatch "llm".</div>'}
      </section>`;
  },
};

// ---------- start ----------

async function boot() {
  try {
    const config = await (await fetch('/config.json')).json();
    state.coreUrl = config.core_url.replace(/\/$/, '');
    state.version = config.version || '';
  } catch (e) {
    app.innerHTML = '<div class="login"><div class="error">The dashboard cannot read its configuration (/config.json). Restart sheratan dashboard.</div></div>';
    return;
  }
  window.addEventListener('hashchange', () => render());
  if (state.token) {
    render();
    startStream();
  } else {
    renderLogin();
  }
}

boot();
