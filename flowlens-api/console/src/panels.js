// The side panels: an asset (addresses, names, place, tags, its dependencies with the
// last 24 hours as a small chart) and a dependency (service, totals, confidence,
// notes); editors change tags, notes and confidence, declare and delete dependencies.

import { api } from './api.js';
import { h, replace, bytes, count, when, toast, protocol } from './dom.js';
import { can } from './session.js';
import { nodeLabel } from './graph.js';

/** A 24-value series as a small SVG bar chart (built as elements: no inline markup). */
export function sparkline(values, { width = 120, height = 24, label = '' } = {}) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  const total = values.reduce((a, b) => a + Number(b), 0);
  svg.setAttribute('aria-label', `${label} last 24 h: ${bytes(total)}`);
  const max = Math.max(1, ...values.map(Number));
  const w = width / values.length;
  values.forEach((v, i) => {
    const bh = Math.max(v > 0 ? 1 : 0, (Number(v) / max) * (height - 1));
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', (i * w).toFixed(1));
    r.setAttribute('y', (height - bh).toFixed(1));
    r.setAttribute('width', Math.max(1, w - 1).toFixed(1));
    r.setAttribute('height', bh.toFixed(1));
    const t = document.createElementNS(ns, 'title');
    t.textContent = `${bytes(v)}`;
    r.appendChild(t);
    svg.appendChild(r);
  });
  return svg;
}

function field(label, ...value) {
  return h('div.field', h('dt', label), h('dd', ...value));
}

/** Whether `raw` is written as JSON in the tag editor (a number, true, "quoted"...). */
const JSONISH = /^(-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null|\[.*\]|\{.*\}|".*")$/;

/** Tags as `key=value` lines, and back: values that are not strings are written as
 * JSON, and so is a string that would read as JSON (`"8080"`), so a round trip
 * through the editor changes nothing it was not asked to. */
export function tagsToText(tags) {
  return Object.entries(tags || {})
    .map(([k, v]) => `${k}=${typeof v === 'string' && !JSONISH.test(v.trim()) && v.trim() === v ? v : JSON.stringify(v)}`)
    .join('\n');
}
export function textToTags(text) {
  const tags = {};
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    const k = (i < 0 ? t : t.slice(0, i)).trim();
    const raw = i < 0 ? '' : t.slice(i + 1).trim();
    let v = raw;
    if (JSONISH.test(raw)) {
      try {
        v = JSON.parse(raw);
      } catch {
        v = raw;
      }
    }
    if (k) tags[k] = v;
  }
  return tags;
}

function tagList(tags) {
  const entries = Object.entries(tags || {});
  if (!entries.length) return h('span.muted', 'none');
  return h('ul.tags', entries.map(([k, v]) => h('li.tag', `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)));
}

function loading() {
  return h('p.muted', 'loading…');
}

export function assetPanel(id, actions) {
  const box = h('div.asset-panel', loading());
  (async () => {
    try {
      const [a, deps, traffic] = await Promise.all([
        api.get(`/assets/${id}`),
        api.get(`/assets/${id}/dependencies`, { page_size: 25 }),
        api.get(`/assets/${id}/traffic`).catch(() => null),
      ]);
      const series = new Map((traffic?.dependencies || []).map((d) => [d.dependency_id, d.bytes]));
      const zero = Array(24).fill(0);
      const depRow = (d, other, otherName) =>
        h('li.dep', { 'data-dependency': d.id },
          h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); actions.onNavigate(d.id, 'dependency'); } },
            `${otherName || other} · ${d.inferred_service || protocol(d.protocol)} ${d.port}`),
          d.stale ? h('span.badge.removed', 'stale') : null,
          h('div.spark-row', sparkline(series.get(d.id) || zero, { label: d.inferred_service || '' }), h('span.muted', ` ${bytes(d.bytes_24h)} / 24 h`)),
        );
      const place = [a.cloud_provider, a.cloud_account, a.cloud_region, a.vpc, a.subnet, a.cluster, a.namespace, a.workload].filter(Boolean);
      replace(box,
        h('h2#asset-name', a.name || a.ip_addresses[0] || a.id),
        h('div.buttons',
          h('button#impact', { onclick: actions.onImpact }, 'Impact'),
          h('button#blast-radius', { onclick: actions.onBlast }, 'Blast radius'),
          h('button#path-from', { onclick: actions.onPathFrom }, 'Path to…')),
        h('dl',
          field('type', a.asset_type, a.is_internal === false ? ' (external)' : ''),
          field('addresses', a.ip_addresses.join(', ') || '—'),
          field('FQDN', a.fqdn || '—'),
          field('environment', a.environment || '—'),
          field('country / ASN', [a.country_code, a.asn ? `AS${a.asn}` : null, a.as_org].filter(Boolean).join(' · ') || '—'),
          place.length ? field('runs in', place.join(' / ')) : null,
          field('seen', `${when(a.first_seen)} → ${when(a.last_seen)}`),
          field('source', a.discovery_source, a.stale ? ' (stale)' : ''),
          field('tags', tagList(a.tags)),
        ),
        traffic ? h('div.traffic',
          h('h3', 'Last 24 hours'),
          h('div.spark-row', 'out ', sparkline(traffic.outbound_bytes, { label: 'outbound' })),
          h('div.spark-row', 'in ', sparkline(traffic.inbound_bytes, { label: 'inbound' }))) : null,
        can('editor') ? assetEditor(a, actions.onChanged) : null,
        h('h3', `Uses (${count(deps.outbound_total)})`),
        h('ul.deps#outbound', deps.outbound.map((d) => depRow(d, d.target_asset_id, d.target_name))),
        h('h3', `Used by (${count(deps.inbound_total)})`),
        h('ul.deps#inbound', deps.inbound.map((d) => depRow(d, d.source_asset_id, d.source_name))),
      );
    } catch (e) {
      replace(box, h('p.error', e.message));
    }
  })();
  return box;
}

function assetEditor(a, onChanged) {
  const tags = h('textarea#edit-tags', { rows: 3, value: tagsToText(a.tags), 'aria-label': 'tags, key=value per line' });
  return h('details.editor', { 'data-edit': '' },
    h('summary', 'Edit tags'),
    tags,
    h('button#save-tags', {
      onclick: async () => {
        try {
          await api.patch(`/assets/${a.id}`, { tags: textToTags(tags.value) });
          toast('tags saved');
          onChanged();
        } catch (e) {
          toast(e.message, 'error');
        }
      },
    }, 'Save tags'));
}

export function dependencyPanel(id, actions) {
  const box = h('div.dependency-panel', loading());
  (async () => {
    try {
      const d = await api.get(`/dependencies/${id}`);
      replace(box,
        h('h2#dependency-name', `${d.source_name || d.source_asset_id} → ${d.target_name || d.target_asset_id}`),
        h('dl',
          field('service', d.inferred_service || '—'),
          field('port / protocol', `${d.port} / ${protocol(d.protocol)}`),
          field('confidence', d.confidence == null ? '—' : d.confidence.toFixed(2), d.user_fields?.includes('confidence') ? ' (set by a person)' : ''),
          field('totals', `${bytes(d.total_bytes)}, ${count(d.total_flows)} flows, ${count(d.total_packets)} packets`),
          field('last 24 h', `${bytes(d.bytes_24h)}, ${count(d.flows_24h)} flows`),
          field('seen', `${when(d.first_seen)} → ${when(d.last_seen)}`),
          field('source', d.discovery_source, d.stale ? ' (stale)' : ''),
          field('notes', d.notes || '—'),
          field('tags', tagList(d.tags)),
        ),
        h('div.buttons',
          h('button', { onclick: () => actions.onNavigate(d.source_asset_id, 'asset') }, 'Client'),
          h('button', { onclick: () => actions.onNavigate(d.target_asset_id, 'asset') }, 'Server')),
        can('editor') ? dependencyEditor(d, actions.onChanged) : null,
      );
    } catch (e) {
      replace(box, h('p.error', e.message));
    }
  })();
  return box;
}

function dependencyEditor(d, onChanged) {
  const notes = h('textarea#edit-notes', { rows: 3, value: d.notes || '', 'aria-label': 'notes' });
  const tags = h('textarea#edit-dep-tags', { rows: 2, value: tagsToText(d.tags), 'aria-label': 'tags' });
  const confidence = h('input#edit-confidence', { type: 'number', min: 0, max: 1, step: 0.05, value: d.confidence ?? '' });
  const personal = d.user_fields?.includes('confidence');
  const toFlows = h('input#edit-confidence-flows', { type: 'checkbox', checked: false });
  const initial = { notes: notes.value, tags: tags.value, confidence: confidence.value };
  // Only what was changed is sent: the API marks every field it receives as set by a
  // person, and flows stop updating a confidence a person set.
  const save = async () => {
    const body = {};
    if (notes.value !== initial.notes) body.notes = notes.value.trim() || null;
    if (tags.value !== initial.tags) body.tags = textToTags(tags.value);
    if (toFlows.checked) body.confidence = null;
    else if (confidence.value !== initial.confidence && confidence.value !== '') body.confidence = Number(confidence.value);
    if (!Object.keys(body).length) {
      toast('nothing changed');
      return;
    }
    try {
      await api.patch(`/dependencies/${d.id}`, body);
      toast('dependency saved');
      onChanged();
    } catch (e) {
      toast(e.message, 'error');
    }
  };
  return h('details.editor', { 'data-edit': '', open: true },
    h('summary', 'Edit'),
    h('label', 'notes', notes),
    h('label', 'tags (key=value per line)', tags),
    h('label', 'confidence (0–1)', confidence),
    personal ? h('label.check', toFlows, ' let the flows set the confidence again') : null,
    h('div.buttons',
      h('button#save-dependency', { onclick: save }, 'Save'),
      h('button#delete-dependency.danger', {
        onclick: async () => {
          if (!confirm('Delete this dependency? Flows will not bring it back until it is declared again.')) return;
          try {
            await api.del(`/dependencies/${d.id}`);
            toast('dependency deleted');
            onChanged();
          } catch (e) {
            toast(e.message, 'error');
          }
        },
      }, 'Delete')));
}

/** The most assets a picker lists at once. */
const PICK_MAX = 5000;

/** An asset picker: the map's assets to start with; typing searches every asset
 * (`/assets?q=`), so one without any dependency yet (a standby) can be picked too. */
function assetPicker(id, nodes) {
  const label = (a) => `${nodeLabel(a)} (${a.ip_addresses?.[0] || ''})`;
  const options = (list) => list.slice(0, PICK_MAX).map((a) => h('option', { value: a.id }, label(a)));
  const initial = nodes.slice().sort((a, b) => label(a).localeCompare(label(b)));
  const select = h(`select#${id}`, options(initial));
  let timer = null;
  const search = h(`input#${id}-q`, {
    type: 'search',
    maxlength: 200,
    placeholder: 'search every asset',
    oninput: () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const q = search.value.trim();
        try {
          replace(select, options(q ? (await api.get('/assets', { q, page_size: 50 })).items : initial));
        } catch (e) {
          toast(e.message, 'error');
        }
      }, 200);
    },
  });
  const note = initial.length > PICK_MAX ? h('span.muted', `the first ${PICK_MAX} of ${initial.length}: search for the others`) : null;
  return { select, el: h('div.picker', search, select, note) };
}

/** Declare a dependency the flows cannot see (a batch job, a standby). */
export function declareForm(topology, onChanged) {
  const sourcePicker = assetPicker('declare-source', topology.nodes);
  const targetPicker = assetPicker('declare-target', topology.nodes);
  const source = sourcePicker.select;
  const target = targetPicker.select;
  const proto = h('select#declare-protocol', h('option', { value: 6 }, 'tcp'), h('option', { value: 17 }, 'udp'));
  const port = h('input#declare-port', { type: 'number', min: 0, max: 65535, required: true });
  const service = h('input#declare-service', { maxlength: 50, placeholder: 'service (optional)' });
  const notes = h('input#declare-notes', { placeholder: 'notes (optional)' });
  return h('form.declare', { 'data-edit': '', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const body = { source_asset_id: source.value, target_asset_id: target.value, protocol: Number(proto.value), port: Number(port.value) };
      if (service.value.trim()) body.inferred_service = service.value.trim();
      if (notes.value.trim()) body.notes = notes.value.trim();
      await api.post('/dependencies', body);
      toast('dependency declared');
      onChanged({ live: true });
    } catch (e) {
      toast(e.message, 'error');
    }
  } },
    h('h2', 'Declare a dependency'),
    h('label', 'client', sourcePicker.el), h('label', 'server', targetPicker.el),
    h('label', 'protocol', proto), h('label', 'port', port),
    h('label', 'service', service), h('label', 'notes', notes),
    h('button#declare-submit', { type: 'submit' }, 'Declare'));
}
