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
};

// Filled by app.js.
export const hooks = {
  render: async () => {},
  logout: () => {},
};

export const VIEWS = [
  ['overview', 'Overview'],
  ['nodes', 'Nodes'],
  ['jobs', 'Jobs'],
  ['auctions', 'Auctions'],
  ['security', 'Security'],
  ['relay', 'Relay'],
];

export function currentView() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [view, id] = hash.split('/');
  if (view === 'jobs' && id) return 'job';
  return VIEWS.some(([v]) => v === view) ? view : 'overview';
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
    return 'The token does not match the hub\'s token. Use the contents of $SHERATAN_HOME/hub_token (or SHERATAN_HUB_TOKEN).';
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
    if (error.code === 'AUTH_FAIL' && path !== '/api/overview') hooks.logout('The token was refused: log in again.');
    throw new ApiError('api', error.message || `HTTP ${response.status}`, { status: response.status, code: error.code, hint: error.hint });
  }
  return body;
}
