// An automated accessibility check (issue 18): axe-core (npm) over the page at 1280×800, before
// a model is loaded and with every area open after a run, a vector build and its reading, then
// at 390×844: no serious or critical WCAG 2.1 A/AA violations, and no sideways scroll on the
// phone. Self-contained: its own servers and browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, watchPage } from './lib/browser.mjs';
import { startServers, REPOS } from './lib/env.mjs';
import { tid, pageUrl, waitForState, pickHubRepo, loadModel, setRecipe, screenshot } from './lib/contract.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AXE = fs.readFileSync(path.join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
let servers;
let session;

before(async () => {
  servers = await startServers();
  session = await launch({ viewport: { width: 1280, height: 800 } });
});

after(async () => {
  await session?.close?.().catch(() => {});
  await servers?.close();
});

/** axe's violations of WCAG 2.1 A/AA on the page as it is now: [{ id, impact, help, nodes }]. */
async function violations(p) {
  if (!(await p.evaluate(() => Boolean(window.axe)))) await p.addScriptTag({ content: AXE });
  const r = await p.evaluate(() => window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }));
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.html.slice(0, 120)}`) }));
}

function assertNoSerious(found, where, t) {
  for (const v of found) t.diagnostic(`${where}: ${v.impact} ${v.id} (${v.help}): ${v.nodes.slice(0, 3).join(' | ')}`);
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${where}: serious or critical accessibility violations`);
}

test('no serious accessibility violations, on a computer and a phone', { timeout: 600_000 }, async (t) => {
  const p = await session.context.newPage();
  const probs = watchPage(p);
  try {
    await p.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
    await tid(p, 'prompt').first().waitFor({ timeout: 30_000 });
    assertNoSerious(await violations(p), 'first visit', t);
    // The areas bar opens a folded area and brings it to the top.
    await p.locator('[data-testid="area-nav"] a[data-area="area-vectors"]').click();
    await p.waitForFunction(() => document.getElementById('area-vectors')?.open, null, { timeout: 5_000 });
    await p.waitForTimeout(300);
    const top = await p.evaluate(() => document.getElementById('area-vectors').getBoundingClientRect().top);
    assert.ok(top >= 0 && top < 120, `the Vectors area is at the top after its link: ${top}`);
    await screenshot(p, 'a11y-area-nav', t);

    // Every area open, with what a lesson puts in them.
    await p.locator('[data-testid="engine-select"]').selectOption('cpu');
    await pickHubRepo(p, REPOS.tiny);
    await loadModel(p, { timeout: 120_000 });
    await setRecipe(p, { prompt: 'I think that', n: 1, maxTokens: 4, seed: 7 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });
    for (const d of await p.locator('details').all()) {
      if (!(await d.evaluate((e) => e.open))) await d.locator('summary').first().click();
    }
    await tid(p, 'vec-preset').first().selectOption('optimism-ab');
    await tid(p, 'vec-build').first().click();
    await waitForState(p, 'vec-status', 'done', 120_000, { failOn: ['error'] });
    await tid(p, 'vec-eval-run').first().click();
    await waitForState(p, 'vec-eval-status', 'done', 120_000, { failOn: ['error'] });
    await tid(p, 'vec-read').first().click();
    await waitForState(p, 'vec-reading', 'done', 60_000, { failOn: ['error'] });
    assertNoSerious(await violations(p), 'every area open, 1280×800', t);

    // The phone: the same page, no sideways scroll.
    await p.setViewportSize({ width: 390, height: 844 });
    await p.waitForTimeout(300);
    assertNoSerious(await violations(p), 'every area open, 390×844', t);
    const { scroll, width } = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
    const wide = await p.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5 && getComputedStyle(e).position !== 'fixed')
      .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}.${e.className}[${e.dataset.testid || ''}] right ${Math.round(e.getBoundingClientRect().right)}`));
    assert.ok(scroll <= width, `the phone layout scrolls sideways: ${scroll} px of content in ${width} px: ${wide.join(', ')}`);
    await screenshot(p, 'a11y-phone', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
