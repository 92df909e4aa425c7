// The API client: the credential lives in this tab's sessionStorage (never the URL,
// never localStorage: closing the tab forgets it), and every call sends it.

const KEY = 'flowlens.credential';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export function credential() {
  return sessionStorage.getItem(KEY);
}

export function setCredential(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** Called when the API says the credential is no good (401). */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function headers(extra) {
  const c = credential();
  const h = { Accept: 'application/json', ...extra };
  // A JWT has two dots; an API key (flk_...) does not.
  if (c && c.split('.').length === 3) h.Authorization = `Bearer ${c}`;
  else if (c) h['X-API-Key'] = c;
  return h;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function call(method, path, body, { raw = false, quiet = false } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, `the API did not answer (${e.message})`);
  }
  if (response.status === 401) {
    // The sign-in form's own check reports a refusal itself.
    if (!quiet) onUnauthorized();
    throw new ApiError(401, 'signed out: the credential was refused');
  }
  if (!response.ok) {
    let detail = '';
    try {
      const p = await response.json();
      detail = p.detail || p.title || '';
    } catch {
      // not a problem document
    }
    const retry = response.headers.get('Retry-After');
    throw new ApiError(response.status, `${response.status}: ${detail || response.statusText}${retry ? ` (retry in ${retry} s)` : ''}`);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const api = {
  get: (path, params) => call('GET', path + query(params)),
  /** GET without signing the tab out on 401 (the sign-in form's check). */
  quiet: (path) => call('GET', path, undefined, { quiet: true }),
  raw: (path, params) => call('GET', path + query(params), undefined, { raw: true }),
  post: (path, body) => call('POST', path, body),
  patch: (path, body) => call('PATCH', path, body),
  del: (path) => call('DELETE', path),
};

/** Every page of a paginated list, up to `limit` items; `truncated` is set on the
 * array when the list had more. */
export async function all(path, params, limit = 2000) {
  const items = [];
  for (let page = 1; ; page++) {
    const r = await api.get(path, { ...params, page, page_size: 200 });
    items.push(...r.items);
    const more = r.items.length === 200 && (r.total_capped || items.length < r.total);
    if (!more) return items;
    if (items.length >= limit) {
      items.truncated = true;
      return items;
    }
  }
}
