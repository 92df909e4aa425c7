// Admins: API keys (create, shown once; revoke) and discovery scans.

import { api } from './api.js';
import { h, replace, when, toast } from './dom.js';

export function adminPage(root) {
  const keys = h('tbody#keys');
  const scans = h('tbody#scans');
  const shown = h('div#new-key');
  const loadKeys = async () => {
    const list = await api.get('/admin/api-keys');
    replace(keys, list.map((k) => h('tr', { 'data-key': k.id },
      h('td', k.name), h('td', k.role), h('td', h('code', `${k.prefix}…`)), h('td', k.created_by),
      h('td', when(k.created_at)), h('td', when(k.last_used_at)),
      h('td', k.revoked_at ? `revoked ${when(k.revoked_at)}` : h('button.danger', { onclick: async () => {
        if (!confirm(`Revoke ${k.name}? Everything using it stops working at once.`)) return;
        await api.del(`/admin/api-keys/${k.id}`).catch((e) => toast(e.message, 'error'));
        loadKeys();
      } }, 'Revoke')))));
  };
  const loadScans = async () => {
    const r = await api.get('/discovery/scans', { page_size: 50 });
    replace(scans, r.items.map((s) => h('tr',
      h('td', s.cidr), h('td', s.status), h('td', `${Math.round(s.progress * 100)} %`),
      h('td', `${s.hosts_up} up / ${s.hosts_scanned} of ${s.hosts_total}`),
      h('td', `${s.assets_created} new, ${s.assets_updated} updated`), h('td', s.requested_by), h('td', when(s.created_at)),
      h('td', s.error || ''))));
  };
  const name = h('input#key-name', { placeholder: 'name', maxlength: 96, required: true });
  const role = h('select#key-role', ['viewer', 'editor', 'admin'].map((r) => h('option', { value: r }, r)));
  const cidr = h('input#scan-cidr', { placeholder: '10.0.3.0/24', required: true });
  const ports = h('input#scan-ports', { placeholder: 'ports (blank: all allowed)' });
  replace(root, h('div.page',
    h('h1', 'Administration'),
    h('h2', 'API keys'),
    h('form.inline', { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const k = await api.post('/admin/api-keys', { name: name.value.trim(), role: role.value });
        replace(shown, h('p.note', 'The new key, shown this once: ', h('code#new-key-value', k.key)));
        name.value = '';
        loadKeys();
      } catch (e) {
        toast(e.message, 'error');
      }
    } }, name, role, h('button', { type: 'submit' }, 'Create key')),
    shown,
    h('table.list', h('thead', h('tr', ['name', 'role', 'key', 'created by', 'created', 'last used', ''].map((t) => h('th', t)))), keys),
    h('h2', 'Discovery scans'),
    h('form.inline', { onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const body = { cidr: cidr.value.trim() };
        const p = ports.value.split(/[ ,]+/).filter(Boolean).map(Number);
        if (p.length) body.ports = p;
        await api.post('/discovery/scans', body);
        loadScans();
      } catch (e) {
        toast(e.message, 'error');
      }
    } }, cidr, ports, h('button', { type: 'submit' }, 'Start scan')),
    h('table.list', h('thead', h('tr', ['range', 'status', 'progress', 'hosts', 'assets', 'by', 'created', 'error'].map((t) => h('th', t)))), scans)));
  loadKeys().catch((e) => toast(e.message, 'error'));
  loadScans().catch((e) => toast(e.message, 'error'));
  const timer = setInterval(() => loadScans().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
