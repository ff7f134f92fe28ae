// Weights holding NaN (issue 17): the page refuses them at load, naming the tensor and the
// count, and offers "Load anyway"; loaded anyway, the status warns, and a run stops with a
// message saying where the values first stopped being finite, never ranked NaN tokens.
// Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sharedSession } from './lib/session.mjs';
import { REPOS } from './lib/env.mjs';
import { tid, setRecipe, pickHubRepo, waitForState, errorText, confirmDownloadIfAsked, screenshot } from './lib/contract.mjs';

const shared = sharedSession();

test('NaN weights: refused with the tensor named, "Load anyway" loads with a warning, a run stops where they surface', { timeout: 300_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  await pickHubRepo(p, REPOS.nan);
  await tid(p, 'model-load').first().click();
  await confirmDownloadIfAsked(p, 2_000);
  await p.waitForFunction(() => document.querySelector('[data-testid="error"]')?.textContent?.trim(), null, { timeout: 120_000 });
  const refused = await errorText(p);
  assert.match(refused, /tensor `h\.1\.mlp\.c_fc\.weight` holds 3 values that are not finite \(NaN or infinity\)/, refused);
  assert.equal(await tid(p, 'error').first().getAttribute('data-kind'), 'bad_file');
  await screenshot(p, 'nonfinite-refused', t);

  await tid(p, 'error-load-anyway').first().click();
  await waitForState(p, 'model-status', 'ready', 120_000, { failOn: ['error'] });
  const note = await tid(p, 'engine-note').first().textContent();
  assert.match(note, /Warning: tensor `h\.1\.mlp\.c_fc\.weight` holds 3 values that are not finite \(NaN or infinity\); loaded anyway/, note);

  await setRecipe(p, { prompt: 'Hello there', terms: [{ text: 'Love', layer: 1, coeff: 4 }], n: 1, maxTokens: 3 });
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'error', 60_000);
  const stopped = await errorText(p);
  assert.match(stopped, /NaN or infinity/, stopped);
  assert.match(stopped, /layer 1/, `the message says where: ${stopped}`);
  const shown = (await tid(p, 'steered-0').count()) ? (await tid(p, 'steered-0').first().textContent()).trim() : '';
  assert.equal(shown, '', 'no tokens sampled from NaN logits are shown');
  await screenshot(p, 'nonfinite-run', t);
  assert.deepEqual(probs.pageErrors, []);
});
