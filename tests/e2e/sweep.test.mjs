// The sweep panel on its own ("Sweeps: which layer, which coefficient"): a layer ×
// coefficient sweep of Love − Hate on the 4-layer tiny model, drawn with every coefficient at
// once (a line per set and coefficient), hovered, downloaded as CSV, and carried by a share
// link into a new page. Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { watchPage } from './lib/browser.mjs';
import { REPOS } from './lib/env.mjs';
import {
  tid, pageUrl, waitForState, pickHubRepo, loadModel, setTerms, setSweep, readSweep, readSweepPoints,
  readShareLink, screenshot, OUT_DIR, attr, setValue, click, expectPresent, parseCsv,
} from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const TERMS = [
  { text: 'Love', layer: 1, coeff: 1 },
  { text: 'Hate', layer: 1, coeff: -1 },
];
const SETS = [
  { name: 'related', texts: ['The bride and groom danced at the wedding.', 'We planned the wedding for June.'] },
  { name: 'unrelated', texts: ['The train leaves the station at seven.', 'He fixed the kitchen tap today.'] },
];
const SWEEP = { sets: SETS, from: 0, to: 3, coeffs: '0,2', x: 'layer', metric: 'ppl_ratio' };
const TIMEOUT = 180_000;

const shared = sharedSession();

test('sweep: 2 sets × 4 layers × 2 coefficients, chart, tooltip, CSV, share link', { timeout: 600_000 }, async (t) => {
  const p = await shared.session.context.newPage();
  const probs = watchPage(p);
  let other = null;
  try {
    await p.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url), { waitUntil: 'load' });
    await pickHubRepo(p, REPOS.tiny);
    await loadModel(p, { timeout: 120_000 });
    await setTerms(p, TERMS);
    await setSweep(p, SWEEP);
    const errs = (await tid(p, 'sweep-error').allTextContents()).map((x) => x.trim());
    assert.deepEqual(errs, [], 'valid sweep settings show an error');

    const t0 = Date.now();
    await click(p, 'sweep-run');
    await expectPresent(p, 'sweep-progress', 10_000, 'after clicking sweep-run');
    await waitForState(p, 'sweep-progress', 'done', TIMEOUT, { failOn: ['error'] }).catch(async (e) => {
      const shown = await tid(p, 'sweep-error').allTextContents().catch(() => []);
      throw new Error(`${e.message}; sweep-error: ${JSON.stringify(shown)}`);
    });
    t.diagnostic(`sweep took ${Date.now() - t0} ms`);
    assert.equal(await attr(p, 'sweep-progress', 'data-done'), await attr(p, 'sweep-progress', 'data-total'), 'the progress bar does not end at 100 %');

    // Every coefficient at once: a line per (set, coefficient), 2 × 4 × 2 = 16 points.
    await setValue(p, 'sweep-pick', 'all');
    await p.waitForFunction(() => document.querySelector('[data-testid="sweep-chart"]')?.getAttribute('data-points') === '16', null, { timeout: 10_000 })
      .catch(async () => { throw new Error(`sweep-chart data-points is ${await attr(p, 'sweep-chart', 'data-points')}, not 16`); });
    const points = await readSweepPoints(p);
    assert.equal(points.length, 16);
    const key = (q) => `${q.set}/${q.layer}/${q.coeff}`;
    const want = SETS.flatMap((s) => [0, 1, 2, 3].flatMap((l) => [0, 2].map((c) => `${s.name}/${l}/${c}`)));
    assert.deepEqual(points.map(key).sort(), want.sort(), 'the points are not every (set, layer, coefficient)');
    const atZero = points.filter((q) => q.coeff === 0);
    assert.deepEqual(atZero.map((q) => q.raw), Array(8).fill('1'), `ratios at coefficient 0 are not exactly 1: ${JSON.stringify(atZero)}`);
    assert.ok(points.filter((q) => q.coeff === 2).every((q) => Number.isFinite(q.value) && q.value > 0), `bad points: ${JSON.stringify(points)}`);
    assert.ok(points.some((q) => q.coeff === 2 && q.value !== 1), 'coefficient 2 changed no perplexity at all');
    const chartText = await tid(p, 'sweep-chart').first().textContent();
    assert.match(chartText, /line style = coefficient/, 'the chart does not say what the line styles mean');
    assert.ok(chartText.includes('× 0') && chartText.includes('× 2'), `the legend does not name the coefficients: ${chartText}`);

    // Hovering a steered point: its <title> (the browser's tooltip) and the drawn tooltip give its values.
    const target = p.locator('[data-testid="sweep-point"][data-coeff="2"]').nth(5);
    const info = await target.evaluate((e) => ({
      set: e.getAttribute('data-set'), layer: e.getAttribute('data-layer'), coeff: e.getAttribute('data-coeff'),
      value: Number(e.getAttribute('data-value')), title: e.querySelector('title')?.textContent || '',
    }));
    t.diagnostic(`point ${JSON.stringify(info)}`);
    assert.ok(info.title.includes(info.set) && info.title.includes(`layer ${info.layer}`) && info.title.includes(`× ${info.coeff}`),
      `the point's <title> ${JSON.stringify(info.title)} does not name it`);
    const inTitle = Number(/perplexity ratio ([\d.]+)/.exec(info.title)?.[1]);
    assert.ok(Math.abs(inTitle - info.value) <= 5e-4 * info.value, `title ratio ${inTitle} is not the point's ${info.value}`);
    await tid(p, 'sweep-chart').first().scrollIntoViewIfNeeded();
    await target.hover();
    const tip = tid(p, 'sweep-tooltip').first();
    await tip.waitFor({ state: 'visible', timeout: 5_000 }).catch(() => { throw new Error('hovering a sweep-point shows no sweep-tooltip'); });
    const tipText = await tip.textContent();
    t.diagnostic(`tooltip: ${tipText}`);
    assert.ok(tipText.includes(info.set) && tipText.includes(`layer ${info.layer}`), `tooltip ${JSON.stringify(tipText)} does not name the point`);
    // The chart as a student sees it, tooltip included (no scroll between hover and shot).
    fs.mkdirSync(OUT_DIR, { recursive: true });
    await tid(p, 'sweep-chart').first().screenshot({ path: path.join(OUT_DIR, 'sweep-chart-tooltip.png') });
    await p.mouse.move(0, 0);
    await tid(p, 'sweep-panel').first().scrollIntoViewIfNeeded();

    // CSV: to_csv_with_terms's header and a row per (set, layer, coefficient).
    const [download] = await Promise.all([p.waitForEvent('download', { timeout: 10_000 }), click(p, 'sweep-csv')]);
    const csv = fs.readFileSync(await download.path(), 'utf8');
    t.diagnostic(`CSV ${download.suggestedFilename()}:\n${csv.split('\n').slice(0, 3).join('\n')}`);
    assert.match(download.suggestedFilename(), /\.csv$/);
    const rows = parseCsv(csv);
    assert.match(rows[0].join(','), /^set,layer,multiplier,coefficients,ppl_ratio,kl/, `CSV header: ${rows[0]}`);
    assert.equal(rows.length - 1, 16, 'CSV rows are not 2 sets × 4 layers × 2 coefficients');

    // The share link carries the sweep settings into a new page.
    const mine = await readSweep(p);
    let link = '';
    for (let i = 0; i < 50 && !link.includes('#'); i++) { link = await readShareLink(p); await p.waitForTimeout(100); }
    t.diagnostic(`share link: ${link.length} chars`);
    assert.ok(link.includes('#'), `no share link: ${JSON.stringify(link)}`);
    other = await shared.session.context.newPage();
    const otherProbs = watchPage(other);
    await other.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url, new URL(link, shared.servers.site.url).hash), { waitUntil: 'load' });
    await expectPresent(other, 'sweep-panel', 30_000);
    await other.waitForFunction(() => document.querySelectorAll('[data-testid="sweep-set"]').length === 2, null, { timeout: 10_000 });
    const restored = await readSweep(other);
    t.diagnostic(`restored: ${JSON.stringify(restored)}`);
    assert.equal(restored.coeffs, '0,2', 'the link did not restore the coefficients');
    assert.deepEqual(restored.sets, SETS, 'the link did not restore the evaluation sets');
    // Layers 0..3 are every layer of the tiny model, which the link says as "every layer": until
    // the linked model is loaded the range covers the page's default depth, then 0..3.
    const { from: _f, to: _t, ...rest } = restored;
    const { from: _mf, to: _mt, ...mineRest } = mine;
    assert.deepEqual(rest, mineRest, 'the link did not restore every sweep setting');
    await tid(other, 'confirm-download').first().click();
    await waitForState(other, 'model-status', 'ready', 120_000, { failOn: ['error'] });
    await other.waitForFunction(() => document.querySelector('[data-testid="sweep-layer-to"]')?.value === '3', null, { timeout: 10_000 })
      .catch(() => { throw new Error('after loading the linked model the layer range is not 0..3'); });
    assert.deepEqual(await readSweep(other), mine, 'the link did not restore every sweep setting');
    assert.deepEqual(otherProbs.pageErrors, [], `page errors in the opened link: ${otherProbs.pageErrors.join('\n')}`);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    // The whole page, and the panel alone, as a student sees them.
    await screenshot(p, 'sweep-chart', t);
    await tid(p, 'sweep-panel').first().screenshot({ path: path.join(OUT_DIR, 'sweep-chart-panel.png'), timeout: 20_000 }).catch(() => {});
    await other?.close().catch(() => {});
    await p.close();
  }
});
