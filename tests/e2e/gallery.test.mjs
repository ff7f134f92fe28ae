// The gallery (issue 18): each kind of example set up with one click and run end to end on the
// tiny model, as a student would: an ActAdd preset (Run), the wedding perplexity study (Run
// sweep), a CAA vector (Build, Use in recipe, Run), and the A/B measure (Build, Evaluate).
// Self-contained: its own servers and browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, watchPage } from './lib/browser.mjs';
import { startServers } from './lib/env.mjs';
import { tid, pageUrl, waitForState, getValue, screenshot } from './lib/contract.mjs';
import { loadTinyCpu } from './lib/vectors.mjs';

let servers;
let session;

before(async () => {
  servers = await startServers();
  session = await launch();
});

after(async () => {
  await session?.close?.().catch(() => {});
  await servers?.close();
});

const item = (p, id) => p.locator(`[data-testid="gallery-item"][data-id="${id}"]`);

async function setUp(p, id, note) {
  await item(p, id).locator('[data-testid="gallery-try"]').click();
  await p.waitForFunction((want) => [...document.querySelectorAll('[data-testid="gallery-note"]')].some((n) => n.textContent.includes(want)), note, { timeout: 5_000 });
}

test('the gallery sets up each kind of example, and each runs on the tiny model', { timeout: 600_000 }, async (t) => {
  const p = await session.context.newPage();
  const probs = watchPage(p);
  try {
    await p.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
    await loadTinyCpu(p);
    await p.locator('[data-testid="gallery"] summary').click();
    assert.ok((await p.locator('[data-testid="gallery-item"]').count()) >= 6, 'the gallery lists its examples');
    await screenshot(p, 'gallery', t);

    // ActAdd: the post's Love − Hate, then Run.
    await setUp(p, 'love-hate', 'press Run');
    assert.equal(await getValue(p, 'prompt'), 'I hate you because');
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });

    // The wedding study: the sweep panel opens with the wedding vector; Run sweep.
    await setUp(p, 'wedding-sweep', 'Run sweep');
    assert.ok(await tid(p, 'sweep-panel').first().evaluate((d) => d.open), 'the sweep panel is open');
    await tid(p, 'sweep-run').first().click();
    await waitForState(p, 'sweep-progress', 'done', 240_000, { failOn: ['error'] });
    assert.ok(Number(await tid(p, 'sweep-chart').first().getAttribute('data-points')) > 0, 'the sweep drew points');

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
