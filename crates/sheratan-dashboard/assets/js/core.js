// What every view shares: the app's state, Core API calls that turn failures into messages an
// operator can act on, the hash routes, and hooks the entry module fills in (so views can
// re-render without importing it).

export const TOKEN_KEY = 'sheratan.token';

export const state = {
  coreUrl: '',
  version: '',
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  live: 'off',
  hubDown: false,
  jobs: new Map(), // job_id -> latest job event or view
  nodes: new Map(), // node_id -> node view (or event fields)
  alerts: [],
  stream: null,
  who: null, // Core's /api/whoami: the credential signed in and its role (none: the mesh token)
};

// What the signed-in credential may do (the same split as the hub's roles; Core and the hub
// refuse anything else anyway, this only keeps buttons that would fail off the page).
export function can(action) {
  const role = state.who ? state.who.role || 'admin' : 'admin';
  switch (action) {
    case 'read': return role === 'admin' || role === 'read';
    case 'submit': return role === 'admin' || role === 'submit';
    case 'admin': return role === 'admin';
    default: return false;
  }
}

// Filled by app.js.
export const hooks = {
  render: async () => {},
  logout: () => {},
};

export const VIEWS = [
  ['overview', 'Overview'],
  ['nodes', 'Nodes'],
  ['jobs', 'Jobs'],
  ['queues', 'Queues'],
  ['schedules', 'Schedules'],
  ['auctions', 'Auctions'],
  ['security', 'Security'],
  ['relay', 'Relay'],
  ['tokens', 'Tokens'],
];

// The views the signed-in credential may open: a submit credential sees its jobs only, the
// Tokens view is an admin's.
export function views() {
  return VIEWS.filter(([v]) => (v === 'jobs' ? can('read') || can('submit') : v === 'tokens' ? can('admin') : can('read')));
}

export function currentView() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [view, id] = hash.split('/');
  const open = views();
  if (view === 'jobs' && id && open.some(([v]) => v === 'jobs')) return 'job';
  if (open.some(([v]) => v === view)) return view;
  return open.length ? open[0][0] : 'overview';
}

export function routeId() {
  return decodeURIComponent(location.hash.replace(/^#\/?/, '').split('/')[1] || '');
}

export class ApiError extends Error {
  constructor(kind, message, extra) {
    super(message);
    this.kind = kind;
    Object.assign(this, extra || {});
  }
}

// What the operator should read when Core cannot be reached or the token is wrong.
export function explain(err) {
  if (err.kind === 'down') {
    return `Cannot reach the Core API at ${state.coreUrl}. Is it running (sheratan up, or sheratan core)?`;
  }
  if (err.code === 'AUTH_FAIL') {
    return 'The token does not match the hub\'s token or any live credential. Use the contents of $SHERATAN_HOME/hub_token (or SHERATAN_HUB_TOKEN), or a credential from sheratan token create.';
  }
  return `${err.code ? err.code + ': ' : ''}${err.message}${err.hint ? ' — ' + err.hint : ''}`;
}

export async function api(path, options = {}) {
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
    if (error.code === 'AUTH_FAIL' && path !== '/api/whoami') hooks.logout('The token was refused: log in again.');
    throw new ApiError('api', error.message || `HTTP ${response.status}`, { status: response.status, code: error.code, hint: error.hint });
  }
  return body;
}
