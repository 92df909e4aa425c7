// The console's entry: sign in, then the shell (map, changes, alerts, admin) over one
// WebSocket for live updates.

import { whenUnauthorized } from './api.js';
import { h, replace } from './dom.js';
import { restore, signInPage, signOut, can } from './session.js';
import { read, written } from './url.js';
import { connect } from './live.js';
import { mapPage } from './mappage.js';
import { changesPage, alertsPage } from './changes.js';
import { adminPage } from './admin.js';

const app = document.getElementById('app');
let stopLive = null;
let leave = () => {};

async function start(message) {
  const s = (await restore()) || (await signInPage(app, message));
  signingIn = false;
  shell(s);
}

/** Leaves the signed-in shell: the socket, the page, the credential. */
function teardown() {
  window.onhashchange = null;
  stopLive?.();
  stopLive = null;
  leave();
  leave = () => {};
  signOut();
}

// Several requests in flight may all be refused: one sign-in page.
let signingIn = false;
function refused() {
  if (signingIn) return;
  signingIn = true;
  teardown();
  start('Your credential was refused (expired or revoked): sign in again.');
}
whenUnauthorized(refused);

function shell(s) {
  const live = { onChange: () => {}, onResync: () => {} };
  const liveState = h('span#live.badge', 'connecting');
  const main = h('main#main');
  const nav = h('nav',
    h('a', { href: '#/map', 'data-page': 'map' }, 'Map'),
    h('a', { href: '#/changes', 'data-page': 'changes' }, 'Changes'),
    h('a', { href: '#/alerts', 'data-page': 'alerts' }, 'Alerts'),
    can('admin') ? h('a', { href: '#/admin', 'data-page': 'admin' }, 'Admin') : null);
  replace(app,
    h('header',
      h('span.brand', 'FlowLens'),
      nav,
      h('span.spacer'),
      liveState,
      h('span#whoami', s.subject, ' ', h('span#role.badge', s.role)),
      h('button#signout', {
        onclick: () => {
          teardown();
          history.replaceState(null, '', location.pathname);
          start();
        },
      }, 'Sign out')),
    main);
  stopLive?.();
  stopLive = connect({
    onChange: (e) => live.onChange(e),
    onResync: () => live.onResync(),
    onRefused: refused,
    onState: (state) => {
      replace(liveState, state);
      liveState.className = `badge ${state}`;
    },
  });
  const route = () => {
    const { page } = read();
    leave();
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
    const pages = { map: mapPage, changes: changesPage, alerts: alertsPage, admin: can('admin') ? adminPage : mapPage };
    leave = (pages[page] || mapPage)(main, live) || (() => {});
  };
  window.onhashchange = () => {
    // The map keeps the fragment up to date itself (without events); any other change
    // (a pasted link, back and forward) shows the view it names.
    if (location.hash !== written()) route();
  };
  route();
}

start();
