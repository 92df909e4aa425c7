// The view's state in the URL's fragment (#/map?group=subnet&environment=prod...), so
// a link shows the same view. The fragment never reaches the server or its logs.

export function read() {
  const raw = location.hash.replace(/^#/, '') || '/map';
  const [path, q = ''] = raw.split('?');
  return { page: path.replace(/^\//, '') || 'map', params: new URLSearchParams(q) };
}

/** Writes the view's parameters without adding a history entry per keystroke. */
let last = '';
/** The fragment the console itself last wrote. */
export function written() {
  return last;
}

export function write(page, params, { push = false } = {}) {
  const clean = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '' || v === false) continue;
    clean.set(k, v === true ? '1' : String(v));
  }
  const q = clean.toString();
  const hash = `#/${page}${q ? `?${q}` : ''}`;
  last = hash;
  if (location.hash === hash) return;
  if (push) history.pushState(null, '', hash);
  else history.replaceState(null, '', hash);
}
