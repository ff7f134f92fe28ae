// A failed load keeps the model that was working (issue 18): a repo id that 404s, a local
// model.safetensors that is not safetensors, and WebGPU forced in a browser without an adapter
// each fail with an error that names the cause and says the previous model is still loaded,
// and Run works on it right after. Self-contained: its own servers and browsers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { watchPage } from './lib/browser.mjs';
import { freshSessions } from './lib/session.mjs';
import { REPOS, FIXTURES } from './lib/env.mjs';
import {
  tid, pageUrl, setRecipe, setValue, pickHubRepo, loadModel, waitForState, errorText, confirmDownloadIfAsked,
  readCompletions, screenshot, expectPresent, getValue,
} from './lib/contract.mjs';

const TIMEOUT = 180_000;
const RECIPE = {
  prompt: 'I hate you because',
  terms: [{ text: 'Love', layer: 1, coeff: 4 }, { text: 'Hate', layer: 1, coeff: -4 }],
  n: 1,
  maxTokens: 4,
};
const fresh = freshSessions();

const open = (opts) => fresh.open(null, opts);

/** Runs the recipe and waits for this run (not an earlier one) to finish. */
async function runOnce(p, seed) {
  await setValue(p, 'seed', seed);
  await tid(p, 'run').first().click();
  await p.waitForFunction(() => document.querySelector('[data-testid="run-status"]')?.dataset.state !== 'done', null, { timeout: 5_000 }).catch(() => {});
  await waitForState(p, 'run-status', 'done', TIMEOUT, { failOn: ['error'] });
  const { unsteered, steered } = await readCompletions(p, 1);
  assert.ok(unsteered[0] && steered[0], `a completion on each side (seed ${seed})`);
}

/** Clicks Load and expects the load to fail while the previous model stays ready. */
async function failedLoadKeeps(p, why, label) {
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  await p.waitForFunction(() => document.querySelector('[data-testid="error"]')?.textContent?.trim(), null, { timeout: TIMEOUT });
  const state = await waitForState(p, 'model-status', ['ready', 'error'], TIMEOUT);
  const err = await errorText(p);
  assert.equal(state, 'ready', `${label}: the previous model was dropped (${err})`);
  assert.match(err, why, `${label}: the error says what went wrong: ${err}`);
  assert.match(err, /still loaded/, `${label}: the error says the previous model is still loaded: ${err}`);
  assert.equal(await tid(p, 'run').first().isDisabled(), false, `${label}: Run is disabled after a failed load`);
}

test('a 404 repo id and a corrupt local file leave the loaded model runnable', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await open();
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  await setRecipe(p, RECIPE);
  await runOnce(p, 1);
  const myPrompt = await getValue(p, 'prompt');

  await pickHubRepo(p, 'tiny/no-such-repo');
  await failedLoadKeeps(p, /404|not found|missing|tokenizer\.json/i, '404 repo');
  assert.equal(await tid(p, 'error').first().getAttribute('data-kind'), 'not_found', 'a 404 is "not found", not a broken download');
  assert.equal(await p.locator('[data-testid="error-retry"]').count(), 0, 'no Retry is offered for a repo that is not there');
  await runOnce(p, 2);

  // Local files: a model.safetensors of garbage beside the real tokenizer and config.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tiller-keep-'));
  fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.from('This is not a safetensors file at all, only text.'.repeat(40)));
  for (const f of ['tokenizer.json', 'config.json']) fs.copyFileSync(path.join(FIXTURES, 'tiny-gpt2', f), path.join(dir, f));
  await setValue(p, 'model-select', 'local');
  await expectPresent(p, 'model-files', 10_000);
  await tid(p, 'model-files').first().setInputFiles(['model.safetensors', 'tokenizer.json', 'config.json'].map((f) => path.join(dir, f)));
  await failedLoadKeeps(p, /model\.safetensors.*(header|not a safetensors)/i, 'corrupt local file');
  await runOnce(p, 3);
  assert.equal(await getValue(p, 'prompt'), myPrompt, 'the editor kept the prompt');

  // A recipe past the context cannot be run, and Run says why; fixing it enables Run again.
  await setValue(p, 'max-tokens', 127);
  await p.waitForFunction(() => document.querySelector('[data-testid="run"]').disabled, null, { timeout: 10_000 });
  assert.match(await tid(p, 'run').first().getAttribute('title'), /context of 128/, 'Run says why it is disabled');
  assert.match(await tid(p, 'run-status').first().textContent(), /Fix the recipe/);
  await setValue(p, 'max-tokens', 4);
  await p.waitForFunction(() => !document.querySelector('[data-testid="run"]').disabled, null, { timeout: 10_000 });
  await screenshot(p, 'keep-model-after-failed-load', t);
  assert.deepEqual(probs.pageErrors, [], 'no uncaught errors');
});

test('forcing WebGPU without an adapter leaves the CPU model runnable', { timeout: 400_000 }, async (t) => {
  const { p, probs } = await open({ webgpu: false });
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: TIMEOUT });
  assert.equal(await tid(p, 'model-status').first().getAttribute('data-engine'), 'cpu', 'without WebGPU, auto runs on the CPU');
  await setRecipe(p, RECIPE);
  await runOnce(p, 1);
  await setValue(p, 'engine-select', 'gpu');
  await failedLoadKeeps(p, /WebGPU/i, 'no adapter');
  await runOnce(p, 2);
  await screenshot(p, 'keep-model-no-adapter', t);
  assert.deepEqual(probs.pageErrors, [], 'no uncaught errors');
});

test('a Load clicked while the engine worker is still starting loads all the same', { timeout: 300_000 }, async (t) => {
  // The worker's wasm held back for a few seconds, as on a slow machine: the page is up (its
  // own wasm is another file) and the user picks a model and presses Load before the worker
  // listens. The page keeps the message until the worker has started (2026-12-07: a share
  // link's "Download and load", clicked at once in a fresh browser, sat at "loading" for ever).
  const s = await fresh.launch();
  let release;
  const held = new Promise((r) => { release = r; });
  let asked = false;
  await s.context.route(/tiller-worker_bg\.wasm/, async (route) => {
    asked = true;
    await held;
    await route.continue();
  });
  const p = await s.context.newPage();
  const probs = watchPage(p);
  await p.goto(pageUrl(fresh.servers.site.url, fresh.servers.hub.url), { waitUntil: 'load' });
  await pickHubRepo(p, REPOS.tiny);
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  assert.ok(asked, 'the worker asked for its wasm (the test holds it back)');
  assert.equal(await tid(p, 'model-status').first().getAttribute('data-state'), 'loading', 'Load was pressed before the worker started');
  await new Promise((r) => setTimeout(r, 3_000));
  release();
  await waitForState(p, 'model-status', 'ready', TIMEOUT, { failOn: ['error'] });
  await setRecipe(p, RECIPE);
  await runOnce(p, 1);
  await screenshot(p, 'keep-model-early-load', t);
  assert.deepEqual(probs.pageErrors, [], 'no uncaught errors');
});
