// Load every shipped workflow in the real ComfyUI frontend (headless Chromium) and check that
// no node is missing (no red nodes), that our web extension loads without page errors, and that
// the frontend's own API export of each graph equals its twin in workflows/api/.
//
//   npm install --prefix /tmp/uicheck playwright-core   # plus Debian's chromium
//   NODE_PATH=/tmp/uicheck/node_modules node scripts/dev/check_frontend.cjs http://127.0.0.1:8188 workflows
//
// A development check, not part of CI (it needs a browser). Missing-file 404s for input previews
// are expected when the example media are not in ComfyUI's input folder.
const { chromium } = require('playwright-core');
const fs = require('fs');

(async () => {
const url = process.argv[2]; const wfdir = process.argv[3];
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--disable-background-networking','--disable-component-update','--disable-sync','--no-first-run'] });
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const errors = [];
page.on('pageerror', e => errors.push('pageerror: ' + e.message));
page.on('console', m => { if (m.type() === 'error') errors.push('console: ' + m.text()); }); page.on('response', r => { if (r.status() >= 400) errors.push('HTTP ' + r.status() + ' ' + r.url()); });
await page.goto(url, { waitUntil: 'networkidle' });
await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 60000 });
const ext = await page.evaluate(() => (window.app.extensions || []).map(e => e.name));
console.log('extensions with DigitalHuman:', ext.filter(n => /digital|dh/i.test(n)));
for (const f of fs.readdirSync(wfdir).filter(f => f.endsWith('.json'))) {
  const wf = JSON.parse(fs.readFileSync(wfdir + '/' + f));
  const res = await page.evaluate(async (wf) => {
    await window.app.loadGraphData(wf);
    const nodes = window.app.graph._nodes;
    const missing = nodes.filter(n => !window.LiteGraph.registered_node_types[n.type]).map(n => n.type);
    const widgets = {};
    for (const n of nodes) if (n.type.startsWith('DH_')) widgets[n.type] = (n.widgets || []).map(w => w.name);
    const prompt = await window.app.graphToPrompt();
    return { count: nodes.length, missing, widgets, api: prompt.output };
  }, wf);
  const api = JSON.parse(fs.readFileSync(wfdir + '/api/' + f));
  // the frontend's own API export must equal our API twin (widget values in the right slots)
  let diffs = [];
  for (const [id, node] of Object.entries(api)) {
    const got = res.api[id];
    if (!got) { diffs.push(`${id} missing in export`); continue; }
    for (const [k, v] of Object.entries(node.inputs)) {
      if (JSON.stringify(got.inputs[k]) !== JSON.stringify(v)) diffs.push(`${id}.${k}: export ${JSON.stringify(got.inputs[k])} vs ours ${JSON.stringify(v)}`);
    }
  }
  if (res.missing.length || diffs.length) process.exitCode = 1;
  console.log(f, 'nodes', res.count, 'missing', JSON.stringify(res.missing), 'diffs', diffs.length ? diffs.slice(0, 6) : 'none');
  }
const real = errors.filter(e => !/^HTTP 404 .*\/view\?/.test(e) && !/Failed to load resource/.test(e));
console.log('errors:', real);
let failed = real.length > 0;
await browser.close();
if (failed) process.exitCode = 1;
})();
