// The console's pure parts, without a browser: grouping and folding (graph.js) and
// the tag editor's text form (panels.js). Run with the browser tests
// (flowlens-daemon/tests/console_browser.rs) or alone: node --test tests/unit.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prefixOf, groupKey, elements, NONE, widthOf } from '../src/graph.js';
import { tagsToText, textToTags } from '../src/panels.js';

test('subnets: the inventory names one, else the /24 or /64 of the first address', () => {
  assert.equal(prefixOf('10.1.2.3'), '10.1.2.0/24');
  assert.equal(prefixOf('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(prefixOf('fe80:1:2:3:4:5:6:7'), 'fe80:1:2:3::/64');
  assert.equal(prefixOf(undefined), null);
  assert.equal(groupKey({ subnet: 'subnet-0abc', ip_addresses: ['10.0.0.1'] }, 'subnet'), 'subnet-0abc');
  assert.equal(groupKey({ ip_addresses: ['10.0.0.1'] }, 'subnet'), '10.0.0.0/24');
  assert.equal(groupKey({ tags: { team: 'pay', n: 3 } }, 'tag:team'), 'pay');
  assert.equal(groupKey({ tags: { team: 'pay', n: 3 } }, 'tag:n'), '3');
  assert.equal(groupKey({ tags: {} }, 'tag:team'), null);
  assert.equal(groupKey({ environment: 'prod' }, ''), null);
});

const topology = {
  nodes: [
    { id: 'a', name: 'a', asset_type: 'server', ip_addresses: ['10.0.0.1'], tags: {} },
    { id: 'b', name: 'b', asset_type: 'server', ip_addresses: ['10.0.0.2'], tags: {} },
    { id: 'c', name: 'c', asset_type: 'server', ip_addresses: ['10.0.1.1'], tags: {} },
    { id: 'x', name: null, asset_type: 'unknown', ip_addresses: ['203.0.113.9'], is_internal: false, tags: {} },
  ],
  edges: [
    { id: 'ab', source: 'a', target: 'b', protocol: 6, port: 80, total_bytes: 100, total_flows: 1, stale: false },
    { id: 'ac', source: 'a', target: 'c', protocol: 6, port: 443, total_bytes: 1000, total_flows: 2, stale: false },
    { id: 'bc', source: 'b', target: 'c', protocol: 6, port: 443, total_bytes: 500, total_flows: 3, stale: true },
    { id: 'cx', source: 'c', target: 'x', protocol: 17, port: 53, total_bytes: 7, total_flows: 1, stale: false, service: 'dns' },
  ],
};

test('ungrouped: every asset and dependency as it is', () => {
  const e = elements(topology, '');
  assert.deepEqual(e.nodes.map((n) => n.data.id), ['a', 'b', 'c', 'x']);
  assert.deepEqual(e.edges.map((n) => n.data.id), ['ab', 'ac', 'bc', 'cx']);
  assert.equal(e.nodes[3].data.label, '203.0.113.9', 'unnamed: its address');
  assert.equal(e.nodes[3].data.external, true);
  assert.equal(e.edges[3].data.label, 'dns 53');
  assert.equal(e.edges[0].data.label, 'tcp/80');
});

test('grouped and closed: a node per group, edges between groups summed, none inside', () => {
  const e = elements(topology, 'subnet');
  assert.deepEqual(e.nodes.map((n) => n.data.id).sort(), ['g:10.0.0.0/24', 'g:10.0.1.0/24', 'g:203.0.113.0/24']);
  const folded = Object.fromEntries(e.edges.map((x) => [x.data.id, x.data]));
  assert.deepEqual(Object.keys(folded).sort(), ['f:g:10.0.0.0/24>g:10.0.1.0/24', 'f:g:10.0.1.0/24>g:203.0.113.0/24']);
  const ac = folded['f:g:10.0.0.0/24>g:10.0.1.0/24'];
  assert.equal(ac.count, 2);
  assert.equal(ac.bytes, 1500);
  assert.equal(ac.stale, false, 'one live dependency makes the folded edge live');
  // Each dependency is found through what stands for it: the folded edge, or the
  // group both its ends are in.
  assert.deepEqual([...e.owner].filter(([, v]) => v === 'f:g:10.0.0.0/24>g:10.0.1.0/24').map(([k]) => k).sort(), ['ac', 'bc']);
  assert.equal(e.owner.get('ab'), 'g:10.0.0.0/24');
  assert.equal(e.owner.get('a'), 'g:10.0.0.0/24');
  assert.equal(e.groups.get('10.0.0.0/24').members.length, 2);
});

test('an opened group draws its members inside it; a too big one stays closed', () => {
  const e = elements(topology, 'subnet', new Set(['10.0.0.0/24']));
  const a = e.nodes.find((n) => n.data.id === 'a');
  assert.equal(a.data.parent, 'g:10.0.0.0/24');
  const ids = e.edges.map((x) => x.data.id).sort();
  assert.deepEqual(ids, ['ab', 'f:a>g:10.0.1.0/24', 'f:b>g:10.0.1.0/24', 'f:g:10.0.1.0/24>g:203.0.113.0/24']);
  assert.equal(e.owner.get('a'), undefined, 'drawn as itself');
  assert.equal(e.owner.get('ac'), 'f:a>g:10.0.1.0/24');
  const big = elements(topology, 'subnet', new Set(['10.0.0.0/24']), 1);
  assert.ok(big.tooBig.has('10.0.0.0/24'));
  assert.ok(!big.nodes.some((n) => n.data.id === 'a'));
  assert.equal(big.owner.get('a'), 'g:10.0.0.0/24', 'a too big group stands for its members');
});

test('assets without a value group under (none)', () => {
  const e = elements(topology, 'environment');
  assert.deepEqual(e.nodes.map((n) => n.data.id), [`g:${NONE}`]);
  assert.equal(e.edges.length, 0);
});

test('edge width grows with the logarithm of bytes, 1 to 12 px', () => {
  assert.equal(widthOf(0), 1);
  assert.ok(widthOf(1e6) > widthOf(1e4));
  assert.equal(widthOf(1e30), 12);
});

test('tags survive the editor unchanged, strings that look like JSON included', () => {
  const tags = { port: '8080', n: 8080, yes: true, off: 'false', plain: 'payments team', quoted: '"x"', list: [1, 'a'], obj: { k: 'v' }, pad: ' x ', empty: '' };
  assert.deepEqual(textToTags(tagsToText(tags)), tags);
  assert.deepEqual(textToTags('team=pay\n\n tier = 1 \nflag'), { team: 'pay', tier: 1, flag: '' });
});
