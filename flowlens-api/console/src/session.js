// Signing in and out. The credential is checked against /session, which also says
// the role: the console shows edit controls only to editors and admins, key and scan
// management only to admins (the API enforces the same; hiding is for clarity).

import { api, setCredential, credential } from './api.js';
import { h, replace } from './dom.js';

const RANK = { viewer: 0, editor: 1, admin: 2 };
export let session = null;

export function can(role) {
  return !!session && RANK[session.role] >= RANK[role];
}

/** The signed-in session, or null (no credential, or the API refused it). */
export async function restore() {
  if (!credential()) return null;
  try {
    session = await api.quiet('/session');
    return session;
  } catch {
    session = null;
    return null;
  }
}

export function signOut() {
  setCredential(null);
  session = null;
}

/** Draws the sign-in page into `root`; resolves with the session once accepted. */
export function signInPage(root, message) {
  return new Promise((resolve) => {
    const input = h('textarea#credential', {
      rows: 4,
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'eyJhbGciOi…  or  flk_…',
      'aria-label': 'token or API key',
    });
    const error = h('p.error#signin-error', { role: 'alert' }, message || '');
    const form = h(
      'form#signin',
      {
        onsubmit: async (ev) => {
          ev.preventDefault();
          const value = input.value.trim();
          if (!value) return;
          setCredential(value);
          const s = await restore();
          if (s) resolve(s);
          else {
            setCredential(null);
            replace(error, 'The API refused this credential (unknown, expired, revoked or malformed).');
          }
        },
      },
      h('h1', 'FlowLens'),
      h('p', 'Sign in with a token (', h('code', 'flowlens-api token create'), ') or an API key.'),
      h('label', { for: 'credential' }, 'Token or API key'),
      input,
      h('button#signin-submit', { type: 'submit' }, 'Sign in'),
      error,
      h('p.hint', 'The credential is kept in this tab only, and forgotten when it closes.'),
    );
    replace(root, h('div.signin-page', form));
    input.focus();
  });
}
