// Live updates: Core's server-sent events, read with fetch so the token goes in a header
// (EventSource cannot send one), folded into the state and the views.

import { currentView, hooks, state } from './core.js';
import { toast } from './widgets.js';
import { updateJobProgress, updateJobRow } from './views/jobs.js';

export function setLive(value) {
  state.live = value;
  const el = document.getElementById('live');
  if (!el) return;
  el.className = 'live ' + (value === 'on' ? 'on' : value === 'off' ? 'off' : '');
  el.textContent = value === 'on' ? 'Live' : value === 'off' ? 'Disconnected' : 'Connecting…';
}

export async function startStream() {
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
      await readEvents(response.body.getReader());
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setLive('off');
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(wait * 2, 15000);
  }
}

// Splits the stream into events (blank-line separated blocks of `event:` and `data:` lines).
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
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
        let parsed;
        try { parsed = JSON.parse(data.join('\n')); } catch (e) { continue; /* a keep-alive or a torn line */ }
        // One event that cannot be shown must not cost the stream (and the events after it).
        try { onEvent(name, parsed); } catch (e) { console.warn('event not shown', name, e); }
      }
    }
  }
}

export function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

let rerenderTimer = null;
function rerenderSoon(views) {
  if (!views.includes(currentView())) return;
  clearTimeout(rerenderTimer);
  rerenderTimer = setTimeout(() => hooks.render({ quiet: true }), 150);
}

function onEvent(name, data) {
  if (name === 'job') {
    const old = state.jobs.get(data.job_id) || {};
    state.jobs.set(data.job_id, { ...old, ...data });
    updateJobRow(data);
    // An auction's record changes with its job: the auctions view follows job events too.
    rerenderSoon(['overview', 'relay', 'job', 'auctions', 'schedules']);
  } else if (name === 'progress') {
    updateJobProgress(data);
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
    hooks.render({ quiet: true });
  } else if (name === 'lagged') {
    hooks.render({ quiet: true });
  }
}
