// A gated repo (like meta-llama/Llama-3.2-1B-Instruct): without a token the load fails with a
// 401 that says what to do; with the user's Hugging Face token it loads and runs. The token
// goes to the Hub only as `Authorization: Bearer`, never into a share link, and into local
// storage only when "remember" is ticked. The picker offers the other families' small
// checkpoints. Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { watchPage } from './lib/browser.mjs';
import { REPOS, GATED_TOKEN } from './lib/env.mjs';
import {
  tid, pageUrl, setValue, pickHubRepo, loadModel, waitForState, errorText, confirmDownloadIfAsked, readShareLink,
  setRecipe, screenshot, getValue,
} from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const TIMEOUT = 180_000;
const shared = sharedSession();

test('gated repo: 401 explained, then loads with a token that stays out of links', { timeout: 400_000 }, async (t) => {
  const p = await shared.session.context.newPage();
  const probs = watchPage(p);
  await p.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url), { waitUntil: 'load' });

  // The picker offers small checkpoints of the other families.
  const options = await tid(p, 'model-select').first().evaluate((s) => [...s.options].map((o) => o.value));
  for (const repo of ['Qwen/Qwen2.5-0.5B-Instruct', 'EleutherAI/pythia-160m', 'meta-llama/Llama-3.2-1B-Instruct']) {
    assert.ok(options.includes(repo), `the picker offers ${repo}: ${options.join(', ')}`);
  }

  await pickHubRepo(p, REPOS.gated);
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  assert.equal(await waitForState(p, 'model-status', ['error', 'ready'], TIMEOUT), 'error', 'a gated repo loaded without a token');
  const err = await errorText(p);
  assert.match(err, /401/, err);
  assert.match(err, /gated.*token/i, `the error says a token is needed: ${err}`);

  await setValue(p, 'hf-token', GATED_TOKEN);
  await loadModel(p, { timeout: TIMEOUT });
  const authed = shared.servers.hub.log.filter((e) => e.path.includes(REPOS.gated) && e.status === 200);
  assert.ok(authed.length > 0, 'the gated repo answered 200 with the token');
  await setRecipe(p, { prompt: 'Hello there', terms: [{ text: 'Love', layer: 1, coeff: 4 }, { text: 'Hate', layer: 1, coeff: -4 }], n: 1, maxTokens: 3 });
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', TIMEOUT, { failOn: ['error'] });

  const link = await readShareLink(p);
  const json = zlib.inflateRawSync(Buffer.from(link.slice(link.indexOf('#') + 4), 'base64url')).toString('utf8');
  assert.ok(!json.includes(GATED_TOKEN) && !link.includes(GATED_TOKEN), 'the token is in the share link');
  assert.equal(await p.evaluate(() => localStorage.getItem('tiller.hf_token')), null, 'the token was stored without "remember"');

  await setValue(p, 'hf-token-remember', true);
  assert.equal(await p.evaluate(() => localStorage.getItem('tiller.hf_token')), GATED_TOKEN, '"remember" stores the token');
  await p.reload({ waitUntil: 'load' });
  await tid(p, 'hf-token').first().waitFor({ state: 'attached', timeout: 30_000 });
  assert.equal(await getValue(p, 'hf-token'), GATED_TOKEN, 'a remembered token is back after a reload');
  await setValue(p, 'hf-token-remember', false);
  assert.equal(await p.evaluate(() => localStorage.getItem('tiller.hf_token')), null, 'unticking forgets it');
  await screenshot(p, 'gated-token', t);
  assert.deepEqual(probs.pageErrors, [], 'no uncaught errors');
});
