// The Vectors area's A/B evaluation and readings (issue 12), as a user goes through them: a
// load that names its phases, an A/B set built over two layers with a quarter held out, the
// evaluation chart equal to `tiller vector eval-ab` on the downloaded file, its CSV, and the
// vector's reading equal to `tiller vector vocab --prompt`. Self-contained: its own servers
// and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FIXTURES, REPO_ROOT, tillerBinary } from './lib/env.mjs';
import { tid, waitForState, screenshot, typeInto } from './lib/contract.mjs';
import { openPanel, loadTinyCpu, build, download } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();

test('A/B evaluation in the page: the chart equals tiller vector eval-ab', { timeout: 600_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await openPanel(p);
    // Every phase of the load is named while it lasts (issue 18: the page never looks stuck).
    await p.evaluate(() => {
      window.tillerPhases = [];
      new MutationObserver((records) => {
        for (const r of records) {
          const v = r.target.getAttribute('data-phase');
          if (v && window.tillerPhases.at(-1) !== v) window.tillerPhases.push(v);
        }
      }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-phase'] });
    });
    await loadTinyCpu(p);
    const phases = await p.evaluate(() => window.tillerPhases);
    assert.deepEqual(phases, ['files', 'weights', 'setup'], `the load's phases, in order: ${phases}`);
    assert.equal(await tid(p, 'model-status').first().getAttribute('data-phase'), null, 'no phase once loaded');
    // Plain pairs cannot be evaluated: the form says why.
    await tid(p, 'vec-preset').first().selectOption('sentiment');
    await p.waitForFunction(() => /multiple-choice items/.test(document.querySelector('[data-testid="vec-eval-items"]')?.textContent || ''), null, { timeout: 5_000 });
    assert.ok(await tid(p, 'vec-eval-run').first().isDisabled(), 'Evaluate is off for plain pairs');

    // The A/B set, a quarter held out, layers 1 through 2: one entry with a vector at each,
    // built from 9 items and evaluated on the other 3.
    await typeInto(p, tid(p, 'vec-held-out').first(), '0.25');
    await typeInto(p, tid(p, 'vec-name').first(), 'optimism');
    await typeInto(p, tid(p, 'vec-layer-to').first(), '2');
    await build(p, 'optimism-ab', 1);
    assert.match(await tid(p, 'vec-eval-items').first().textContent(), /the 3 held-out items/);
    const pick = p.locator('[data-testid="vec-eval-pick"][data-name="optimism"]');
    assert.ok(await pick.isChecked(), 'the vector just built is ticked for the evaluation');
    await typeInto(p, tid(p, 'vec-eval-coeffs').first(), '-4, 0, 4');
    await tid(p, 'vec-eval-run').first().click();
    await waitForState(p, 'vec-eval-status', 'done', 240_000, { failOn: ['error'] });
    const points = await tid(p, 'vec-eval-point').evaluateAll((els) => els.map((e) => ({
      set: e.dataset.set, layer: Number(e.dataset.layer), coeff: Number(e.dataset.coeff), p: Number(e.dataset.value),
    })));
    assert.equal(points.length, 6, 'two lines (layers 1 and 2) of three coefficients');
    assert.deepEqual([...new Set(points.map((q) => q.set))], ['optimism @ L1', 'optimism @ L2']);

    // The CLI on the same vector file, items and coefficients.
    const st = await download(p, p.locator('[data-testid="vec-entry"][data-name="optimism"]'), 'vec-download');
    const r = spawnSync(tillerBinary(), [
      'vector', 'eval-ab', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--json',
      '--pairs', path.join(REPO_ROOT, 'datasets', 'optimism-ab.jsonl'), '--held-out', '0.25',
      '--vector', st.file, '--coeffs=-4,0,4',
    ], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
    assert.equal(r.status, 0, `tiller vector eval-ab failed:\n${r.stderr}`);
    const want = JSON.parse(r.stdout);
    assert.equal(want.length, 6);
    for (const w of want) {
      const got = points.find((q) => q.coeff === w.coeff && q.layer === w.layer);
      assert.ok(got, `no point at layer ${w.layer}, coefficient ${w.coeff}`);
      assert.ok(Math.abs(got.p - w.p_matching) < 1e-6, `layer ${w.layer}, coefficient ${w.coeff}: page ${got.p}, CLI ${w.p_matching}`);
      assert.equal(w.items, 3);
    }
    t.diagnostic(`p(matching) by layer and coefficient: ${want.map((w) => `L${w.layer} ${w.coeff}: ${w.p_matching.toFixed(4)}`).join(', ')}`);

    // CSV, as the CLI writes it.
    const [dl] = await Promise.all([p.waitForEvent('download', { timeout: 15_000 }), tid(p, 'vec-eval-csv').first().click()]);
    const csvFile = path.join(os.tmpdir(), `tiller-e2e-${process.pid}-ab.csv`);
    await dl.saveAs(csvFile);
    const csv = fs.readFileSync(csvFile, 'utf8').trim().split('\n');
    assert.equal(csv[0], 'layer,coeff,p_matching,p_matching_unsteered,p_letters,items');
    assert.equal(csv.length, 7);
    await tid(p, 'vec-eval-chart').first().scrollIntoViewIfNeeded();
    await screenshot(p, 'vectors-eval-chart', t);

    // Read it: its vocabulary and its size against the editor's prompt, as `tiller vector vocab --prompt`.
    const entry = p.locator('[data-testid="vec-entry"][data-name="optimism"]');
    await tid(entry, 'vec-read').first().click();
    await waitForState(p, 'vec-reading', 'done', 60_000, { failOn: ['error'] });
    const prompt = await tid(p, 'prompt').first().inputValue();
    assert.equal(await tid(entry, 'vec-reading-layer').count(), 2, 'a reading per layer');
    const layer = tid(entry, 'vec-reading-layer').first();
    const shown = await layer.evaluate((d) => ({
      norm: Number(d.dataset.norm),
      residual: Number(d.dataset.residual),
      top: [...d.querySelectorAll('[data-testid="vec-read-top"] li')].map((li) => Number(li.dataset.id)),
      text: d.textContent,
    }));
    const v = spawnSync(tillerBinary(), [
      'vector', 'vocab', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--json',
      '--vector', st.file, '--prompt', prompt,
    ], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
    assert.equal(v.status, 0, `tiller vector vocab failed:\n${v.stderr}`);
    const cli = JSON.parse(v.stdout).layers[0];
    assert.deepEqual(shown.top, cli.top.map((e) => e.id), 'the page and the CLI decode the same top tokens');
    assert.ok(Math.abs(shown.norm - cli.norm) <= 1e-9 * cli.norm, `norm: page ${shown.norm}, CLI ${cli.norm}`);
    assert.ok(Math.abs(shown.residual - cli.residual_norm) <= 1e-6 * cli.residual_norm, `residual norm: page ${shown.residual}, CLI ${cli.residual_norm}`);
    assert.match(shown.text, /Layer 1: norm [\d.]+; the prompt's residual stream there: [\d.]+, so coefficient 1 adds \d+%/);
    await screenshot(p, 'vectors-reading', t);
    // The logit lens reads it again; Hide folds it.
    await tid(entry, 'vec-read-lnf').first().check();
    await waitForState(p, 'vec-reading', 'done', 60_000, { failOn: ['error'] });
    await tid(entry, 'vec-read').first().click();
    await p.waitForFunction(() => !document.querySelector('[data-testid="vec-reading"]'), null, { timeout: 5_000 });

    // Nothing ticked: a sentence instead of a run.
    await pick.uncheck();
    await p.waitForFunction(() => /tick at least one library vector/.test(document.querySelector('[data-testid="vec-eval-error"]')?.textContent || ''), null, { timeout: 5_000 });
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
