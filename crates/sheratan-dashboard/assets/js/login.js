// Signing in with the mesh token or a credential (kept in this tab's sessionStorage only) and
// out; who signed in decides which views and buttons show.

import { api, can, explain, hooks, state, TOKEN_KEY } from './core.js';
import { html, put } from './html.js';
import { startStream, stopStream } from './live.js';

export function renderLogin(message) {
  stopStream();
  const app = document.getElementById('app');
  put(app, html`
  <form class="login" id="login" autocomplete="off">
    <h1>Sheratan</h1>
    <p>Sign in with the mesh token or a credential. It stays in this browser tab only.</p>
    <label for="login-token">Token</label>
    <input id="login-token" type="password" required autofocus aria-describedby="login-help">
    <p id="login-help" class="help">On the hub's machine: <code>cat .sheratan/hub_token</code>, or <code>sheratan token create --role read --name me</code></p>
    <div id="login-error" role="alert" class="${message ? 'error' : ''}">${message || ''}</div>
    <button id="login-submit" type="submit">Sign in</button>
  </form>`);
  document.getElementById('login').onsubmit = async (e) => {
    e.preventDefault();
    const button = document.getElementById('login-submit');
    const box = document.getElementById('login-error');
    button.disabled = true;
    button.textContent = 'Checking…';
    state.token = document.getElementById('login-token').value.trim();
    try {
      await signIn();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      if (!location.hash) location.hash = '#/overview';
      hooks.render();
      if (can('read')) startStream();
    } catch (err) {
      state.token = '';
      state.who = null;
      box.className = 'error';
      box.textContent = explain(err);
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  };
}

// Asks Core who the token is; a node credential has nothing to do here.
export async function signIn() {
  state.who = await api('/api/whoami');
  if (!can('read') && !can('submit')) {
    throw new Error(`${state.who.credential} is a node's credential: sign in with the mesh token or an admin, read or submit credential.`);
  }
}

export function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  state.who = null;
  state.jobs.clear();
  state.nodes.clear();
  renderLogin(message);
}
