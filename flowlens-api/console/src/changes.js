// What changed: the change feed (live over the WebSocket) and the alerts, which
// editors acknowledge and resolve.

import { api } from './api.js';
import { h, replace, when, toast } from './dom.js';
import { can } from './session.js';

const TYPES = ['', 'new_asset', 'new_dependency', 'removed_asset', 'removed_dependency', 'asset_changed', 'dependency_changed'];

function describe(e) {
  const s = e.after_state || e.before_state || {};
  const name = s.name || s.ip_addresses?.[0] || (s.port !== undefined ? `${s.inferred_service || ''} ${s.port}` : '');
  return name ? String(name) : '';
}

export function changesPage(root, live) {
  const params = { type: '', page: 1 };
  const list = h('tbody#changes');
  const pager = h('span.muted');
  const load = async () => {
    try {
      const r = await api.get('/changes', { type: params.type, page: params.page, page_size: 50 });
      replace(list, r.items.map((e) => h('tr', { 'data-change': e.id },
        h('td', when(e.detected_at)),
        h('td', h('span', { class: `badge ${e.change_type}` }, e.change_type)),
        h('td', h('a', { href: `#/map?sel=${e.entity_id}&kind=${e.entity_type === 'dependency' ? 'dependency' : 'asset'}` }, e.entity_type)),
        h('td', describe(e)))));
      replace(pager, `page ${r.page} of ${Math.max(1, Math.ceil(r.total / 50))}${r.total_capped ? '+' : ''}`);
    } catch (err) {
      toast(err.message, 'error');
    }
  };
  const type = h('select#change-type', { onchange: (ev) => { params.type = ev.target.value; params.page = 1; load(); } },
    TYPES.map((t) => h('option', { value: t }, t || 'all types')));
  replace(root, h('div.page',
    h('h1', 'Changes'),
    h('div.toolbar', type,
      h('button', { onclick: () => { params.page = Math.max(1, params.page - 1); load(); } }, '‹ newer'),
      h('button', { onclick: () => { params.page += 1; load(); } }, 'older ›'), pager),
    h('table.list', h('thead', h('tr', h('th', 'when'), h('th', 'change'), h('th', 'entity'), h('th', 'what'))), list)));
  let pending = null;
  live.onChange = () => {
    if (params.page !== 1) return;
    clearTimeout(pending);
    pending = setTimeout(load, 200);
  };
  live.onResync = load;
  load();
  return () => {
    live.onChange = () => {};
    live.onResync = () => {};
  };
}

export function alertsPage(root) {
  const params = { status: 'open' };
  const list = h('tbody#alerts');
  const load = async () => {
    try {
      const r = await api.get('/alerts', { status: params.status, page_size: 100 });
      replace(list, r.items.length ? r.items.map(row) : h('tr', h('td', { colspan: 6 }, h('span.muted', 'no alerts'))));
    } catch (err) {
      toast(err.message, 'error');
    }
  };
  const setStatus = async (a, status) => {
    try {
      await api.patch(`/alerts/${a.id}`, { status });
      toast(`alert ${status}`);
      load();
    } catch (err) {
      toast(err.message, 'error');
    }
  };
  const row = (a) => h('tr', { 'data-alert': a.id },
    h('td', when(a.created_at)),
    h('td', h('span', { class: `badge ${a.severity}` }, a.severity)),
    h('td', a.title, a.description ? h('div.muted', a.description) : null),
    h('td.status', a.status),
    h('td', a.acknowledged_by ? `ack: ${a.acknowledged_by}` : '', a.resolved_by ? ` resolved: ${a.resolved_by}` : ''),
    h('td', can('editor') ? [
      a.status === 'open' ? h('button.ack', { 'data-edit': '', onclick: () => setStatus(a, 'acknowledged') }, 'Acknowledge') : null,
      a.status !== 'resolved' ? h('button.resolve', { 'data-edit': '', onclick: () => setStatus(a, 'resolved') }, 'Resolve') : null,
    ] : null));
  const status = h('select#alert-status', { onchange: (ev) => { params.status = ev.target.value; load(); } },
    ['open', 'acknowledged', 'resolved', ''].map((s) => h('option', { value: s }, s || 'all')));
  replace(root, h('div.page',
    h('h1', 'Alerts'),
    h('div.toolbar', status),
    h('table.list', h('thead', h('tr', h('th', 'when'), h('th', 'severity'), h('th', 'alert'), h('th', 'status'), h('th', 'who'), h('th', ''))), list)));
  load();
  return () => {};
}
