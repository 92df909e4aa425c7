// EDGE: the Cytoscape view. Draws what graph.js computed, keeps positions across
// live updates (new nodes are placed beside a neighbour instead of laying the whole
// map out again), and paints highlights (analyses, search, the "since" view).

import cytoscape from 'cytoscape';
import fcose from 'cytoscape-fcose';
import svg from 'cytoscape-svg';
import { colourOf } from './graph.js';

cytoscape.use(fcose);
cytoscape.use(svg);

/** Above this many drawn nodes, the layout is a grid (fcose would block the tab). */
const FORCE_LAYOUT_MAX = 250;

const SHAPES = {
  server: 'round-rectangle',
  vm: 'ellipse',
  container: 'hexagon',
  network_device: 'diamond',
  unknown: 'ellipse',
};
const FILLS = {
  server: '#1e6091',
  vm: '#168aad',
  container: '#52b69a',
  network_device: '#76520e',
  unknown: '#6b7280',
};

function style() {
  return [
    {
      selector: 'node',
      style: {
        label: 'data(label)',
        'font-size': 10,
        color: '#1f2937',
        'text-valign': 'bottom',
        'text-margin-y': 4,
        'text-max-width': 140,
        'text-wrap': 'ellipsis',
        width: 26,
        height: 26,
        'border-width': 2,
        'border-color': '#ffffff',
        'min-zoomed-font-size': 7,
      },
    },
    ...Object.entries(SHAPES).map(([type, shape]) => ({
      selector: `node[type = "${type}"]`,
      style: { shape, 'background-color': FILLS[type] },
    })),
    { selector: 'node[?external]', style: { 'background-color': '#f59e0b', 'border-style': 'dashed', 'border-color': '#92400e' } },
    {
      selector: 'node[kind = "group"]',
      style: {
        shape: 'round-rectangle',
        'background-color': '#dbeafe',
        'border-color': '#60a5fa',
        'border-width': 1.5,
        width: 'mapData(size, 1, 500, 40, 110)',
        height: 'mapData(size, 1, 500, 30, 70)',
        'text-valign': 'center',
        'font-size': 11,
        'font-weight': 'bold',
      },
    },
    {
      selector: 'node[kind = "group"][?open]',
      style: {
        'background-opacity': 0.25,
        'text-valign': 'top',
        'text-margin-y': -4,
        padding: 14,
        'border-style': 'dashed',
      },
    },
    {
      selector: 'edge',
      style: {
        width: 'data(width)',
        'curve-style': 'bezier',
        'target-arrow-shape': 'triangle',
        'arrow-scale': 0.8,
        'line-color': (e) => colourOf(e.data('service') || 'folded'),
        'target-arrow-color': (e) => colourOf(e.data('service') || 'folded'),
        opacity: 0.8,
        label: '',
        'font-size': 8,
        'text-rotation': 'autorotate',
        'text-background-color': '#ffffff',
        'text-background-opacity': 0.8,
        'min-zoomed-font-size': 8,
      },
    },
    { selector: 'edge[kind = "folded"]', style: { 'line-color': '#94a3b8', 'target-arrow-color': '#94a3b8', 'line-style': 'solid' } },
    { selector: 'edge[?stale]', style: { 'line-style': 'dashed', opacity: 0.45 } },
    { selector: 'edge:selected, edge.labelled', style: { label: 'data(label)' } },
    { selector: 'node:selected', style: { 'border-color': '#111827', 'border-width': 3 } },
    { selector: 'edge:selected', style: { opacity: 1, width: (e) => Math.max(3, e.data('width') + 2) } },
    { selector: '.dim', style: { opacity: 0.12 } },
    { selector: 'node.match', style: { 'border-color': '#facc15', 'border-width': 4 } },
    { selector: 'node.hl', style: { 'background-color': '#dc2626', opacity: 1 } },
    { selector: 'node.hl-root', style: { 'background-color': '#7f1d1d', 'border-color': '#111827', 'border-width': 4, opacity: 1 } },
    { selector: 'edge.hl', style: { 'line-color': '#dc2626', 'target-arrow-color': '#dc2626', opacity: 1, label: 'data(label)' } },
    { selector: 'node.path', style: { 'background-color': '#7c3aed', opacity: 1 } },
    { selector: 'edge.path', style: { 'line-color': '#7c3aed', 'target-arrow-color': '#7c3aed', width: 5, opacity: 1, label: 'data(label)' } },
    { selector: 'node.spof', style: { 'border-color': '#dc2626', 'border-width': 5, 'border-style': 'double' } },
    { selector: 'node.single-provider', style: { 'underlay-color': '#f97316', 'underlay-opacity': 0.35, 'underlay-padding': 6 } },
    { selector: 'edge.new', style: { 'line-color': '#16a34a', 'target-arrow-color': '#16a34a', width: 5, opacity: 1 } },
    { selector: 'edge.removed', style: { 'line-color': '#dc2626', 'target-arrow-color': '#dc2626', 'line-style': 'dashed', width: 4, opacity: 1 } },
    { selector: 'node.new', style: { 'underlay-color': '#16a34a', 'underlay-opacity': 0.4, 'underlay-padding': 6 } },
  ];
}

export class MapView {
  constructor(container, { onSelect }) {
    this.cy = cytoscape({
      container,
      style: style(),
      minZoom: 0.03,
      maxZoom: 4,
      wheelSensitivity: 0.3,
      boxSelectionEnabled: false,
      selectionType: 'single',
    });
    this.onSelect = onSelect;
    this.cy.on('tap', 'node, edge', (ev) => onSelect(ev.target));
    this.cy.on('tap', (ev) => {
      if (ev.target === this.cy) onSelect(null);
    });
    this.signature = '';
  }

  /** Draws `els` ({nodes, edges}); keeps what is already drawn where it is when
   * `keep` is set and only a few elements are new. */
  draw(els, { keep = false } = {}) {
    const cy = this.cy;
    const large = els.nodes.length > FORCE_LAYOUT_MAX || els.edges.length > 3000;
    // Cheaper gestures on big views: edges and labels hidden while panning and
    // zooming. Not Cytoscape's texture: building it is itself a frame of about 200 ms
    // in a software-rendered tab, paid at the start of every gesture (measured on the
    // bench graph: longest task 142-215 ms with it, 91-116 ms without).
    const r = cy.renderer();
    r.textureOnViewport = false;
    r.hideEdgesOnViewport = els.edges.length > 1000;
    r.hideLabelsOnViewport = large;
    // Past a thousand edges, straight ones (no control points for parallel edges);
    // past 1500, haystack lines without arrows, the cheapest Cytoscape draws, for the
    // full frame after each gesture. Direction is still in the panel and the table.
    const curve = els.edges.length > 1500 ? 'haystack' : els.edges.length > 1000 ? 'straight' : 'bezier';
    if (curve !== this.curve) {
      this.curve = curve;
      cy.style()
        .selector('edge')
        .style({ 'curve-style': curve, 'target-arrow-shape': curve === 'haystack' ? 'none' : 'triangle', 'haystack-radius': 0 })
        .update();
    }
    const wanted = new Set([...els.nodes, ...els.edges].map((e) => e.data.id));
    const sameStructure =
      keep &&
      cy.nodes().length > 0 &&
      els.nodes.every((n) => {
        const old = cy.getElementById(n.data.id);
        return old.empty() || (old.data('parent') ?? null) === (n.data.parent ?? null);
      });
    if (!sameStructure) {
      cy.batch(() => {
        cy.elements().remove();
        cy.add([...els.nodes, ...els.edges]);
      });
      this.layout(large);
      return [];
    }
    const added = [];
    cy.batch(() => {
      cy.elements().forEach((el) => {
        if (!wanted.has(el.id())) el.remove();
      });
      for (const n of els.nodes) {
        const old = cy.getElementById(n.data.id);
        if (old.empty()) added.push(cy.add(n));
        else old.data(n.data);
      }
      for (const e of els.edges) {
        const old = cy.getElementById(e.data.id);
        if (old.empty()) added.push(cy.add(e));
        else old.data(e.data);
      }
    });
    // New nodes beside a neighbour already placed.
    for (const el of added) {
      if (!el.isNode() || el.isParent()) continue;
      const placed = el.neighborhood('node').filter((n) => !added.includes(n));
      const p = placed.nonempty() ? placed[0].position() : { x: 0, y: 0 };
      el.position({ x: p.x + 60 * (Math.random() - 0.5) + 40, y: p.y + 60 * (Math.random() - 0.5) + 40 });
    }
    return added;
  }

  layout(large) {
    const cy = this.cy;
    if (cy.nodes().length === 0) return;
    if (large) {
      cy.layout({ name: 'grid', avoidOverlap: true, animate: false, condense: true, sort: (a, b) => (b.data('size') || 0) - (a.data('size') || 0) }).run();
    } else {
      cy.layout({
        name: 'fcose',
        quality: cy.nodes().length > 100 ? 'draft' : 'default',
        randomize: true,
        animate: false,
        nodeSeparation: 90,
        idealEdgeLength: 110,
        nodeRepulsion: 9000,
        packComponents: true,
      }).run();
    }
    cy.fit(undefined, 30);
  }

  /** Removes every highlight class. */
  clearMarks() {
    this.cy.elements().removeClass('dim hl hl-root path spof single-provider new removed match labelled');
  }

  /** Dims everything but `ids` (asset or dependency ids, or group node ids) and marks
   * them with `cls`. */
  mark(ids, cls, { dimOthers = true } = {}) {
    const cy = this.cy;
    const hit = cy.collection();
    for (const id of ids) {
      const el = this.find(id);
      if (el) hit.merge(el);
    }
    cy.batch(() => {
      if (dimOthers) cy.elements().not(hit).not(hit.parents()).addClass('dim');
      hit.addClass(cls);
    });
    return hit;
  }

  /** The element drawing `id`: itself, or the closed group holding it, or the folded
   * edge carrying it. */
  find(id) {
    const cy = this.cy;
    const el = cy.getElementById(id);
    if (el.nonempty()) return el;
    const owner = this.owner?.(id);
    if (owner) {
      const g = cy.getElementById(owner);
      if (g.nonempty()) return g;
    }
    return null;
  }

  focus(id) {
    const el = this.find(id);
    if (!el) return;
    this.cy.elements().unselect();
    el.select();
    this.cy.animate({ center: { eles: el }, zoom: Math.max(this.cy.zoom(), 1) }, { duration: 200 });
  }

  png() {
    return this.cy.png({ output: 'blob', full: true, bg: '#ffffff', scale: 2, maxWidth: 8000, maxHeight: 8000 });
  }

  svg() {
    return new Blob([this.cy.svg({ full: true, bg: '#ffffff' })], { type: 'image/svg+xml' });
  }
}
