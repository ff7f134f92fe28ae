// The page survives its GPU (issue 17): the engine worker's WebGPU device is destroyed in the
// middle of a run (`device.destroy()`, as a driver reset or a GPU-process crash would lose it).
// The page says so in a banner with "Reload the model"; the recipe, the earlier run's results
// and the history stay; the reload builds a new device from the browser's cache (no second
// download), and the same recipe and seed give the same tokens as before the loss.
// Self-contained: its own servers and browser (one, shared by both tests).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sharedSession } from './lib/session.mjs';
import { REPOS } from './lib/env.mjs';
import {
  tid, setRecipe, setValue, pickHubRepo, loadModel, waitForState, errorText, readCompletions, readRecipe, confirmDownloadIfAsked,
  screenshot, engineWorker,
} from './lib/contract.mjs';

const TIMEOUT = 180_000;
const shared = sharedSession();

/** Keeps every GPUDevice the worker asks for, so the test can destroy the one in use. */
async function keepDevices(w) {
  await w.evaluate(() => {
    if (self.__tillerDevices) return;
    self.__tillerDevices = [];
    const request = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (...args) {
      const device = await request.apply(this, args);
      self.__tillerDevices.push(device);
      return device;
    };
  });
}

async function historyCount(p) {
  return tid(p, 'history-entry').count();
}

test('a device destroyed mid-run: banner, nothing lost, reload from the cache, same tokens', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  const servers = shared.servers;
  await keepDevices(await engineWorker(p));
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  const weights = `${REPOS.tiny}/model.safetensors`;
  const downloads = servers.hub.bodyBytes(REPOS.tiny, 'model.safetensors');
  assert.ok(downloads > 0, `the first load downloaded ${weights}`);

  const recipe = {
    prompt: 'I hate you because',
    terms: [{ text: 'Love', layer: 1, coeff: 4 }, { text: 'Hate', layer: 1, coeff: -4 }],
    n: 2,
    maxTokens: 8,
    seed: 7,
  };
  await setRecipe(p, recipe);
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', TIMEOUT, { failOn: ['error'] });
  const before = await readCompletions(p, 2);
  assert.ok(before.unsteered[0] && before.steered[0], 'the first run has completions');
  const entries = await historyCount(p);
  assert.ok(entries >= 1, 'the first run is in the history');

  // A long run, and the device destroyed while it goes.
  await setValue(p, 'max-tokens', 100);
  await setValue(p, 'n', 4);
  const kept = await readRecipe(p);
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'running', 30_000);
  const w = await engineWorker(p);
  const destroyed = await w.evaluate(() => {
    const d = self.__tillerDevices.at(-1);
    if (!d) return false;
    d.destroy();
    return true;
  });
  assert.ok(destroyed, 'the worker asked for a device');

  await p.waitForFunction(() => document.querySelector('[data-testid="error"]')?.dataset.kind === 'device_lost', null, { timeout: 60_000 })
    .catch(async (e) => {
      throw new Error(`no device-lost banner (error: ${JSON.stringify(await errorText(p))}): ${e.message}`);
    });
  const message = await errorText(p);
  assert.match(message, /GPU device was lost/, message);
  assert.match(message, /Reload the model/i, `the message says what to do: ${message}`);
  await screenshot(p, 'device-lost', t);
  assert.notEqual(await tid(p, 'run-status').first().getAttribute('data-state'), 'running', 'the run is not left "running"');
  assert.deepEqual(await readRecipe(p), kept, 'the recipe is as it was');
  assert.ok((await historyCount(p)) >= entries, 'the history is kept');

  // Reload: a new device, the weights from the cache.
  await tid(p, 'error-retry').first().click();
  await waitForState(p, 'model-status', 'ready', TIMEOUT, { failOn: ['error'] });
  assert.equal(servers.hub.bodyBytes(REPOS.tiny, 'model.safetensors'), downloads, 'the reload read the weights from the cache, not the network');
  assert.equal(await tid(p, 'model-status').first().getAttribute('data-source'), 'cache', 'the status says the model came from the cache');

  // The same recipe and seed as the first run give the same tokens on the new device.
  await setValue(p, 'max-tokens', recipe.maxTokens);
  await setValue(p, 'n', recipe.n);
  await tid(p, 'run').first().click();
  await p.waitForFunction(() => document.querySelector('[data-testid="run-status"]')?.dataset.state !== 'done', null, { timeout: 5_000 }).catch(() => {});
  await waitForState(p, 'run-status', 'done', TIMEOUT, { failOn: ['error'] });
  assert.deepEqual(await readCompletions(p, 2), before, 'the rebuilt engine gives the same tokens');
  await screenshot(p, 'device-lost-recovered', t);
  assert.deepEqual(probs.pageErrors, [], `no uncaught page errors: ${probs.pageErrors.join(' | ')}`);
});

test('a model too large for the limits the device was granted: the sizes and the limit, in a banner', { timeout: 300_000 }, async (t) => {
  // A new page, so a new engine worker: the limits below are its devices' only.
  const { p, probs } = await shared.openPage();
  try {
    // As a small GPU would grant: one buffer binding of at most 16 KiB.
    await (await engineWorker(p)).evaluate(() => {
      const real = Object.getOwnPropertyDescriptor(GPUDevice.prototype, 'limits').get;
      Object.defineProperty(GPUDevice.prototype, 'limits', {
        configurable: true,
        get() {
          const limits = real.call(this);
          const small = {};
          for (const k in limits) small[k] = limits[k];
          small.maxStorageBufferBindingSize = 16 << 10;
          return small;
        },
      });
    });
    const cachedCopy = () => p.evaluate(async () => (await (await caches.open('tiller-models-v1')).keys()).some((r) => r.url.endsWith('/model.safetensors')));
    const wasCached = await cachedCopy(); // by the first test, when it ran
    await pickHubRepo(p, REPOS.tiny);
    await tid(p, 'model-load').first().click();
    await confirmDownloadIfAsked(p, 2_000);
    await p.waitForFunction(() => document.querySelector('[data-testid="error"]')?.textContent?.trim(), null, { timeout: TIMEOUT });
    const err = await errorText(p);
    assert.equal(await tid(p, 'error').first().getAttribute('data-kind'), 'adapter_limits', err);
    for (const want of [/needs 24\.6 kB in one buffer binding/, /this GPU allows 16\.4 kB/, /the whole model takes 6\.8 MB/, /smaller model/]) {
      assert.match(err, want);
    }
    if (wasCached) assert.ok(await cachedCopy(), 'what this GPU cannot hold is not blamed on the cached copy: it stays');
    // Not left "loading": the load ended, and said why.
    await waitForState(p, 'model-status', ['error', 'idle'], 30_000);
    await screenshot(p, 'adapter-limits', t);
    assert.deepEqual(probs.pageErrors, []);
  } finally {
    await p.close().catch(() => {});
  }
});
