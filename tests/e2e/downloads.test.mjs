// Downloads that go wrong (issue 17): the Hub-like server drops the connection half-way
// through model.safetensors. The page picks the download up where it stopped with a Range
// request, checks it is the same file (size, ETag), says so, and does not cache what it
// spliced; a file whose ETag changed meanwhile is refused, not spliced; a damaged cache entry
// is noticed on reuse and removed; two tabs loading one model leave a cache that reads back.
// Self-contained: its own servers and browsers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freshSessions } from './lib/session.mjs';
import { REPOS, DROP_AFTER } from './lib/env.mjs';
import {
  tid, setRecipe, pickHubRepo, loadModel, waitForState, errorText, readCompletions, confirmDownloadIfAsked, screenshot,
  engineWorker,
} from './lib/contract.mjs';

const TIMEOUT = 180_000;
const WEIGHTS = 'model.safetensors';
const RECIPE = {
  prompt: 'I hate you because',
  terms: [{ text: 'Love', layer: 1, coeff: 4 }],
  n: 1,
  maxTokens: 6,
  seed: 3,
};
const fresh = freshSessions();

const open = (session) => fresh.open(session);

async function runOnce(p) {
  await setRecipe(p, RECIPE);
  await tid(p, 'run').first().click();
  await p.waitForFunction(() => document.querySelector('[data-testid="run-status"]')?.dataset.state !== 'done', null, { timeout: 5_000 }).catch(() => {});
  await waitForState(p, 'run-status', 'done', TIMEOUT, { failOn: ['error'] });
  return readCompletions(p, 1);
}

/** The page's cached model files whose URL ends with `<repo>/resolve/main/<file>`. */
async function cachedEntries(p, repo, file = WEIGHTS) {
  return p.evaluate(async (suffix) => {
    const c = await caches.open('tiller-models-v1');
    return (await c.keys()).map((r) => r.url).filter((u) => u.endsWith(suffix));
  }, `${repo}/resolve/main/${file}`);
}

async function waitForError(p) {
  await p.waitForFunction(() => document.querySelector('[data-testid="error"]')?.textContent?.trim(), null, { timeout: TIMEOUT });
  return errorText(p);
}

test('a download dropped half-way is resumed with a Range request, checked, said, and not cached', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await open();
  // The same file, downloaded whole, gives the reference tokens.
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  const want = await runOnce(p);

  await pickHubRepo(p, REPOS.drop);
  await loadModel(p, { timeout: TIMEOUT });
  const c = fresh.servers.hub.count(REPOS.drop, WEIGHTS);
  assert.equal(c.ranges.length, 1, `one Range request picked the download up (${JSON.stringify(c.ranges)})`);
  const from = Number(/^bytes=(\d+)-$/.exec(c.ranges[0])?.[1]);
  assert.ok(from > 0 && from <= DROP_AFTER, `it asked for the rest from where it stopped (${c.ranges[0]}, dropped after ${DROP_AFTER})`);
  assert.ok(c.status.includes(206), `the server answered 206 (${c.status})`);
  const note = await tid(p, 'engine-note').first().textContent();
  assert.match(note, /broke off once and was resumed/, note);
  assert.match(note, /not cached/, note);
  assert.deepEqual(await cachedEntries(p, REPOS.drop), [], 'nothing spliced is kept in the cache');
  assert.deepEqual(await runOnce(p), want, 'the resumed file gives the same tokens as the whole one');
  await screenshot(p, 'download-resumed', t);
  assert.deepEqual(probs.pageErrors, []);
});

test('a file that changed on the server while it downloaded is refused, not spliced; Retry loads it whole', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await open();
  await pickHubRepo(p, REPOS.changed);
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  const err = await waitForError(p);
  assert.match(err, /could not be resumed/, err);
  assert.match(err, /changed on the server/, err);
  assert.equal(await tid(p, 'error').first().getAttribute('data-kind'), 'download');
  assert.deepEqual(await cachedEntries(p, REPOS.changed), [], 'no partial file is cached');
  await screenshot(p, 'download-changed', t);

  await tid(p, 'error-retry').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  await waitForState(p, 'model-status', 'ready', TIMEOUT, { failOn: ['error'] });
  assert.equal((await cachedEntries(p, REPOS.changed)).length, 1, 'the whole download is cached');
  assert.ok((await runOnce(p)).steered[0], 'the model runs');
  assert.deepEqual(probs.pageErrors, []);
});

test('a damaged cache entry is found on reuse and removed; two tabs loading one model leave a cache that reads back', { timeout: 400_000 }, async (t) => {
  const { s, p, probs } = await open();
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  const want = await runOnce(p);
  const [url] = await cachedEntries(p, REPOS.tiny);
  assert.ok(url, 'the download is cached');

  // Cut the cached copy in half, as a disk error or an interrupted write would.
  await p.evaluate(async (u) => {
    const c = await caches.open('tiller-models-v1');
    const whole = await (await c.match(u)).arrayBuffer();
    const half = whole.slice(0, whole.byteLength >> 1);
    await c.put(u, new Response(half, { headers: { 'Content-Length': String(half.byteLength), 'Content-Type': 'application/octet-stream' } }));
  }, url);
  const downloaded = fresh.servers.hub.bodyBytes(REPOS.tiny, WEIGHTS);
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  const err = await waitForError(p);
  assert.match(err, /cache does not read back whole/, err);
  assert.match(err, /removed from the cache/, err);
  assert.deepEqual(await cachedEntries(p, REPOS.tiny), [], 'the damaged entry is gone');
  await tid(p, 'error-retry').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  await waitForState(p, 'model-status', 'ready', TIMEOUT, { failOn: ['error'] });
  assert.ok(fresh.servers.hub.bodyBytes(REPOS.tiny, WEIGHTS) > downloaded, 'Retry downloaded the file again');
  assert.deepEqual(await runOnce(p), want, 'and it gives the same tokens');

  // Two tabs of one profile load a model neither has cached, at the same time.
  const tabs = [await open(s), await open(s)];
  for (const tab of tabs) await pickHubRepo(tab.p, REPOS.slow);
  await Promise.all(tabs.map(async (tab) => {
    await tid(tab.p, 'model-load').first().click();
    await confirmDownloadIfAsked(tab.p, 2_000);
  }));
  for (const tab of tabs) await waitForState(tab.p, 'model-status', 'ready', TIMEOUT, { failOn: ['error'] });
  const both = fresh.servers.hub.bodyBytes(REPOS.slow, WEIGHTS);
  const third = await open(s);
  await pickHubRepo(third.p, REPOS.slow);
  await loadModel(third.p, { timeout: TIMEOUT });
  assert.equal(fresh.servers.hub.bodyBytes(REPOS.slow, WEIGHTS), both, 'a third tab reads the model from the cache');
  assert.equal(await tid(third.p, 'model-status').first().getAttribute('data-source'), 'cache');
  assert.deepEqual(await runOnce(third.p), want, 'the cached copy gives the same tokens');
  for (const x of [{ probs }, ...tabs, third]) assert.deepEqual(x.probs.pageErrors, []);
});

test('a Cache Storage quota error: the model still runs, uncached, and the page says so', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await open();
  const w = await engineWorker(p);
  await w.evaluate(() => {
    const put = Cache.prototype.put;
    Cache.prototype.put = function (request, response) {
      const url = typeof request === 'string' ? request : request.url;
      if (url.endsWith('/model.safetensors')) {
        // As a full disk does: the body is read, then the write is refused.
        return response.arrayBuffer().then(() => {
          throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
        });
      }
      return put.call(this, request, response);
    };
  });
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  const note = await tid(p, 'engine-note').first().textContent();
  assert.match(note, /could not be kept in this browser's cache: this browser's storage for the page is full/, note);
  assert.match(note, /The model runs/, note);
  assert.deepEqual(await cachedEntries(p, REPOS.tiny), [], 'nothing is cached');
  assert.ok((await runOnce(p)).steered[0], 'the model runs');
  await screenshot(p, 'cache-quota', t);
  assert.deepEqual(probs.pageErrors, []);
});
