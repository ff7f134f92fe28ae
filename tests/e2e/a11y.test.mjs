// An automated accessibility check (issue 18): axe-core (npm) over the page at 1280×800, before
// a model is loaded and with every area open after a run, a vector build and its reading, then
// at 390×844: no serious or critical WCAG 2.1 A/AA violations, and no sideways scroll on the
// phone. And the first-visit tour: shown once, step by step, closed for good, opened again.
// Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, watchPage } from './lib/browser.mjs';
import { REPOS } from './lib/env.mjs';
import { tid, pageUrl, waitForState, pickHubRepo, loadModel, setRecipe, screenshot } from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AXE = fs.readFileSync(path.join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const shared = sharedSession({ viewport: { width: 1280, height: 800 } });

/** axe's violations of WCAG 2.1 A/AA on the page as it is now: [{ id, impact, help, nodes }]. */
async function violations(p) {
  // Evaluated through the DevTools protocol: the page's Content-Security-Policy refuses an
  // inline <script> (addScriptTag), as it should.
  if (!(await p.evaluate(() => Boolean(window.axe)))) await p.evaluate(AXE);
  const r = await p.evaluate(() => window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }));
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.html.slice(0, 120)}`) }));
}

function assertNoSerious(found, where, t) {
  for (const v of found) t.diagnostic(`${where}: ${v.impact} ${v.id} (${v.help}): ${v.nodes.slice(0, 3).join(' | ')}`);
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${where}: serious or critical accessibility violations`);
}

test('no serious accessibility violations, on a computer and a phone', { timeout: 600_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
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
      .filter((e) => { for (let a = e.parentElement; a; a = a.parentElement) { if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(a).overflowX)) return false; } return true; }).slice(0, 12).map((e) => `${e.tagName.toLowerCase()}.${e.className}[${e.dataset.testid || ''}] right ${Math.round(e.getBoundingClientRect().right)}`));
    assert.ok(scroll <= width, `the phone layout scrolls sideways: ${scroll} px of content in ${width} px: ${wide.join(', ')}`);
    await screenshot(p, 'a11y-phone', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});

test('the first-visit tour: once, step by step, closed for good, opened again', { timeout: 300_000 }, async (t) => {
  const fresh = await launch({ viewport: { width: 1280, height: 800 }, tour: true });
  try {
    const p = await fresh.context.newPage();
    const probs = watchPage(p);
    await p.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url), { waitUntil: 'load' });
    const tour = tid(p, 'tour').first();
    await tour.waitFor({ timeout: 30_000 });
    const step = async () => Number(await tour.getAttribute('data-step'));
    const target = () => p.evaluate(() => [...document.querySelectorAll('[data-tour-target]')].map((e) => e.id));
    assert.equal(await step(), 0);
    assert.deepEqual(await target(), ['area-model'], 'step 1 outlines the model area');
    assert.match(await tid(p, 'tour-text').first().textContent(), /Load/);
    assert.equal(await p.evaluate(() => window.scrollY), 0, 'the first step does not scroll the page');
    assertNoSerious(await violations(p), 'tour open', t);
    await screenshot(p, 'tour-step1', t);

    // Next and Back walk the steps; each outlines its area and brings it into view.
    await tid(p, 'tour-next').first().click();
    assert.equal(await step(), 1);
    assert.deepEqual(await target(), ['area-recipe']);
    assert.equal(await p.evaluate(() => document.activeElement?.dataset.testid), 'tour-next', 'focus stays on Next');
    await tid(p, 'tour-next').first().click();
    assert.deepEqual(await target(), ['area-results']);
    await tid(p, 'tour-back').first().click();
    assert.equal(await step(), 1);
    await tid(p, 'tour-next').first().click();
    await tid(p, 'tour-next').first().click();
    assert.equal(await step(), 3);
    assert.deepEqual(await target(), ['area-gallery']);
    await p.setViewportSize({ width: 390, height: 844 });
    await p.waitForTimeout(300);
    const box = await tour.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390, `the tour fits the phone: ${JSON.stringify(box)}`);
    await screenshot(p, 'tour-phone', t);
    await p.setViewportSize({ width: 1280, height: 800 });
    assert.equal(await tid(p, 'tour-next').first().textContent(), 'Done');
    await tid(p, 'tour-next').first().click();
    await tour.waitFor({ state: 'detached', timeout: 5_000 });
    assert.deepEqual(await target(), [], 'no outline is left after the tour');

    // Closed for good: a reload does not show it; the header's button opens it again, and
    // Escape closes it.
    await p.reload({ waitUntil: 'load' });
    await tid(p, 'prompt').first().waitFor({ timeout: 30_000 });
    await p.waitForTimeout(500);
    assert.equal(await tid(p, 'tour').count(), 0, 'the tour comes back after it was closed');
    await tid(p, 'tour-open').first().click();
    await tour.waitFor({ timeout: 5_000 });
    assert.equal(await step(), 0);
    await p.waitForFunction(() => document.activeElement?.dataset.testid === 'tour-next', null, { timeout: 5_000 });
    await p.keyboard.press('Escape');
    await tour.waitFor({ state: 'detached', timeout: 5_000 });
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await fresh.close();
  }
});
