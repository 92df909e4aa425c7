// The map page: filters and grouping (in the URL), the Cytoscape view, the side panel,
// analyses painted on the map, the "since" view, exports, live updates and the table
// view for what is too big to draw.

import { api, all } from './api.js';
import { h, replace, bytes, count, when, toast, download, protocol } from './dom.js';
import { elements, GROUPS, nodeLabel, edgeLabel, matches } from './graph.js';
import { MapView } from './map.js';
import { read, write } from './url.js';
import { can } from './session.js';
import { assetPanel, dependencyPanel, declareForm } from './panels.js';

/** Beyond this many assets the map opens grouped by subnet unless the link says otherwise. */
const GROUP_BY_DEFAULT_ABOVE = 400;
/** Beyond this many assets drawn one by one, the table replaces the map. */
const TABLE_ABOVE = 2000;
/** An opened group with more members than this is listed, not drawn. */
const MAX_MEMBERS = 300;

export function mapPage(root, live) {
  const { params } = read();
  const st = {
    environment: params.get('environment') || '',
    service: params.get('service') || '',
    since: params.get('since') || '',
    min_bytes: params.get('min_bytes') || '',
    external: params.get('external') !== '0',
    stale: params.get('stale') === '1',
    // null: not chosen (grouped by subnet past GROUP_BY_DEFAULT_ABOVE); 'none' in the
    // URL: chosen ungrouped.
    group: params.get('group') === 'none' ? '' : params.get('group'),
    open: new Set((params.get('open') || '').split(',').filter(Boolean).map(decodeURIComponent)),
    q: params.get('q') || '',
    sel: params.get('sel') || '',
    kind: params.get('kind') === 'dependency' ? 'dependency' : 'asset',
    view: params.get('view') || 'map',
    changed: params.get('changed') || '',
  };
  let topology = { nodes: [], edges: [] };
  let byId = new Map();
  let edgeById = new Map();
  let current = null; // the elements drawn
  let pathFrom = null;
  let gone = false; // the page was left: timers and loads stop
  const timers = [];
  let mark = null; // {kind, ...} repainted after redraws

  const saveUrl = () =>
    write('map', {
      environment: st.environment,
      service: st.service,
      since: st.since,
      min_bytes: st.min_bytes,
      external: st.external ? '' : '0',
      stale: st.stale,
      group: st.group === '' ? 'none' : st.group ?? '',
      open: [...st.open].map(encodeURIComponent).join(','),
      q: st.q,
      sel: st.sel,
      kind: st.sel && st.kind === 'dependency' ? 'dependency' : '',
      view: st.view === 'map' ? '' : st.view,
      changed: st.changed,
    });

  // ---------------------------------------------------------------- layout
  const status = h('span#map-status.muted', 'loading…');
  const panel = h('aside#panel', h('p.muted', 'Select an asset, a dependency or a group.'));
  const canvas = h('div#cy', { 'aria-label': 'dependency map' });
  const table = h('div#table-view.hidden');
  const legend = h(
    'div.legend',
    h('span.swatch.server'), 'server ',
    h('span.swatch.vm'), 'VM ',
    h('span.swatch.container'), 'container ',
    h('span.swatch.network_device'), 'network device ',
    h('span.swatch.external'), 'external ',
    h('span.swatch.group'), 'group (click to open)',
  );

  const input = (name, attrs) =>
    h('input', {
      name,
      id: `f-${name}`,
      value: st[name],
      onchange: (ev) => {
        st[name] = ev.target.value.trim();
        saveUrl();
        refresh();
      },
      ...attrs,
    });
  const check = (name, label) =>
    h(
      'label.check',
      h('input', {
        type: 'checkbox',
        id: `f-${name}`,
        checked: st[name],
        onchange: (ev) => {
          st[name] = ev.target.checked;
          saveUrl();
          refresh();
        },
      }),
      label,
    );
  const groupSelect = h(
    'select#f-group',
    {
      onchange: (ev) => {
        st.group = ev.target.value === 'tag:' ? `tag:${prompt('Group by which tag key?') || ''}` : ev.target.value;
        if (st.group === 'tag:') st.group = '';
        st.open.clear();
        saveUrl();
        render();
      },
    },
    GROUPS.map(([v, label]) => h('option', { value: v }, label)),
    h('option', { value: 'tag:' }, 'a tag…'),
  );
  const search = h('input#f-q', {
    type: 'search',
    placeholder: 'search name or address',
    value: st.q,
    oninput: (ev) => {
      st.q = ev.target.value.trim();
      saveUrl();
      paintSearch();
    },
    onkeydown: (ev) => {
      if (ev.key === 'Enter') {
        const hit = topology.nodes.find((n) => matches(n, st.q));
        if (hit) select(hit.id, 'asset');
      }
    },
  });
  const sinceChanges = h('input#f-changed', { type: 'datetime-local', value: st.changed ? toLocal(st.changed) : '' });
  const exportSelect = h(
    'select#export',
    {
      onchange: async (ev) => {
        const f = ev.target.value;
        ev.target.value = '';
        await exportAs(f);
      },
    },
    h('option', { value: '' }, 'Export…'),
    ['json', 'dot', 'mermaid', 'graphml'].map((f) => h('option', { value: f }, f.toUpperCase())),
    h('option', { value: 'png' }, 'PNG of this view'),
    h('option', { value: 'svg' }, 'SVG of this view'),
  );

  const toolbar = h(
    'div.toolbar',
    h('div.filters',
      input('environment', { placeholder: 'environment', size: 10 }),
      input('service', { placeholder: 'service', size: 10 }),
      h('label', 'since ', input('since', { type: 'datetime-local', value: st.since ? toLocal(st.since) : '', onchange: (ev) => {
        st.since = ev.target.value ? new Date(ev.target.value).toISOString() : '';
        saveUrl();
        refresh();
      } })),
      input('min_bytes', { placeholder: 'min bytes', type: 'number', min: 0, size: 8 }),
      check('external', 'external'),
      check('stale', 'stale'),
      h('label', 'group ', groupSelect),
      search,
    ),
    h('div.actions',
      h('button#spof', { onclick: () => guarded(showSpof), title: 'articulation points and single-provider services' }, 'SPOFs'),
      h('label', 'changes since ', sinceChanges),
      h('button#since-view', { onclick: () => {
        st.changed = sinceChanges.value ? new Date(sinceChanges.value).toISOString() : '';
        saveUrl();
        guarded(showSince);
      } }, 'Show'),
      h('button#clear-marks', { onclick: () => { mark = null; st.changed = ''; saveUrl(); view.clearMarks(); paintSearch(); } }, 'Clear'),
      h('button#toggle-table', { onclick: () => { st.view = st.view === 'table' ? 'map' : 'table'; saveUrl(); render(); } }, 'Table'),
      can('editor') ? h('button#declare', { 'data-edit': '', onclick: () => replace(panel, declareForm(topology, refresh)) }, 'Declare dependency') : null,
      exportSelect,
      status,
    ),
  );
  replace(root, h('div.map-page', toolbar, h('div.map-body', h('div.map-main', canvas, table, legend), panel)));
  groupSelect.value = st.group ?? '';

  const view = new MapView(canvas, {
    onSelect: (el) => {
      if (!el) {
        st.sel = '';
        saveUrl();
        replace(panel, h('p.muted', 'Select an asset, a dependency or a group.'));
        return;
      }
      const d = el.data();
      if (d.kind === 'asset' && pathFrom && pathFrom !== d.id) {
        const from = pathFrom;
        pathFrom = null;
        guarded(showPath, from, d.id);
        return;
      }
      // A closed group opens on a click; an open one shows its panel (to close it).
      if (d.kind === 'group' && !d.open && !current.tooBig.has(d.group)) toggleGroup(d.group);
      else if (d.kind === 'group') showGroup(d.group);
      else if (d.kind === 'folded') showFolded(d);
      else select(d.id, d.kind, { center: false });
    },
  });
  // What stands for an asset or dependency that is not drawn as itself (graph.js).
  view.owner = (id) => current?.owner.get(id) ?? null;

  // ---------------------------------------------------------------- data
  function filterParams() {
    return {
      environment: st.environment,
      service: st.service,
      since: st.since,
      min_bytes: st.min_bytes,
      include_external: st.external ? undefined : false,
      include_stale: st.stale ? true : undefined,
    };
  }

  // One load at a time; what arrives meanwhile is run once after it, as a live
  // refresh (keeping the layout) only if every request queued was live.
  let loading = null;
  async function refresh({ live: isLive = false } = {}) {
    if (loading) {
      loading.again = loading.again === null ? isLive : loading.again && isLive;
      return;
    }
    loading = { again: null };
    try {
      const t = await api.get('/topology', filterParams());
      topology = t;
      byId = new Map(t.nodes.map((n) => [n.id, n]));
      edgeById = new Map(t.edges.map((e) => [e.id, e]));
      render({ keep: isLive });
    } catch (e) {
      replace(status, `error: ${e.message}`);
    } finally {
      const again = loading.again;
      loading = null;
      if (again !== null && !gone) refresh({ live: again });
    }
  }

  function render({ keep = false } = {}) {
    if (st.group === null && topology.nodes.length > GROUP_BY_DEFAULT_ABOVE) {
      st.group = 'subnet';
      groupSelect.value = 'subnet';
      saveUrl();
    }
    const by = st.group || '';
    const tooMany = !by && topology.nodes.length > TABLE_ABOVE;
    const asTable = st.view === 'table' || tooMany;
    canvas.classList.toggle('hidden', asTable);
    table.classList.toggle('hidden', !asTable);
    current = elements(topology, by, st.open, MAX_MEMBERS);
    replace(
      status,
      `${count(topology.nodes.length)} assets, ${count(topology.edges.length)} dependencies` +
        (by ? `, ${count(current.groups.size)} groups` : ''),
    );
    if (asTable) {
      drawTable(tooMany);
    } else {
      const added = view.draw(current, { keep });
      if (keep && added.length) {
        const fresh = added.filter((el) => el.isEdge() || !el.isParent());
        fresh.addClass('new');
        timers.push(setTimeout(() => !gone && fresh.removeClass('new'), 10000));
      }
    }
    paintSearch();
    if (mark) repaint();
    document.body.dataset.mapReady = String(Date.now());
    window.dispatchEvent(new CustomEvent('flowlens:drawn'));
    if (st.sel && !keep) select(st.sel, kindOf(st.sel), { center: false });
    else if (st.sel) view.find(st.sel)?.select();
  }

  function toggleGroup(key) {
    if (st.open.has(key)) st.open.delete(key);
    else st.open.add(key);
    saveUrl();
    render();
    showGroup(key);
  }

  // ---------------------------------------------------------------- panels
  /** Whether an id is an asset's or a dependency's: the topology says, else the URL. */
  function kindOf(id) {
    if (byId.has(id)) return 'asset';
    if (edgeById.has(id)) return 'dependency';
    return st.kind;
  }

  function select(id, kind, { center = true } = {}) {
    st.sel = id;
    st.kind = kind;
    saveUrl();
    if (center) view.focus(id);
    else {
      view.cy.elements().unselect();
      view.find(id)?.select();
    }
    if (kind === 'asset') {
      replace(panel, assetPanel(id, {
        onImpact: () => guarded(showImpact, id),
        onBlast: () => guarded(showBlast, id),
        onPathFrom: () => {
          pathFrom = id;
          toast('Now pick the other end of the path on the map.');
        },
        onNavigate: (other, k) => select(other, k),
        onChanged: () => refresh({ live: true }),
      }));
    } else {
      replace(panel, dependencyPanel(id, { onNavigate: (other, k) => select(other, k), onChanged: () => refresh({ live: true }) }));
    }
  }

  function showGroup(key) {
    const g = current?.groups.get(key);
    if (!g) return;
    const open = st.open.has(key);
    const rows = g.members.slice().sort((a, b) => nodeLabel(a).localeCompare(nodeLabel(b)));
    replace(
      panel,
      h('div.group-panel',
        h('h2', `${st.group}: ${key}`),
        h('p', `${count(g.members.length)} assets, ${bytes(g.bytes)} sent by them`),
        h('button#open-group', { onclick: () => toggleGroup(key) }, open ? 'Close group' : 'Open group'),
        current.tooBig.has(key) ? h('p.note', `Too many assets to draw (over ${MAX_MEMBERS}): listed below.`) : null,
        memberTable(rows.slice(0, 1000)),
        rows.length > 1000 ? h('p.muted', `… and ${count(rows.length - 1000)} more (search to find one)`) : null,
      ),
    );
  }

  function memberTable(rows) {
    return h('table.members',
      h('thead', h('tr', h('th', 'asset'), h('th', 'address'), h('th', 'type'))),
      h('tbody', rows.map((n) => h('tr', { onclick: () => select(n.id, 'asset') },
        h('td', h('a', { href: `#/map?sel=${n.id}&kind=asset`, onclick: (ev) => { ev.preventDefault(); select(n.id, 'asset'); } }, nodeLabel(n))),
        h('td', n.ip_addresses?.[0] || ''),
        h('td', n.asset_type)))),
    );
  }

  function showFolded(d) {
    const deps = topology.edges.filter((e) => current.owner.get(e.id) === d.id).sort((a, b) => b.total_bytes - a.total_bytes);
    replace(panel, h('div',
      h('h2', `${d.source.replace(/^g:/, '')} → ${d.target.replace(/^g:/, '')}`),
      h('p', `${count(d.count)} dependencies, ${bytes(d.bytes)}`),
      depTable(deps.slice(0, 500))));
  }

  function depTable(deps) {
    return h('table.deps',
      h('thead', h('tr', h('th', 'client'), h('th', 'server'), h('th', 'service'), h('th.num', 'bytes'), h('th', 'last seen'))),
      h('tbody', deps.map((e) => h('tr', { onclick: () => select(e.id, 'dependency') },
        h('td', nodeLabel(byId.get(e.source) || { id: e.source })),
        h('td', nodeLabel(byId.get(e.target) || { id: e.target })),
        h('td', `${edgeLabel(e)}${e.stale ? ' (stale)' : ''}`),
        h('td.num', bytes(e.total_bytes)),
        h('td', when(e.last_seen))))),
    );
  }

  function drawTable(forced) {
    const q = st.q.toLowerCase();
    let deps = topology.edges;
    if (q) {
      deps = deps.filter((e) => matches(byId.get(e.source) || {}, q) || matches(byId.get(e.target) || {}, q) || (e.service || '').toLowerCase().includes(q));
    }
    const shown = deps.slice().sort((a, b) => b.total_bytes - a.total_bytes).slice(0, 500);
    replace(table,
      forced ? h('p.note', `${count(topology.nodes.length)} assets are too many to draw one by one: choose a grouping to see the map, or search.`) : null,
      h('p.muted', `${count(deps.length)} dependencies${deps.length > 500 ? ', the 500 busiest shown' : ''}`),
      depTable(shown));
  }

  // ---------------------------------------------------------------- analyses
  /** Runs an analysis; a refusal (429, 503...) is said, not thrown away. */
  async function guarded(f, ...args) {
    try {
      await f(...args);
    } catch (e) {
      if (!gone) toast(e.message, 'error');
    }
  }

  function repaint() {
    view.clearMarks();
    if (!mark) return;
    if (mark.kind === 'since') {
      view.mark(mark.added, 'new', { dimOthers: false });
      view.mark(mark.removed, 'removed', { dimOthers: false });
      return;
    }
    const { ids, cls, root: r, extra } = mark;
    view.mark(r ? [...ids, r] : ids, cls);
    if (r) view.mark([r], 'hl-root', { dimOthers: false }).removeClass(cls);
    if (extra) view.mark(extra.ids, extra.cls, { dimOthers: false });
  }

  async function showImpact(id) {
    const r = await api.post('/analysis/impact', { asset_id: id });
    const affected = r.impact.affected.map((a) => a.asset);
    mark = { ids: affected, cls: 'hl', root: id };
    repaint();
    replace(panel, analysisPanel('Impact', id, r.names, r.impact.affected, [
      h('p#impact-summary', `${count(r.impact.total_affected)} assets depend on ${r.names[id] || id}${r.impact.truncated ? ' (truncated)' : ''}`),
    ]));
  }

  async function showBlast(id) {
    const r = await api.post('/analysis/blast-radius', { asset_id: id });
    const b = r.blast_radius;
    const affected = b.impact.affected.map((a) => a.asset);
    mark = { ids: affected, cls: 'hl', root: id };
    repaint();
    replace(panel, analysisPanel('Blast radius', id, r.names, b.impact.affected, [
      h('p.score', 'score ', h('strong#blast-score', b.score.toFixed(1)), ' / 100'),
      h('p', `${count(b.impact.total_affected)} assets lost with ${r.names[id] || id}`),
      b.affected_services.length
        ? h('div', h('h3', 'Services lost'), h('ul', b.affected_services.map((s) => h('li', `${s.service.service || protocol(s.service.protocol)} ${s.service.port} (${s.consumers} consumers)`))))
        : null,
    ]));
  }

  function analysisPanel(title, root, names, affected, head) {
    return h(`div.analysis#analysis-${title.toLowerCase().replace(/ /g, '-')}`,
      h('h2', `${title}: ${names[root] || root}`),
      head,
      h('ol.affected', affected.map((a) => h('li', { 'data-asset': a.asset },
        h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); view.focus(a.asset); } }, names[a.asset] || a.asset),
        h('span.muted', ` depth ${a.depth}`)))),
    );
  }

  async function showPath(from, to) {
    const r = await api.post('/analysis/path', { from, to });
    if (!r.shortest) {
      mark = null;
      view.clearMarks();
      replace(panel, h('div.analysis#analysis-path', h('h2', 'Path'), h('p', `No path from ${r.names[from] || from} to ${r.names[to] || to}.`)));
      return;
    }
    const ids = [];
    for (const step of r.shortest) {
      ids.push(step.asset);
      if (step.dependency) ids.push(step.dependency);
    }
    mark = { ids, cls: 'path' };
    repaint();
    replace(panel, h('div.analysis#analysis-path',
      h('h2', 'Path'),
      h('ol', r.shortest.map((s) => h('li', r.names[s.asset] || s.asset))),
      h('p.muted', `${r.all.paths.length} simple paths${r.all.truncated ? ' (truncated)' : ''}`)));
  }

  async function showSpof() {
    const r = await api.get('/analysis/spof');
    const aps = r.spof.articulation_points.map((a) => a.asset);
    const single = r.spof.single_provider_services.map((s) => s.provider);
    view.clearMarks();
    mark = { ids: aps, cls: 'spof', extra: { ids: single, cls: 'single-provider' } };
    repaint();
    replace(panel, h('div.analysis#analysis-spof',
      h('h2', 'Single points of failure'),
      h('h3', 'Articulation points'),
      h('ul', r.spof.articulation_points.map((a) => h('li', { 'data-asset': a.asset }, `${r.names[a.asset] || a.asset}: cuts off ${a.cut_off}`))),
      h('h3', 'Services with one provider'),
      h('ul', r.spof.single_provider_services.map((s) => h('li', { 'data-asset': s.provider },
        `${s.service.service || protocol(s.service.protocol)} ${s.service.port} on ${r.names[s.provider] || s.provider} (${s.consumers} consumers)`)))));
  }

  async function showSince() {
    if (!st.changed) return;
    const events = await all('/changes', { since: st.changed }, 5000);
    const partial = events.truncated;
    const added = events.filter((e) => e.change_type === 'new_dependency').map((e) => e.entity_id);
    const removed = events.filter((e) => e.change_type === 'removed_dependency').map((e) => e.entity_id);
    const newAssets = events.filter((e) => e.change_type === 'new_asset').map((e) => e.entity_id);
    // Marks only, nothing dimmed: the rest of the map is what did not change.
    mark = { kind: 'since', added: [...added, ...newAssets], removed };
    repaint();
    replace(panel, h('div#since-panel',
      h('h2', `Since ${when(st.changed)}`),
      h('p', h('span.badge.new', `${added.length} new`), ' ', h('span.badge.removed', `${removed.length} removed`), ` dependencies, ${newAssets.length} new assets`),
      partial ? h('p.note', `More than ${count(events.length)} changes since then: only the newest ${count(events.length)} are marked. Pick a later time.`) : null,
      !st.stale && removed.length ? h('p.muted', 'Tick "stale" to draw the removed dependencies the flows stopped showing.') : null));
  }

  function paintSearch() {
    view.cy.nodes().removeClass('match');
    if (!st.q) return;
    const hits = topology.nodes.filter((n) => matches(n, st.q)).map((n) => n.id);
    view.mark(hits, 'match', { dimOthers: false });
  }

  // ---------------------------------------------------------------- exports
  async function exportAs(format) {
    try {
      if (format === 'png') return download(await view.png(), 'flowlens-map.png');
      if (format === 'svg') return download(view.svg(), 'flowlens-map.svg');
      const r = await api.raw('/topology/export', { ...filterParams(), format });
      const ext = { json: 'json', dot: 'dot', mermaid: 'mmd', graphml: 'graphml' }[format];
      download(await r.blob(), `flowlens-topology.${ext}`);
    } catch (e) {
      toast(`export failed: ${e.message}`, 'error');
    }
  }

  // ---------------------------------------------------------------- live
  let pending = null;
  live.onChange = (event) => {
    if (event.entity_type !== 'asset' && event.entity_type !== 'dependency') return;
    clearTimeout(pending);
    pending = setTimeout(() => refresh({ live: true }), 150);
  };
  live.onResync = () => refresh({ live: true });

  window.flowlens = {
    assets: () => view.cy.nodes('[kind = "asset"]').map((n) => n.id()),
    dependencies: () => view.cy.edges('[kind = "dependency"]').map((e) => e.id()),
    groups: () => view.cy.nodes('[kind = "group"]').map((n) => n.data('group')),
    /** [key, assets] of every group of the current grouping, biggest first. */
    groupSizes: () => [...(current?.groups.values() ?? [])].map((g) => [g.key, g.members.length]).sort((a, b) => b[1] - a[1]),
    drawnEdges: () => view.cy.edges().length,
    /** Where an element is drawn, in page coordinates (for real clicks). */
    at: (id) => {
      const el = view.find(id);
      if (!el) return null;
      const p = el.isNode() ? el.renderedPosition() : el.renderedMidpoint();
      const r = canvas.getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y };
    },
    marked: (cls) => view.cy.elements(`.${cls}`).map((e) => e.id()),
    // Nothing returned: a test harness would try to serialize a Cytoscape collection.
    tap: (id) => {
      view.find(id)?.emit('tap');
    },
    open: (key) => {
      toggleGroup(key);
    },
    topology: () => topology,
  };

  refresh().then(() => {
    if (st.changed) guarded(showSince);
  });
  return () => {
    gone = true;
    clearTimeout(pending);
    timers.forEach(clearTimeout);
    live.onChange = () => {};
    live.onResync = () => {};
    view.cy.destroy();
  };
}

function toLocal(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const off = d.getTimezoneOffset() * 60000;
  return new Date(d.getTime() - off).toISOString().slice(0, 16);
}
