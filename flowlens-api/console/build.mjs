// Bundles the console into dist/: the script and styles with a hash of their contents
// in their names (so the API can let browsers keep them a year), index.html naming
// them, and a .gz twin of each text file for clients that take gzip.
// Run by `cargo xtask build-console` (after `npm ci`); `node build.mjs` works too.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { gzipSync, constants } from 'node:zlib';
import { createHash } from 'node:crypto';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const assets = join(dist, 'assets');

// Keep dist/.gitignore: the directory is in git so the API's build script can watch it.
for (const f of readdirSync(dist, { withFileTypes: true })) {
  if (f.name !== '.gitignore') rmSync(join(dist, f.name), { recursive: true, force: true });
}
mkdirSync(assets, { recursive: true });

const result = await build({
  entryPoints: [join(here, 'src/main.js'), join(here, 'src/style.css')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  outdir: assets,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  loader: { '.svg': 'file' },
  metafile: true,
  legalComments: 'linked',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const script = outputs.find((n) => n.startsWith('main-') && n.endsWith('.js'));
const style = outputs.find((n) => n.startsWith('style-') && n.endsWith('.css'));
if (!script || !style) throw new Error(`unexpected outputs: ${outputs.join(', ')}`);

const icon = readFileSync(join(here, 'src/icon.svg'));
const iconName = `icon-${createHash('sha256').update(icon).digest('hex').slice(0, 8)}.svg`;
writeFileSync(join(assets, iconName), icon);

// The stylesheet carries Cytoscape's id: Cytoscape then finds "its" stylesheet and
// does not insert an inline <style>, which the Content-Security-Policy would refuse.
const index = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>FlowLens</title>
<link rel="icon" href="/assets/${iconName}" type="image/svg+xml">
<link rel="stylesheet" id="__________cytoscape_stylesheet" href="/assets/${style}">
<script type="module" src="/assets/${script}"></script>
</head>
<body>
<noscript>The FlowLens console needs JavaScript.</noscript>
<div id="app"></div>
</body>
</html>
`;
writeFileSync(join(dist, 'index.html'), index);

let total = 0;
let compressed = 0;
for (const name of readdirSync(assets)) {
  const path = join(assets, name);
  const body = readFileSync(path);
  total += body.length;
  if (/\.(js|css|svg|txt)$/.test(name)) {
    const gz = gzipSync(body, { level: constants.Z_BEST_COMPRESSION });
    writeFileSync(`${path}.gz`, gz);
    compressed += gz.length;
  } else {
    compressed += body.length;
  }
}
console.log(`console: dist/ written (${script}, ${style}); ${total} bytes, ${compressed} gzipped`);
