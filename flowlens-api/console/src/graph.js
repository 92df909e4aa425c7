// PURE: turns the API's topology into the elements the map draws: nodes and edges as
// they are, or folded into groups (subnet, environment, a tag, a cloud account...),
// with the groups the user opened drawn as compound nodes holding their assets and
// every other group one node with its edges summed. No DOM here, so it is cheap to
// test and to run on 50 000 edges.

/** What the map can group by (beside `tag:<key>`). */
export const GROUPS = [
  ['', 'no grouping'],
  ['subnet', 'subnet'],
  ['environment', 'environment'],
  ['cloud_account', 'cloud account'],
  ['cloud_region', 'cloud region'],
  ['vpc', 'VPC / network'],
  ['cluster', 'cluster'],
  ['namespace', 'namespace'],
  ['workload', 'workload'],
  ['asset_type', 'asset type'],
];

/** The /24 (IPv4) or /64 (IPv6) of an address, as a CIDR. */
export function prefixOf(address) {
  if (!address) return null;
  const a = address.replace(/\/\d+$/, '');
  if (a.includes('.') && !a.includes(':')) {
    const p = a.split('.');
    return p.length === 4 ? `${p[0]}.${p[1]}.${p[2]}.0/24` : null;
  }
  if (a.includes(':')) {
    // Expand :: to read the first four groups.
    const [head, tail = ''] = a.split('::');
    const hs = head ? head.split(':') : [];
    const ts = tail ? tail.split(':') : [];
    const groups = a.includes('::') ? [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts] : hs;
    return `${groups.slice(0, 4).map((g) => g || '0').join(':')}::/64`;
  }
  return null;
}

/** The group of a node for `by` (null: none). Subnets fall back to the /24 or /64 of
 * the first address when no inventory named one. */
export function groupKey(node, by) {
  if (!by) return null;
  if (by.startsWith('tag:')) {
    const v = node.tags?.[by.slice(4)];
    if (v === undefined || v === null) return null;
    return typeof v === 'string' ? v : JSON.stringify(v);
  }
  if (by === 'subnet') return node.subnet || prefixOf(node.ip_addresses?.[0]);
  return node[by] ?? null;
}

export const NONE = '(none)';

/** The node's label: its name, else its first address. */
export function nodeLabel(n) {
  return n.name || n.ip_addresses?.[0] || n.id.slice(0, 8);
}

export function edgeLabel(e) {
  const proto = { 6: 'tcp', 17: 'udp', 1: 'icmp', 58: 'icmpv6', 132: 'sctp' }[e.protocol] || e.protocol;
  return e.service ? `${e.service} ${e.port}` : `${proto}/${e.port}`;
}

/** Edge width from bytes: logarithmic, 1 to 12 px. */
export function widthOf(bytes) {
  const w = Math.log10(Number(bytes || 0) + 1) - 2;
  return Math.max(1, Math.min(12, w));
}

/** Whether a node matches the search text (name, FQDN-ish name, address prefix). */
export function matches(node, q) {
  if (!q) return false;
  const s = q.toLowerCase();
  return (node.name || '').toLowerCase().includes(s) || (node.ip_addresses || []).some((a) => a.startsWith(s));
}

/**
 * The elements to draw.
 * topology: {nodes, edges}; by: group field ('' for none); open: Set of group keys
 * drawn with their members; maxMembers: an open group with more members than this
 * stays one node (its members go to a table instead).
 * Returns {nodes, edges, groups: Map key -> {key, members: [node], bytes}, tooBig: Set,
 * owner: Map}: `owner` names, for every asset and dependency not drawn as itself, the
 * element that stands for it (its closed group, the folded edge carrying it, or the
 * group both its ends are in), so highlights and selection find it.
 */
export function elements(topology, by, open = new Set(), maxMembers = 300) {
  const nodes = [];
  const edges = [];
  const groups = new Map();
  const tooBig = new Set();
  const owner = new Map();
  if (!by) {
    for (const n of topology.nodes) nodes.push({ data: nodeData(n) });
    for (const e of topology.edges) edges.push({ data: edgeData(e) });
    return { nodes, edges, groups, tooBig, owner };
  }
  const keyOf = new Map();
  for (const n of topology.nodes) {
    const key = groupKey(n, by) ?? NONE;
    keyOf.set(n.id, key);
    let g = groups.get(key);
    if (!g) {
      g = { key, members: [], bytes: 0, external: 0 };
      groups.set(key, g);
    }
    g.members.push(n);
    if (n.is_internal === false) g.external++;
  }
  const drawnOpen = (key) => open.has(key) && groups.get(key).members.length <= maxMembers;
  for (const [key, g] of groups) {
    if (open.has(key) && !drawnOpen(key)) tooBig.add(key);
    nodes.push({
      data: {
        id: `g:${key}`,
        label: drawnOpen(key) ? key : `${key} (${g.members.length})`,
        kind: 'group',
        group: key,
        size: g.members.length,
        open: drawnOpen(key),
        external: g.external === g.members.length,
      },
    });
    if (drawnOpen(key)) {
      for (const n of g.members) nodes.push({ data: { ...nodeData(n), parent: `g:${key}` } });
    } else {
      for (const n of g.members) owner.set(n.id, `g:${key}`);
    }
  }
  const folded = new Map();
  for (const e of topology.edges) {
    const sk = keyOf.get(e.source);
    const tk = keyOf.get(e.target);
    const s = drawnOpen(sk) ? e.source : `g:${sk}`;
    const t = drawnOpen(tk) ? e.target : `g:${tk}`;
    groups.get(sk).bytes += Number(e.total_bytes || 0);
    if (s === e.source && t === e.target) {
      edges.push({ data: edgeData(e) });
      continue;
    }
    if (s === t) {
      owner.set(e.id, s); // inside one closed group: counted on the group
      continue;
    }
    const id = `f:${s}>${t}`;
    owner.set(e.id, id);
    let f = folded.get(id);
    if (!f) {
      f = { id, source: s, target: t, kind: 'folded', count: 0, bytes: 0, flows: 0, stale: true };
      folded.set(id, f);
    }
    f.count++;
    f.bytes += Number(e.total_bytes || 0);
    f.flows += Number(e.total_flows || 0);
    f.stale = f.stale && e.stale;
  }
  for (const f of folded.values()) {
    edges.push({
      data: {
        ...f,
        label: f.count === 1 ? '1 dependency' : `${f.count} dependencies`,
        width: widthOf(f.bytes),
      },
    });
  }
  return { nodes, edges, groups, tooBig, owner };
}

function nodeData(n) {
  return {
    id: n.id,
    label: nodeLabel(n),
    kind: 'asset',
    type: n.asset_type,
    external: n.is_internal === false,
    environment: n.environment,
  };
}

function edgeData(e) {
  return {
    id: e.id,
    source: e.source,
    target: e.target,
    kind: 'dependency',
    label: edgeLabel(e),
    service: e.service || `${e.protocol}/${e.port}`,
    width: widthOf(e.total_bytes),
    bytes: Number(e.total_bytes || 0),
    stale: !!e.stale,
  };
}

/** A stable colour per service name. */
const PALETTE = ['#2f7ed8', '#0d9488', '#c2410c', '#7c3aed', '#be185d', '#4d7c0f', '#b45309', '#0369a1', '#a21caf', '#15803d'];
export function colourOf(service) {
  let h = 0;
  for (const c of String(service)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}
