// `cargo xtask bench console`: the console in Debian's chromium (playwright-core)
// against a flowlens-api serving the `bench api` graph (10 000 assets, 50 000
// dependencies). Measures, per run, in a fresh tab:
//   collapsed  sign-in click -> map drawn (grouped by subnet) and the main thread free
//              (the first animation frame after it)
//   expanded   opening the biggest group -> its assets drawn, thread free
//   pan        the longest task while dragging and zooming the map for 3 s
// and prints one JSON object: every run's figures and the medians.
// Environment: FLOWLENS_URL, FLOWLENS_TOKEN, FLOWLENS_RUNS (5), FLOWLENS_CHROMIUM.
import { chromium } from 'playwright-core';

const URL = process.env.FLOWLENS_URL;
const TOKEN = process.env.FLOWLENS_TOKEN;
const RUNS = Number(process.env.FLOWLENS_RUNS || 5);
const browser = await chromium.launch({
  executablePath: process.env.FLOWLENS_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Resolves, in the page, once the next frame has been painted. */
const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));

const runs = [];
for (let i = 0; i < RUNS; i++) {
  const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.__long = [];
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) window.__long.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
  });
  await page.goto(`${URL}/`);
  await page.fill('#credential', TOKEN);
  const t0 = await page.evaluate(() => performance.now());
  await page.click('#signin-submit');
  await page.waitForFunction(() => document.body.dataset.mapReady && window.flowlens);
  const t1 = await page.evaluate(frame).then(() => page.evaluate(() => performance.now()));
  const groups = await page.evaluate(() => window.flowlens.groups().length);
  const assets = await page.evaluate(() => window.flowlens.topology().nodes.length);
  const deps = await page.evaluate(() => window.flowlens.topology().edges.length);

  // Expand the biggest group.
  const biggest = await page.evaluate(() => window.flowlens.groupSizes()[0]);
  const e0 = await page.evaluate(() => performance.now());
  await page.evaluate(
    (key) =>
      new Promise((resolve) => {
        window.addEventListener('flowlens:drawn', () => resolve(), { once: true });
        window.flowlens.open(key);
      }),
    biggest[0],
  );
  const e1 = await page.evaluate(frame).then(() => page.evaluate(() => performance.now()));
  const drawnAssets = await page.evaluate(() => window.flowlens.assets().length);
  const drawnEdges = await page.evaluate(() => window.flowlens.drawnEdges());

  // Pan and zoom for 3 s, then read the long tasks that started meanwhile.
  const p0 = await page.evaluate(() => performance.now());
  const box = await page.locator('#cy').boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const until = Date.now() + 3000;
  let step = 0;
  while (Date.now() < until) {
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let k = 0; k < 10; k++) await page.mouse.move(cx + (k - 5) * 30, cy + ((step % 2) * 2 - 1) * k * 12);
    await page.mouse.up();
    await page.mouse.wheel(0, step % 2 ? 240 : -240);
    step++;
  }
  await page.evaluate(frame);
  const long = await page.evaluate(() => window.__long);
  const panLong = long.filter((t) => t.start >= p0).map((t) => t.duration);
  const loadLong = long.filter((t) => t.start >= t0 && t.start < t1).map((t) => t.duration);
  runs.push({
    collapsed_ms: Math.round(t1 - t0),
    collapsed_groups: groups,
    expanded_ms: Math.round(e1 - e0),
    expanded_group: biggest[0],
    expanded_assets_drawn: drawnAssets,
    expanded_edges_drawn: drawnEdges,
    pan_longest_task_ms: Math.round(Math.max(0, ...panLong)),
    pan_long_tasks: panLong.length,
    load_longest_task_ms: Math.round(Math.max(0, ...loadLong)),
    assets,
    dependencies: deps,
  });
  await context.close();
}
await browser.close();
const pick = (k) => median(runs.map((r) => r[k]));
console.log(
  JSON.stringify({
    runs,
    median: {
      collapsed_ms: pick('collapsed_ms'),
      expanded_ms: pick('expanded_ms'),
      pan_longest_task_ms: pick('pan_longest_task_ms'),
      load_longest_task_ms: pick('load_longest_task_ms'),
    },
  }),
);
