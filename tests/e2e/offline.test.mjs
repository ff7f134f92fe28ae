// Offline (issue 17): the page's service worker keeps the app shell, and the engine keeps the
// model in its cache, so a second visit with the network gone opens the page and runs the
// model the first visit loaded, with the same completions. The "network gone" is real: both
// servers (the page's and the Hub-like one) are stopped before the second visit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, watchPage } from './lib/browser.mjs';
import { startServers } from './lib/env.mjs';
import { expectPresent, pageUrl, readCompletions, setRecipe, tid, waitForState, text } from './lib/contract.mjs';
import { loadTinyCpu } from './lib/vectors.mjs';

const RECIPE = { prompt: 'I hate you because', terms: [{ text: 'Love', layer: 1, coeff: 5 }, { text: 'Hate', layer: 1, coeff: -5 }], n: 2, maxTokens: 8, seed: 3 };

async function runRecipe(p) {
  await setRecipe(p, RECIPE);
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });
  return readCompletions(p, RECIPE.n);
}

test('Offline: with both servers stopped, a second visit opens the page from its service worker and runs the cached model', { timeout: 600_000 }, async (t) => {
  const servers = await startServers();
  const session = await launch({ serviceWorkers: 'allow' });
  let serversUp = true;
  try {
    const url = pageUrl(servers.site.url, servers.hub.url);
    const p = await session.context.newPage();
    const probs = watchPage(p);
    await p.goto(url, { waitUntil: 'load' });
    // The worker installs (copying the shell) and takes the page over.
    await p.evaluate(() => navigator.serviceWorker.ready.then(() => true));
    await p.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 60_000 });
    const shells = await p.evaluate(async () => (await caches.keys()).filter((k) => k.startsWith('tiller-shell-')));
    assert.equal(shells.length, 1, `one copy of the shell: ${shells}`);
    const copied = await p.evaluate(async (name) => (await (await caches.open(name)).keys()).map((r) => new URL(r.url).pathname), shells[0]);
    t.diagnostic(`the shell's copy: ${copied.join(' ')}`);
    for (const f of ['/', '/index.html', '/tiller-worker.js', '/tiller-worker_bg.wasm', '/tiller-worker_loader.js']) {
      assert.ok(copied.includes(f), `${f} is in the shell's copy`);
    }
    assert.ok(copied.some((f) => /^\/tiller-web-[0-9a-f]+_bg\.wasm$/.test(f)), "the page's wasm is in the shell's copy");

    await loadTinyCpu(p);
    const online = await runRecipe(p);
    t.diagnostic(`online: ${JSON.stringify(online)}`);
    assert.deepEqual(probs.pageErrors, [], probs.pageErrors.join('\n'));
    await p.close();

    await servers.close();
    serversUp = false;
    await assert.rejects(fetch(servers.site.url), 'nothing answers at the page\'s address any more');

    const q = await session.context.newPage();
    const qProbs = watchPage(q);
    await q.goto(url, { waitUntil: 'load' });
    await expectPresent(q, 'model-select', 60_000, 'the page opens from its offline copy');
    await loadTinyCpu(q);
    t.diagnostic(`model status offline: ${await text(tid(q, 'model-status').first())}`);
    const offline = await runRecipe(q);
    assert.deepEqual(offline, online, 'the cached model gives the same completions offline');
    assert.deepEqual(qProbs.pageErrors, [], qProbs.pageErrors.join('\n'));
    t.diagnostic(`requests that failed offline (expected: none the page needed): ${qProbs.failedRequests?.join(' | ') ?? ''}`);
  } finally {
    await session.close();
    if (serversUp) await servers.close();
  }
});
