// Sheratan dashboard: a small single-page app over the Core API. No framework and no build
// step: ES modules the binary embeds (js/), one per concern and one per view. Every piece of
// data comes from Core with the token from sessionStorage in an Authorization header (never
// in a URL); live updates come from Core's server-sent events (js/live.js). All markup is
// built with the html`…` tag (js/html.js), which escapes what it interpolates.

import { can, currentView, explain, hooks, state, views } from './js/core.js';
import { html, put } from './js/html.js';
import { setLive, startStream } from './js/live.js';
import { logout, renderLogin, signIn } from './js/login.js';
import { auctions } from './js/views/auctions.js';
import { job, jobs } from './js/views/jobs.js';
import { nodes } from './js/views/nodes.js';
import { overview } from './js/views/overview.js';
import { relay } from './js/views/relay.js';
import { security } from './js/views/security.js';
import { queues } from './js/views/queues.js';
import { schedules } from './js/views/schedules.js';
import { tokens } from './js/views/tokens.js';

const renderers = { overview, nodes, jobs, job, queues, schedules, auctions, security, relay, tokens };
const app = document.getElementById('app');

function shell(title) {
  const view = currentView() === 'job' ? 'jobs' : currentView();
  const links = views().map(([v, label]) => html`<a href="#/${v}" ${v === view && html`aria-current="page"`}>${label}</a>`);
  return html`
  <div class="shell">
    <nav class="side" aria-label="Sections">
      <div class="brand"><img src="/favicon.svg" alt="">Sheratan</div>
      ${links}
      <div class="foot"><span id="signed-in-as">${state.who ? state.who.credential : ''}</span><br>Core: ${state.coreUrl}<br>${state.version}</div>
    </nav>
    <main class="main">
      <div class="top">
        <h2>${title}</h2>
        <div class="right"><span id="live" class="live">Connecting…</span>
          <button class="secondary" id="logout" type="button">Log out</button></div>
      </div>
      ${state.hubDown && html`<div class="banner" role="alert">The hub is not answering Core. Data shown may be stale.</div>`}
      <div id="view"><div class="loading">Loading…</div></div>
    </main>
  </div>`;
}

let renderSeq = 0;

// Renders the current route. `quiet` (live updates) keeps the shell and, in views with
// forms, what the operator is typing.
async function render(opts = {}) {
  if (!state.token) return renderLogin();
  const seq = ++renderSeq;
  const r = renderers[currentView()];
  const focused = document.activeElement && document.activeElement.id;
  if (!opts.quiet || !document.getElementById('view')) {
    put(app, shell(r.title()));
    document.getElementById('logout').onclick = () => logout();
    setLive(state.live);
  }
  try {
    const markup = await r.load();
    if (seq !== renderSeq) return;
    const target = document.getElementById('view');
    if (opts.quiet && target.querySelector('form') && r.keepForms) {
      r.refresh && r.refresh(target, markup);
    } else {
      put(target, markup);
      r.bind && r.bind(target);
    }
    if (focused) { const el = document.getElementById(focused); if (el) el.focus(); }
  } catch (err) {
    if (seq !== renderSeq) return;
    showError(err);
  }
}

function showError(err) {
  const target = document.getElementById('view');
  if (!target) return;
  put(target, html`<div class="error" role="alert">${explain(err)}</div>
    <p><button type="button" class="secondary" id="retry">Retry</button></p>`);
  document.getElementById('retry').onclick = () => render();
}

async function boot() {
  hooks.render = render;
  hooks.logout = logout;
  try {
    const config = await (await fetch('/config.json')).json();
    state.coreUrl = config.core_url.replace(/\/$/, '');
    state.version = config.version || '';
  } catch (e) {
    put(app, html`<div class="login"><div class="error">The dashboard cannot read its configuration (/config.json). Restart sheratan dashboard.</div></div>`);
    return;
  }
  window.addEventListener('hashchange', () => render());
  if (state.token) {
    try {
      await signIn();
    } catch (err) {
      logout(explain(err));
      return;
    }
    render();
    if (can('read')) startStream();
  } else {
    renderLogin();
  }
}

boot();
