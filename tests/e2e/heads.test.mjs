// The Heads area (issue 13): a function vector for the antonyms task on the tiny model, as a
// user goes through it: pick the task, set a small run, watch it finish, read the heatmap (hover
// a cell), the top heads, the accuracy chart and the decoded vocabulary; every head's AIE and
// the top heads equal `tiller fv` with the same settings (CPU on both sides); save the vector
// to the library and put it in the recipe, then steer a zero-shot prompt with it. Then ITI:
// probe every head on the shipped statements, the accuracies and top heads equal `tiller iti`'s,
// and the shifts steer a run from the recipe.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FIXTURES, REPO_ROOT, tillerBinary } from './lib/env.mjs';
import { tid, waitForState, screenshot, typeInto, setRecipe, OUT_DIR } from './lib/contract.mjs';
import { loadTinyCpu, openPanel } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();

async function shot(loc, name, t) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.png`);
  await loc.screenshot({ path: file, timeout: 20_000 }).then(() => t.diagnostic(`screenshot: ${file}`), (e) => t.diagnostic(`screenshot ${file} failed: ${e.message}`));
}

test('Heads: a function vector for antonyms, its heatmap and accuracy chart, equal to tiller fv; saved and steering', { timeout: 900_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await loadTinyCpu(p);
    const panel = tid(p, 'heads-panel').first();
    await p.locator('nav.areas a[data-area="area-heads"]').click();
    assert.ok(await panel.evaluate((d) => d.open), 'the nav opens the Heads area');
    await tid(p, 'fv-task').first().selectOption('antonyms');
    assert.match(await tid(p, 'fv-pairs-summary').first().textContent(), /^89 pairs: /);
    await typeInto(p, tid(p, 'fv-shots').first(), '3');
    await typeInto(p, tid(p, 'fv-prompts').first(), '4');
    await typeInto(p, tid(p, 'fv-seed').first(), '2');
    await typeInto(p, tid(p, 'fv-top').first(), '3');
    await typeInto(p, tid(p, 'fv-eval').first(), '6');
    assert.match(await tid(p, 'fv-cost').first().textContent(), /passes of the model \(16 heads × 4 prompts/);
    await tid(p, 'fv-run').first().click();
    await waitForState(p, 'fv-status', 'done', 300_000, { failOn: ['error'] });
    assert.equal(await tid(p, 'fv-status').first().textContent(), 'Done.');
    await tid(p, 'fv-results').first().waitFor({ timeout: 10_000 });

    // The heatmap: every head, the top three outlined; hovering a cell reads it out.
    const cells = await tid(p, 'fv-cell').evaluateAll((els) =>
      els.map((e) => ({ layer: Number(e.dataset.layer), head: Number(e.dataset.head), aie: Number(e.dataset.value), top: e.classList.contains('fv-cell-top') })));
    assert.equal(cells.length, 16, '4 layers × 4 heads');
    assert.equal(cells.filter((c) => c.top).length, 3, 'the three top heads are outlined');
    const cell = tid(p, 'fv-cell').nth(5);
    await cell.hover();
    assert.match(await tid(p, 'fv-hover').first().textContent(), /^Layer 1, head 1: AIE -?\d\.\d{4}e-?\d+/);
    assert.match(await tid(p, 'fv-example-clean').first().textContent(), /^Q: \w+\nA: \w+\n\nQ: /);

    // The same run on the CLI: every head's AIE and the top heads.
    const bin = tillerBinary();
    const r = spawnSync(bin, ['fv', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--task', path.join(REPO_ROOT, 'datasets', 'icl', 'antonyms.jsonl'),
      '--shots', '3', '--prompts', '4', '--seed', '2', '--top-heads', '3', '--eval-pairs', '6', '--completions', '0', '--device', 'cpu', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const cli = JSON.parse(r.stdout);
    const scale = Math.max(...cli.heads.map((h) => Math.abs(h.aie)));
    for (const h of cli.heads) {
      const c = cells.find((x) => x.layer === h.layer && x.head === h.head);
      assert.ok(Math.abs(c.aie - h.aie) <= 1e-4 * scale, `head ${h.layer}.${h.head}: page ${c.aie} vs CLI ${h.aie}`);
    }
    const topText = await tid(p, 'fv-top-heads').first().textContent();
    const pageTop = [...topText.matchAll(/(\d+)\.(\d+) \(/g)].map((m) => `${m[1]}.${m[2]}`);
    assert.deepEqual(pageTop, cli.top_heads.map((h) => `${h.layer}.${h.head}`), 'the top heads, in order');

    // The accuracy chart by layer, and the decoded vocabulary.
    const chart = tid(p, 'fv-acc-chart').first();
    assert.match(await chart.locator('figcaption').textContent(), /on 6 held-out pairs/);
    assert.equal(await chart.locator('circle').count(), 8, 'two points per layer');
    assert.equal(await tid(p, 'fv-completion').count(), 4, 'four held-out prompts completed, without and with the vector');
    assert.match(await tid(p, 'fv-completions').first().textContent(), /the vector added at layer \d \(the best\)/);
    assert.equal(await tid(p, 'fv-vocab-top').first().locator('li').count(), 12);
    assert.equal(await tid(p, 'fv-vocab-bottom').first().locator('li').count(), 12);
    await shot(panel, 'heads-panel', t);

    // Save it to the library, and put it in the recipe at the last position.
    await tid(p, 'fv-save').first().click();
    assert.match(await tid(p, 'fv-note').first().textContent(), /Saved to the library \(5 · Vectors\) as “antonyms fv L\d”/);
    await openPanel(p);
    assert.ok((await p.locator('[data-testid="vec-entry"][data-name^="antonyms fv L"]').count()) === 1, 'the library holds it');
    await typeInto(p, tid(p, 'fv-layer').first(), '1');
    await tid(p, 'fv-use').first().click();
    assert.match(await tid(p, 'fv-note').first().textContent(), /In the recipe, at the last position of every step: added “antonyms fv L1”/);
    assert.equal(await tid(p, 'vector-term-row').count(), 1, 'one vector term in the editor');
    await setRecipe(p, { prompt: 'Q: hot\nA:', terms: [], n: 1, maxTokens: 4 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });
    assert.ok((await tid(p, 'steered-0').first().textContent()).length > 0, 'a steered completion');
    await screenshot(p, 'heads-steered', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});

test('Heads: ITI probes equal tiller iti, and the top heads\' shifts steer a run', { timeout: 900_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await loadTinyCpu(p);
    await p.locator('nav.areas a[data-area="area-heads"]').click();
    assert.match(await tid(p, 'iti-summary').first().textContent(), /^120 statements \(60 true\)/);
    await typeInto(p, tid(p, 'iti-seed').first(), '1');
    await typeInto(p, tid(p, 'iti-top').first(), '3');
    await tid(p, 'iti-run').first().click();
    await waitForState(p, 'iti-status', 'done', 300_000, { failOn: ['error'] });
    const cells = await tid(p, 'iti-cell').evaluateAll((els) =>
      els.map((e) => ({ layer: Number(e.dataset.layer), head: Number(e.dataset.head), acc: Number(e.dataset.value), top: e.classList.contains('fv-cell-top') })));
    assert.equal(cells.length, 16);
    assert.equal(cells.filter((c) => c.top).length, 3);
    await tid(p, 'iti-cell').nth(2).hover();
    assert.match(await tid(p, 'iti-hover').first().textContent(), /^Layer 0, head 2: probe accuracy \d+\.\d% on the held-out statements\./);

    const r = spawnSync(tillerBinary(), ['iti', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--data', path.join(REPO_ROOT, 'datasets', 'icl', 'statements.jsonl'),
      '--seed', '1', '--top-heads', '3', '--device', 'cpu', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const cli = JSON.parse(r.stdout);
    for (const h of cli.heads) {
      const c = cells.find((x) => x.layer === h.layer && x.head === h.head);
      assert.ok(Math.abs(c.acc - h.accuracy) < 1e-9, `head ${h.layer}.${h.head}: page ${c.acc} vs CLI ${h.accuracy}`);
    }
    const tops = await tid(p, 'iti-top-head').allTextContents();
    assert.deepEqual(tops.map((x) => x.split(':')[0]), cli.top_heads.map((h) => `${h.layer}.${h.head}`), 'the same heads, in order');

    await typeInto(p, tid(p, 'iti-alpha').first(), '40');
    const before = await tid(p, 'vector-term-row').count();
    await tid(p, 'iti-use').first().click();
    assert.match(await tid(p, 'iti-note').first().textContent(), /In the recipe: 3 head shifts with α = 40/);
    assert.equal(await tid(p, 'vector-term-row').count(), before + 3, 'three vector terms more in the editor');
    assert.match(await tid(p, 'vector-term-row').last().textContent(), /head \d+'s output \(z\)/);
    await setRecipe(p, { prompt: 'The capital of France is', terms: [], n: 1, maxTokens: 4 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });
    await shot(tid(p, 'heads-panel').first(), 'heads-iti', t);

    // Own pairs from a file, in either form.
    await tid(p, 'fv-task').first().selectOption('');
    const own = path.join(OUT_DIR, 'own-pairs.txt');
    fs.writeFileSync(own, 'north -> south\neast -> west\nup -> down\n');
    await tid(p, 'fv-file').first().setInputFiles(own);
    await p.waitForFunction(() => /^3 pairs: north → south/.test(document.querySelector('[data-testid="fv-pairs-summary"]')?.textContent || ''), null, { timeout: 10_000 });
    assert.equal(await tid(p, 'fv-own').first().inputValue(), 'north -> south\neast -> west\nup -> down\n');
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
