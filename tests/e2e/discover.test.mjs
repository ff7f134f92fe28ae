// The Discover area (issue 14): MELBO on the tiny model, as a user goes through it: type a
// prompt, set a small run, watch the loss curve and the progress, read each vector's
// completions (without, +θ, −θ) and vocabulary; the vectors' f equal `tiller melbo` with the
// same settings (CPU on both sides, bit for bit up to the JSON's digits); every finished vector
// is in the library and still there after a reload; a long run stopped keeps its finished
// vectors; redoing the completions at another coefficient changes them, and sampled with the
// editor's settings they are the tokens `tiller generate` draws from the same seed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { FIXTURES, tillerBinary } from './lib/env.mjs';
import { tid, waitForState, typeInto, OUT_DIR } from './lib/contract.mjs';
import { loadTinyCpu, openPanel } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();
const PROMPT = 'The cat sat on the mat';

async function shot(loc, name, t) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.png`);
  await loc.screenshot({ path: file, timeout: 20_000 }).then(() => t.diagnostic(`screenshot: ${file}`), (e) => t.diagnostic(`screenshot ${file} failed: ${e.message}`));
}

async function fill(p, { vectors, steps }) {
  await tid(p, 'melbo-prompts').first().fill(PROMPT);
  await typeInto(p, tid(p, 'melbo-source').first(), '1');
  await typeInto(p, tid(p, 'melbo-target').first(), '3');
  await typeInto(p, tid(p, 'melbo-radius').first(), '3');
  await typeInto(p, tid(p, 'melbo-vectors').first(), String(vectors));
  await typeInto(p, tid(p, 'melbo-steps').first(), String(steps));
  await typeInto(p, tid(p, 'melbo-seed').first(), '9');
  await typeInto(p, tid(p, 'melbo-new-tokens').first(), '4');
}

test('Discover: MELBO vectors with a live loss curve, equal to tiller melbo, kept in the library across a reload', { timeout: 900_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await loadTinyCpu(p);
    const panel = tid(p, 'discover-panel').first();
    await p.locator('nav.areas a[data-area="area-discover"]').click();
    assert.ok(await panel.evaluate((d) => d.open), 'the nav opens the Discover area');
    assert.match(await tid(p, 'melbo-defaults').first().textContent(), /Empty layers: 1 and 3/);

    // A bad form says what is wrong and runs nothing.
    await typeInto(p, tid(p, 'melbo-radius').first(), '0');
    await tid(p, 'melbo-run').first().click().catch(() => {});
    assert.ok(await tid(p, 'melbo-run').first().isDisabled(), 'Run waits for a valid R');

    // 1. Two vectors of 40 steps.
    await fill(p, { vectors: 2, steps: 40 });
    await tid(p, 'melbo-run').first().click();
    await waitForState(p, 'melbo-status', 'done', 300_000, { failOn: ['error'] });
    assert.equal(await tid(p, 'melbo-status').first().textContent(), 'Done: 2 vectors.');
    const rows = await tid(p, 'melbo-vector').evaluateAll((els) =>
      els.map((e) => ({ index: Number(e.dataset.index), f: Number(e.dataset.objective), first: Number(e.dataset.first) })));
    assert.equal(rows.length, 2);
    for (const r of rows) assert.ok(r.f > r.first, `vector ${r.index}: f rises (${r.first} → ${r.f})`);
    assert.equal(await tid(p, 'melbo-chart').first().locator('path.melbo-old').count(), 2, 'both finished curves are drawn');
    assert.match(await tid(p, 'melbo-cos').first().textContent(), /2 vector\(s\) of norm 3, each added at layer 1 at every position; the largest \|cosine\| between two of them is \d\.\de-\d+ \(orthogonal by construction\)/);
    // The cosine matrix: 1 on the diagonal, 0 (to its four decimals) off it.
    const cells = await tid(p, 'melbo-cos-cell').evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
    assert.equal(cells.length, 4, 'a 2 × 2 cosine matrix');
    assert.deepEqual(cells.map((c) => Math.abs(c)), [1, 0, 0, 1]);
    const plus = await tid(p, 'melbo-plus').first().textContent();
    const without = await tid(p, 'melbo-unsteered').first().textContent();
    assert.ok(plus.length > 2 && without.length > 2, 'completions are shown');
    assert.ok((await tid(p, 'melbo-vocab').first().textContent()).trim().length > 0, 'its decoded vocabulary');

    // The same run on the CLI.
    const cliVectors = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tiller-melbo-')), 'melbo.safetensors');
    const r = spawnSync(tillerBinary(), ['melbo', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--prompt', PROMPT,
      '--source', '1', '--target', '3', '--radius', '3', '--vectors', '2', '--steps', '40', '--seed', '9', '--json', '--out', cliVectors], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const cli = JSON.parse(r.stdout);
    for (const [i, v] of cli.vectors.entries()) {
      assert.ok(Math.abs(rows[i].f - v.objective) <= 1e-9 * v.objective, `vector ${i}: page f ${rows[i].f} vs CLI ${v.objective}`);
    }
    await shot(panel, 'discover-panel', t);

    // 2. Redo the completions at c = −2: the +θ column changes.
    await typeInto(p, tid(p, 'melbo-coeff').first(), '-2');
    await tid(p, 'melbo-resteer').first().click();
    await p.waitForFunction((before) => document.querySelector('[data-testid="melbo-plus"]')?.textContent !== before, plus, { timeout: 60_000 });
    assert.equal(await tid(p, 'melbo-decoding').first().textContent(), 'c = -2, greedy');

    // Sampled with the editor's settings and seed: the same tokens as tiller generate with the
    // CLI's vector at the same seed (comparison 0 of --n 1).
    await typeInto(p, tid(p, 'seed').first(), '4');
    await tid(p, 'melbo-sampled').first().check();
    await tid(p, 'melbo-resteer').first().click();
    await p.waitForFunction(() => /sampled/.test(document.querySelector('[data-testid="melbo-decoding"]')?.textContent ?? ''), null, { timeout: 60_000 });
    assert.equal(await tid(p, 'melbo-decoding').first().textContent(),
      'c = -2, sampled: temperature 1, top-p 0.3, top-k off, frequency penalty 1, seed 4');
    const texts = async () => Object.fromEntries(await Promise.all(['melbo-unsteered', 'melbo-plus', 'melbo-minus'].map(async (id) => [id, await tid(p, id).first().getAttribute('data-text')])));
    const pageSampled = await texts();
    const gen = (coeff) => {
      const g = spawnSync(tillerBinary(), ['generate', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--prompt', PROMPT,
        '--vector', `${cliVectors}#0:1:${coeff}`, '--positions', 'all', '--n', '1', '--seed', '4', '--max-tokens', '4', '--json'], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
      return JSON.parse(g.stdout);
    };
    const plusCli = gen(-2), minusCli = gen(2);
    assert.equal(pageSampled['melbo-unsteered'], plusCli.unsteered[0].text, 'the unsteered sample is tiller generate\'s');
    assert.equal(pageSampled['melbo-plus'], plusCli.steered[0].text, '+c·θ sampled as tiller generate samples it');
    assert.equal(pageSampled['melbo-minus'], minusCli.steered[0].text, '−c·θ sampled as tiller generate samples it');
    await tid(p, 'melbo-sampled').first().uncheck();
    // Put the first vector in the recipe.
    await tid(p, 'melbo-use').first().click();
    assert.match(await tid(p, 'melbo-note').first().textContent(), /In the recipe, at every position: added “melbo L1→3 R3 #0”/);

    // 3. Both are in the library, and stay after a reload.
    const melboNames = () => tid(p, 'vec-entry').evaluateAll((els) => els.map((e) => e.dataset.name).filter((n) => n.startsWith('melbo')));
    await openPanel(p);
    assert.deepEqual(await melboNames(), ['melbo L1→3 R3 #0', 'melbo L1→3 R3 #1']);
    await p.reload({ waitUntil: 'load' });
    await openPanel(p);
    await p.waitForFunction(() => [...document.querySelectorAll('[data-testid="vec-entry"]')].filter((e) => e.dataset.name.startsWith('melbo')).length === 2, null, { timeout: 15_000 });

    // 4. A longer run (short enough not to hold a core for minutes beside another test file's
  // browser): the live curve grows, Stop keeps the finished vectors.
    await loadTinyCpu(p);
    await p.locator('nav.areas a[data-area="area-discover"]').click();
    await fill(p, { vectors: 4, steps: 500 });
    await tid(p, 'melbo-run').first().click();
    await p.waitForFunction(() => Number(document.querySelector('[data-testid="melbo-curve"]')?.dataset.points || 0) > 5, null, { timeout: 120_000 });
    assert.match(await tid(p, 'melbo-status').first().textContent(), /^Vector 1 of 4, step \d+ of 500: (about \d+ (s|min) left|timing the first step…)\.$/);
    assert.equal(await tid(p, 'melbo-progress').count(), 1);
    await p.waitForFunction(() => document.querySelectorAll('[data-testid="melbo-vector"]').length >= 1, null, { timeout: 300_000 });
    await tid(p, 'melbo-stop').first().click();
    await waitForState(p, 'melbo-status', 'done', 60_000, { failOn: ['error'] });
    assert.match(await tid(p, 'melbo-status').first().textContent(), /^Stopped: [123] finished vector\(s\) kept\.$/);
    assert.ok(await tid(p, 'melbo-vector').count() >= 1);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});

test('Discover: a sweep over R charts diversity and perplexity, equal to tiller melbo-sweep, with its CSV', { timeout: 600_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    const t00 = Date.now();
    await loadTinyCpu(p);
    t.diagnostic(`loading took ${Date.now() - t00} ms`);
    const panel = tid(p, 'discover-panel').first();
    await p.locator('nav.areas a[data-area="area-discover"]').click();
    await fill(p, { vectors: 2, steps: 6 });
    t.diagnostic(`filling took ${Date.now() - t00} ms`);
    // A radius list with a repeat is refused where it is typed, and Sweep R waits.
    await tid(p, 'melbo-radii').first().fill('1, 1');
    await p.waitForFunction(() => /twice/.test(document.querySelector('[data-testid="melbo-radii-error"]')?.textContent || ''), null, { timeout: 10_000 });
    assert.ok(await tid(p, 'melbo-sweep-run').first().isDisabled(), 'Sweep R waits for a valid list');
    await tid(p, 'melbo-radii').first().fill('0.25, 40');
    const t0 = Date.now();
    await tid(p, 'melbo-sweep-run').first().click();
    await waitForState(p, 'melbo-status', 'done', 300_000, { failOn: ['error'] });
    t.diagnostic(`the sweep took ${Date.now() - t0} ms`);
    assert.equal(await tid(p, 'melbo-status').first().textContent(), 'Done: 2 radii.');
    const rows = await tid(p, 'melbo-sweep-row').evaluateAll((els) =>
      els.map((e) => ({ r: Number(e.dataset.radius), d: Number(e.dataset.diversity), ppl: Number(e.dataset.perplexity) })));
    assert.deepEqual(rows.map((r) => r.r), [0.25, 40]);
    assert.equal(await tid(p, 'melbo-sweep-div').count(), 2, 'a diversity dot per R');
    assert.equal(await tid(p, 'melbo-sweep-ppl').count(), 2, 'a perplexity dot per R');

    const r = spawnSync(tillerBinary(), ['melbo-sweep', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--prompt', PROMPT,
      '--source', '1', '--target', '3', '--radii', '0.25,40', '--vectors', '2', '--steps', '6', '--seed', '9', '--new-tokens', '4', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const cli = JSON.parse(r.stdout);
    for (const [i, pt] of cli.points.entries()) {
      const close = (a, b) => Math.abs(a - b) <= 1e-9 * Math.abs(b);
      assert.ok(close(rows[i].d, pt.diversity), `R ${pt.radius}: page diversity ${rows[i].d} vs CLI ${pt.diversity}`);
      assert.ok(close(rows[i].ppl, pt.perplexity), `R ${pt.radius}: page perplexity ${rows[i].ppl} vs CLI ${pt.perplexity}`);
    }
    assert.ok(rows[1].ppl > rows[0].ppl, 'R 40 reads as less likely than R 0.25');

    const [download] = await Promise.all([p.waitForEvent('download', { timeout: 20_000 }), tid(p, 'melbo-sweep-csv').first().click()]);
    const csv = fs.readFileSync(await download.path(), 'utf8').trim().split('\n');
    t.diagnostic(`CSV ${download.suggestedFilename()}: ${csv.join(' | ')}`);
    assert.equal(csv[0], 'radius,vectors,diversity,perplexity,unsteered_perplexity,mean_objective');
    assert.equal(csv.length, 3);
    assert.equal(csv[1].split(',')[0], '0.25');
    await shot(tid(p, 'melbo-sweep').first(), 'discover-sweep', t);
    await shot(panel, 'discover-sweep-panel', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
