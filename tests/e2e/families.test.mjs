// The other families in the page (issue 11): a tiny Llama (grouped-query attention, llama3
// rope scaling, a chat template), a tiny Qwen2 (sharded bf16 checkpoint, untied head) and a
// tiny GPT-NeoX (partial rotary, parallel residual) load from the Hub-like server, run a
// steered comparison on WebGPU (SwiftShader), and the Llama's chat template renders the prompt
// as the model reads it. Screenshots go to out/families-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, watchPage } from './lib/browser.mjs';
import { startServers, REPOS } from './lib/env.mjs';
import {
  tid, pageUrl, setRecipe, pickHubRepo, loadModel, readCompletions, waitForState, screenshot, click, text,
  setValue, readShareLink, confirmDownloadIfAsked,
} from './lib/contract.mjs';

const RUN_TIMEOUT = 180_000;
let servers;
let session;
let page;
let problems;

before(async () => {
  servers = await startServers();
  session = await launch();
  page = await session.context.newPage();
  problems = watchPage(page);
  await page.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
});

after(async () => {
  await session?.close();
  await servers?.close();
});

/** Loads `repo`, runs Love − Hate at layer 1, and checks the steered side differs. */
async function steeredComparison(t, repo, name) {
  await pickHubRepo(page, repo);
  await loadModel(page, { timeout: 180_000 });
  await setRecipe(page, {
    prompt: 'I hate you because',
    terms: [{ text: 'Love', layer: 1, coeff: 8 }, { text: 'Hate', layer: 1, coeff: -8 }],
    n: 2,
    maxTokens: 6,
    seed: 3,
  });
  await tid(page, 'run').first().click();
  await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  const { unsteered, steered } = await readCompletions(page, 2);
  assert.equal(unsteered.length, 2, `${name}: two unsteered completions`);
  assert.equal(steered.length, 2, `${name}: two steered completions`);
  assert.ok(unsteered.every((s) => s.length > 0) && steered.every((s) => s.length > 0), `${name}: empty completion`);
  assert.notDeepEqual(steered, unsteered, `${name}: steering at coefficient 8 changed nothing`);
  await screenshot(page, `families-${name}`, t);
}

test('families-01-llama-steers-and-renders-its-chat-template', { timeout: 400_000 }, async (t) => {
  await steeredComparison(t, REPOS.llama, 'llama');
  // The tokenizer adds <|begin_of_text|> itself: the BOS box follows it.
  assert.equal(await tid(page, 'bos').first().isChecked(), true, 'Llama 3 adds BOS by default');
  // The chat toggle exists for a model with a template; on, the prompt shows as rendered.
  assert.equal(await tid(page, 'chat').count(), 1, 'no chat toggle for a model with a chat template');
  await click(page, 'chat');
  await tid(page, 'system').first().fill('You are a helpful assistant.');
  // The rendering comes back from the worker after each edit: wait for the one with the
  // system message (the one from turning chat on may still be showing).
  await page.waitForFunction(() => /helpful assistant/.test(document.querySelector('[data-testid="chat-rendered"]')?.textContent || ''), null, { timeout: 20_000 });
  const rendered = await text(tid(page, 'chat-rendered'));
  assert.match(rendered, /<\|start_header_id\|>system<\|end_header_id\|>\s+You are a helpful assistant\.<\|eot_id\|>/, rendered);
  assert.match(rendered, /<\|start_header_id\|>user<\|end_header_id\|>\s+I hate you because<\|eot_id\|><\|start_header_id\|>assistant<\|end_header_id\|>/, rendered);
  await tid(page, 'run').first().click();
  await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  const rawTerms = await readCompletions(page, 2);
  await screenshot(page, 'families-llama-chat', t);
  // The steering texts through the template too: the unsteered side is the same run's, the
  // steered side follows the templated vectors (a ~20-token pair sharing the prompt's header).
  assert.equal(await tid(page, 'chat-terms').first().isChecked(), false, 'steering texts are raw by default');
  await click(page, 'chat-terms');
  await tid(page, 'run').first().click();
  await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  const templated = await readCompletions(page, 2);
  assert.deepEqual(templated.unsteered, rawTerms.unsteered, 'the unsteered side does not depend on the steering texts');
  assert.notDeepEqual(templated.steered, rawTerms.steered, 'templated steering texts gave the same completions as raw ones');
});

test('families-02-qwen2-sharded-checkpoint-steers', { timeout: 400_000 }, async (t) => {
  await steeredComparison(t, REPOS.qwen2, 'qwen2');
  assert.equal(await tid(page, 'chat').count(), 0, 'a model without a chat template offers no chat toggle');
});

test('families-03-neox-steers', { timeout: 400_000 }, async (t) => {
  await steeredComparison(t, REPOS.neox, 'neox');
  const errs = problems.consoleErrors.filter((e) => !/favicon\.ico|status of 404/.test(e));
  assert.deepEqual(errs, [], 'console errors');
  assert.deepEqual(problems.pageErrors, [], 'page errors');
});

test('families-04-a-bos-choice-survives-loading-and-links', { timeout: 600_000 }, async (t) => {
  // Unticked by hand, BOS stays off when Llama (whose tokenizer adds one) loads...
  await pickHubRepo(page, REPOS.llama);
  await setValue(page, 'bos', true);
  await setValue(page, 'bos', false);
  await loadModel(page, { timeout: 180_000 });
  assert.equal(await tid(page, 'bos').first().isChecked(), false, 'loading Llama overrode the BOS box the user unticked');
  // ...and a link that says "no BOS" keeps it when the model loads in a fresh page.
  const link = await readShareLink(page);
  // A browser of its own, as on another machine (a second WebGPU page beside this one's
  // models can wait on SwiftShader for minutes).
  const fresh = await launch();
  const other = await fresh.context.newPage();
  try {
    await other.goto(link, { waitUntil: 'load' });
    await confirmDownloadIfAsked(other, 10_000);
    // Up to five minutes: on a busy CI machine, with another test file's browser beside it,
    // this second SwiftShader device took more than three (2026-12-04).
    await waitForState(other, 'model-status', 'ready', 300_000, { failOn: ['error'] });
    assert.equal(await tid(other, 'bos').first().isChecked(), false, 'a link with BOS off came back with BOS on');
    await screenshot(other, 'families-bos-from-link', t);
  } finally {
    await fresh.close().catch(() => {});
  }
});
