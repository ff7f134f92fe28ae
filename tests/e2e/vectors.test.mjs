// The Vectors area (issue 12), as a user goes through it: build a CAA vector from a shipped
// pair set (it equals `tiller vector caa --json` on the same model, CPU on both sides), build a
// second one, reload the page and find both in the library (IndexedDB), combine them by a
// formula, read the cosine matrix, export both formats, steer with the combination, share the
// link and get the same completions from it in a fresh browser (same adapter: the CPU engine).
// A reload keeps the run in the history (Clear history forgets it). Bad pair sets say what is
// wrong, with the line, and change nothing. The A/B evaluation: vectors-eval.test.mjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { launch, watchPage } from './lib/browser.mjs';
import { FIXTURES, REPO_ROOT, tillerBinary } from './lib/env.mjs';
import {
  tid, pageUrl, waitForState, setRecipe, readCompletions, readShareLink, screenshot, typeInto,
} from './lib/contract.mjs';
import { readSafetensors, openPanel, loadTinyCpu, build, entryNamed, download } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();

test('CAA in the page: build, keep across a reload, combine, export, steer, share', { timeout: 900_000 }, async (t) => {
  // The CLI's vector for the same pairs, layer and model.
  const r = spawnSync(tillerBinary(), [
    'vector', 'caa', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--json',
    '--pairs', path.join(REPO_ROOT, 'datasets', 'sentiment.jsonl'), '--layer', '2',
  ], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `tiller vector caa failed:\n${r.stderr}`);
  const want = JSON.parse(r.stdout);

  const { p, probs } = await shared.openPage();
  try {
    await openPanel(p);
    assert.match(await tid(p, 'vec-library-count').first().textContent(), /No vectors yet/);
    await loadTinyCpu(p);

    // 1. A preset set, layer 2: the same vector as the CLI's.
    assert.equal(await tid(p, 'vec-pairs-summary').first().textContent(), '16 pairs');
    await build(p, 'sentiment', 2);
    const first = entryNamed(p, 'sentiment mean_diff L2');
    await first.waitFor({ timeout: 5_000 });
    assert.match(await tid(first, 'vec-entry-what').first().textContent(), /mean_diff at resid_pre layer 2, 64 channels; made on tiny\/tiny-gpt2 from sentiment \(16 pairs, token last\)/);
    assert.match(await tid(first, 'vec-entry-norms').first().textContent(), /L2: norm [\d.]+ \(the texts' activations: [\d.]+, so coefficient 1 adds \d+%\)/);
    const st = await download(p, first, 'vec-download');
    assert.equal(st.name, 'sentiment-mean_diff-L2.safetensors');
    const { tensors, meta } = readSafetensors(st.bytes);
    const got = tensors['layer.2'];
    assert.equal(got.length, want.vector.length);
    const norm = Math.hypot(...want.vector);
    const maxDiff = Math.max(...got.map((x, i) => Math.abs(x - want.vector[i])));
    t.diagnostic(`page vs CLI: max |Δ| ${maxDiff.toExponential(2)}, ‖v‖ ${norm.toFixed(4)} (CLI norm ${want.norm})`);
    assert.ok(maxDiff <= 1e-4 * norm, `the page's CAA vector differs from tiller vector caa's: max |Δ| ${maxDiff}, norm ${norm}`);
    assert.equal(meta.method, 'mean_diff');
    assert.equal(meta.model, 'tiny/tiny-gpt2');
    const gguf = await download(p, first, 'vec-download-gguf');
    assert.equal(gguf.bytes.subarray(0, 4).toString('latin1'), 'GGUF', 'the .gguf download is a GGUF file');

    // 2. A second set at the same layer, with real key presses into the name field.
    await typeInto(p, tid(p, 'vec-name').first(), 'formal');
    await build(p, 'formality', 2);
    await entryNamed(p, 'formal').waitFor({ timeout: 5_000 });

    // 3. A bad pair set: the line is named, Build is off, the library is unchanged.
    await tid(p, 'vec-preset').first().selectOption('');
    await typeInto(p, tid(p, 'vec-pairs').first(), '{"positive": "yes", "negative": "no"}\n{"positive": "only one side"}');
    const summary = tid(p, 'vec-pairs-summary').first();
    await p.waitForFunction(() => document.querySelector('[data-testid="vec-pairs-summary"]')?.dataset.ok === 'false', null, { timeout: 5_000 });
    assert.match(await summary.textContent(), /line 2: "negative" is missing/);
    assert.ok(await tid(p, 'vec-build').first().isDisabled(), 'Build stays off while the pairs are bad');
    assert.equal(await tid(p, 'vec-entry').count(), 2);

    // 4. Reload: the library is still there (IndexedDB), in the order it was made.
    await p.reload({ waitUntil: 'load' });
    await openPanel(p);
    await p.waitForFunction(() => document.querySelectorAll('[data-testid="vec-entry"]').length === 2, null, { timeout: 15_000 });
    const names = await tid(p, 'vec-entry').evaluateAll((els) => els.map((e) => e.dataset.name));
    assert.deepEqual(names, ['sentiment mean_diff L2', 'formal']);

    // 5. Combine by formula; the matrix shows the three at layer 2.
    await typeInto(p, tid(p, 'vec-formula').first(), '"sentiment mean_diff L2" - 0.5*formal');
    await typeInto(p, tid(p, 'vec-combine-name').first(), 'mix');
    await tid(p, 'vec-combine').first().click();
    await entryNamed(p, 'mix').waitFor({ timeout: 5_000 });
    assert.match(await tid(entryNamed(p, 'mix'), 'vec-entry-what').first().textContent(), /combination at resid_pre layer 2.*as "sentiment mean_diff L2" - 0.5\*formal/);
    const cells = await tid(p, 'vec-cosine-cell').evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
    assert.equal(cells.length, 9, 'a 3 × 3 cosine matrix');
    for (const k of [0, 4, 8]) assert.ok(Math.abs(cells[k] - 1) < 1e-3, `the diagonal is 1: ${cells}`);
    assert.ok(Math.abs(cells[1] - cells[3]) < 1e-9, 'the matrix is symmetric');
    // A formula naming a vector that is not there says so.
    await typeInto(p, tid(p, 'vec-formula').first(), 'nothing - formal');
    await tid(p, 'vec-combine').first().click();
    await p.waitForFunction(() => /`nothing`, which is not in the library/.test(document.querySelector('[data-testid="vec-library-note"]')?.textContent || ''), null, { timeout: 5_000 });

    // 6. Steer with the combination, coefficient typed key by key; share the link.
    await loadTinyCpu(p);
    await tid(entryNamed(p, 'mix'), 'vec-use').first().click();
    const row = tid(p, 'vector-term-row').first();
    await row.waitFor({ timeout: 5_000 });
    assert.match(await row.textContent(), /vector “mix”.*layer 2, all positions/);
    await typeInto(p, tid(p, 'vector-term-coeff').first(), '4');
    await setRecipe(p, { prompt: 'I think that', terms: [], temperature: 1, topP: 0.9, n: 2, maxTokens: 10, seed: 7 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 240_000, { failOn: ['error'] });
    const here = await readCompletions(p, 2);
    assert.notDeepEqual(here.steered, here.unsteered, 'the vector changed nothing');
    const link = await readShareLink(p);
    assert.ok(link.includes('#v1.'), `a share link: ${link.slice(0, 60)}`);
    await screenshot(p, 'vectors-panel', t);

    // 7. Delete one; it stays deleted after a reload.
    await tid(entryNamed(p, 'formal'), 'vec-delete').first().click();
    await p.waitForFunction(() => /Deleted “formal”/.test(document.querySelector('[data-testid="vec-library-note"]')?.textContent || ''), null, { timeout: 5_000 });
    await p.reload({ waitUntil: 'load' });
    await openPanel(p);
    await p.waitForFunction(() => document.querySelectorAll('[data-testid="vec-entry"]').length === 2, null, { timeout: 15_000 });
    // The run survives the reload too: in the history, and shown.
    const kept = await p.locator('[data-testid="history-entry"]').evaluateAll((els) => els.map((e) => e.textContent));
    assert.ok(kept.some((h) => h.includes('"I think that"') && h.includes('mix')), `the run is in the history after a reload: ${kept}`);
    assert.deepEqual(await readCompletions(p, 2), here, 'the reloaded page shows the run it had');
    // Clear history forgets it here and in storage (a shared computer).
    await p.locator('[data-testid="history-clear"]').click();
    await p.waitForFunction(() => !document.querySelector('[data-testid="history-entry"]'), null, { timeout: 5_000 });
    await p.waitForFunction(() => localStorage.getItem('tiller.history.v1') === '[]', null, { timeout: 5_000 });

    // 8. A fresh browser (no library) opens the link and gets the same completions.
    const other = await launch();
    try {
      const q = await other.context.newPage();
      const qprobs = watchPage(q);
      const hash = link.slice(link.indexOf('#'));
      await q.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url, hash), { waitUntil: 'load' });
      await tid(q, 'vector-term-row').first().waitFor({ timeout: 30_000 });
      const ask = tid(q, 'confirm-cancel').first();
      await ask.waitFor({ state: 'visible', timeout: 10_000 });
      await ask.click();
      await loadTinyCpu(q);
      await tid(q, 'run').first().click();
      await waitForState(q, 'run-status', 'done', 240_000, { failOn: ['error'] });
      const there = await readCompletions(q, 2);
      assert.deepEqual(there, here, 'the link gave other completions in a fresh browser');
      await screenshot(q, 'vectors-link-fresh-browser', t);
      assert.deepEqual(qprobs.pageErrors, [], `page errors: ${qprobs.pageErrors.join('\n')}`);
    } finally {
      await other.close();
    }
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await screenshot(p, 'vectors-end', t);
    await p.close();
  }
});
