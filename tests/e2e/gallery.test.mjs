// The gallery (issue 18): each kind of example set up with one click and run end to end on the
// tiny model, as a student would: an ActAdd preset (Run), the wedding perplexity study (Run
// sweep), a CAA vector (Build, Use in recipe, Run), and the A/B measure (Build, Evaluate); with
// focus following Run and Stop, and a chart's tooltip pinned by a tap.
// Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tid, waitForState, getValue, screenshot } from './lib/contract.mjs';
import { loadTinyCpu } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();

const item = (p, id) => p.locator(`[data-testid="gallery-item"][data-id="${id}"]`);

async function setUp(p, id, note) {
  await item(p, id).locator('[data-testid="gallery-try"]').click();
  await p.waitForFunction((want) => [...document.querySelectorAll('[data-testid="gallery-note"]')].some((n) => n.textContent.includes(want)), note, { timeout: 5_000 });
}

test('the gallery sets up each kind of example, and each runs on the tiny model', { timeout: 600_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await loadTinyCpu(p);
    await p.locator('[data-testid="gallery"] summary').click();
    assert.ok((await p.locator('[data-testid="gallery-item"]').count()) >= 6, 'the gallery lists its examples');
    await screenshot(p, 'gallery', t);

    // ActAdd: the post's Love − Hate, then Run.
    await setUp(p, 'love-hate', 'press Run');
    assert.equal(await getValue(p, 'prompt'), 'I hate you because');
    // Focus follows the run: Run hands it to Stop while the run goes, Stop back to Run at the end.
    await p.evaluate(() => { window.__focused = []; document.addEventListener('focusin', (e) => window.__focused.push(e.target.dataset?.testid || e.target.tagName)); });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });
    await p.waitForFunction(() => document.activeElement?.dataset.testid === 'run', null, { timeout: 5_000 });
    const focused = await p.evaluate(() => window.__focused);
    assert.deepEqual(focused.filter((f) => f !== 'run').slice(0, 1), ['stop'], `focus went through ${focused.join(', ')}`);

    // The wedding study: the sweep panel opens with the wedding vector; Run sweep.
    await setUp(p, 'wedding-sweep', 'Run sweep');
    assert.ok(await tid(p, 'sweep-panel').first().evaluate((d) => d.open), 'the sweep panel is open');
    await tid(p, 'sweep-run').first().click();
    await waitForState(p, 'sweep-progress', 'done', 240_000, { failOn: ['error'] });
    assert.ok(Number(await tid(p, 'sweep-chart').first().getAttribute('data-points')) > 0, 'the sweep drew points');
    // A tap (click) pins a point's tooltip, which stays when the pointer leaves; a tap on the
    // chart elsewhere takes it away.
    const point = tid(p, 'sweep-point').first();
    await point.click();
    await p.mouse.move(0, 0);
    await tid(p, 'sweep-tooltip').first().waitFor({ timeout: 5_000 });
    const chart = await tid(p, 'sweep-chart').first().boundingBox();
    await p.mouse.click(chart.x + 8, chart.y + 8);
    await tid(p, 'sweep-tooltip').first().waitFor({ state: 'detached', timeout: 5_000 });

    // CAA: build the sentiment vector, use it, Run.
    await setUp(p, 'caa-sentiment', 'Build vector');
    assert.equal(await tid(p, 'vec-preset').first().inputValue(), 'sentiment');
    await tid(p, 'vec-build').first().click();
    await waitForState(p, 'vec-status', 'done', 120_000, { failOn: ['error'] });
    await tid(p, 'vec-use').first().click();
    await tid(p, 'vector-term-row').first().waitFor({ timeout: 5_000 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });

    // CAA's A/B measure: build (a quarter held out), Evaluate.
    await setUp(p, 'caa-optimism', 'Build vector');
    assert.equal(await tid(p, 'vec-held-out').first().inputValue(), '0.25');
    await tid(p, 'vec-build').first().click();
    await waitForState(p, 'vec-status', 'done', 120_000, { failOn: ['error'] });
    await tid(p, 'vec-eval-run').first().click();
    await waitForState(p, 'vec-eval-status', 'done', 120_000, { failOn: ['error'] });
    assert.ok((await tid(p, 'vec-eval-point').count()) > 0, 'the evaluation drew points');

    // Speak French: the English − French pairs are picked.
    await setUp(p, 'speak-french', 'Build vector');
    assert.equal(await tid(p, 'vec-preset').first().inputValue(), 'english-french');
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
