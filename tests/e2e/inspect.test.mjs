// The Inspect area (issue 15), as a user goes through it: from a steered run, read its steering
// vector over the built-in corpus (heatmaps, top passages centred on their peak, histogram, the
// vocabulary beside the max-activating tokens), hover a token, export CSV and JSON, open the
// "what changed" strip under the steered completion and a token's changes, and read the prompt
// layer by layer. Then a library vector's reading over the corpus equals `tiller inspect
// project --csv` on the downloaded file and the same corpus, token by token (CPU on both sides).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { FIXTURES, REPO_ROOT, tillerBinary } from './lib/env.mjs';
import { tid, waitForState, setRecipe, screenshot, parseCsv, typeInto, OUT_DIR } from './lib/contract.mjs';
import { openPanel, loadTinyCpu, build, entryNamed, download } from './lib/vectors.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();
const CORPUS = path.join(REPO_ROOT, 'crates', 'web', 'assets', 'corpus.txt');
const corpusLines = () => fs.readFileSync(CORPUS, 'utf8').split('\n').filter((l) => l.trim() !== '');

/** A screenshot of one element (the full page is too tall to read), to out/<name>.png. */
async function shot(loc, name, t) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.png`);
  await loc.screenshot({ path: file, timeout: 20_000 }).then(() => t.diagnostic(`screenshot: ${file}`), (e) => t.diagnostic(`screenshot ${file} failed: ${e.message}`));
}

async function readInspection(p) {
  await tid(p, 'inspect-run').first().click();
  await p.waitForFunction(() => /^(done|failed)/.test(document.querySelector('[data-testid="inspect-status"]')?.textContent || ''), null, { timeout: 240_000 });
  const status = await tid(p, 'inspect-status').first().textContent();
  assert.equal(status, 'done', `the reading ended: ${status}`);
  await tid(p, 'inspect-results').first().waitFor({ timeout: 10_000 });
}

test('Inspect from a steered run: max-activating text over the corpus, hover, exports, what changed, the lens', { timeout: 900_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await openPanel(p);
    await loadTinyCpu(p);
    await setRecipe(p, {
      prompt: 'I went up to my friend and said',
      terms: [{ text: ' wedding', layer: 1, coeff: 6 }, { text: ' funeral', layer: 1, coeff: -6 }],
      n: 1, maxTokens: 8, seed: 3,
    });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 120_000, { failOn: ['error'] });

    // 1. The run's steering vector over the built-in corpus.
    await tid(p, 'inspect-run-steering').first().click();
    const panel = tid(p, 'inspect-panel').first();
    assert.ok(await panel.evaluate((d) => d.open), 'the Inspect area opens');
    assert.match(await tid(p, 'inspect-target').first().textContent(), /Reading run #1's steering at resid_pre layer/);
    assert.ok(await tid(p, 'inspect-corpus').first().isChecked(), 'the built-in corpus is the default');
    await readInspection(p);
    const n = corpusLines().length;
    const summary = await tid(p, 'inspect-summary').first().textContent();
    assert.match(summary, new RegExp(`over ${n} passages of the built-in corpus`), summary);
    const passages = await tid(p, 'inspect-passage').evaluateAll((els) => els.map((e) => ({ i: Number(e.dataset.index), max: Number(e.dataset.max) })));
    assert.equal(passages.length, 20, 'the top 20 passages');
    for (let k = 1; k < passages.length; k++) assert.ok(passages[k - 1].max >= passages[k].max, 'ranked by their max');
    // The peak sits in the middle of its snippet, and is the largest value shown there.
    const first = tid(p, 'inspect-passage').first();
    const peak = Number(await first.locator('.at [data-testid="inspect-token"]').getAttribute('data-value'));
    assert.ok(Math.abs(peak - passages[0].max) <= 1e-5 * Math.max(1, Math.abs(peak)), `peak ${peak} vs max ${passages[0].max}`);
    const shown = await first.locator('.snippet [data-testid="inspect-token"]').evaluateAll((els) => els.map((e) => Number(e.dataset.value)));
    assert.ok(shown.every((x) => x <= peak), 'no token of the snippet is above its peak');
    assert.ok((await tid(p, 'inspect-histogram').first().locator('rect').count()) === 40, 'a 40-bin histogram');
    assert.ok((await tid(p, 'inspect-vocab-top').first().locator('li').count()) > 0, 'the decoded vocabulary');
    assert.equal(await tid(p, 'inspect-max-tokens').first().locator('li').count(), 10, 'the max-activating tokens beside it');

    // Hover a token: its values are read out.
    await first.locator('.at [data-testid="inspect-token"]').hover();
    const hover = await tid(p, 'inspect-hover').first().textContent();
    assert.match(hover, new RegExp(`text ${passages[0].i + 1} position \\d+: x · v = -?[\\d.]+, cosine = -?[\\d.]+`), hover);
    const dotShown = Number(/x · v = (-?[\d.]+)/.exec(hover)[1]);
    assert.ok(Math.abs(dotShown - peak) <= 1e-3 * Math.max(1, Math.abs(peak)), `hovered ${dotShown} vs ${peak}`);
    // Click a passage: it opens whole.
    await first.locator('.passage-head').click();
    assert.ok((await tid(first, 'inspect-whole').first().locator('[data-testid="inspect-token"]').count()) >= shown.length);
    await screenshot(p, 'inspect-corpus', t);
    await shot(panel, 'inspect-panel', t);

    // 2. CSV: one row per token of every passage, `tiller inspect project --csv`'s columns.
    const csv = await download(p, p, 'inspect-csv');
    const rows = parseCsv(csv.bytes.toString('utf8'));
    assert.deepEqual(rows[0], ['text_index', 'position', 'token_id', 'token', 'dot', 'cosine']);
    const texts = new Set(rows.slice(1).map((r) => r[0]));
    assert.equal(texts.size, n, 'every passage in the CSV');
    const peakRow = rows.slice(1).filter((r) => Number(r[0]) === passages[0].i).reduce((a, b) => (Number(b[4]) > Number(a[4]) ? b : a));
    assert.ok(Math.abs(Number(peakRow[4]) - peak) <= 1e-5 * Math.max(1, Math.abs(peak)), 'the CSV holds the peak');
    const json = JSON.parse((await download(p, p, 'inspect-json')).bytes.toString('utf8'));
    assert.equal(json.texts.length, n);
    assert.equal(json.top[0], passages[0].i, 'the JSON ranks the same passage first');
    assert.equal(json.by, 'dot');

    // Cosine re-ranks without running again.
    await tid(p, 'inspect-by').first().selectOption('cosine');
    const cosMax = Number(await tid(p, 'inspect-passage').first().getAttribute('data-max'));
    assert.ok(cosMax <= 1 + 1e-5 && cosMax >= -1 - 1e-5, `a cosine: ${cosMax}`);
    await tid(p, 'inspect-by').first().selectOption('dot');

    // 3. What changed, under the steered completion.
    await tid(p, 'changes-open').first().click();
    const strip = tid(p, 'changes-strip').first();
    await p.waitForFunction(() => document.querySelector('[data-testid="changes-strip"]')?.dataset.state !== 'running', null, { timeout: 60_000 });
    assert.equal(await strip.getAttribute('data-state'), 'done', await strip.textContent());
    const tokens = tid(strip, 'change-token');
    assert.equal(await tokens.count(), 8, 'a token per generated token');
    const kls = await tokens.evaluateAll((els) => els.map((e) => Number(e.dataset.kl)));
    assert.ok(kls.every((k) => k >= 0) && kls.some((k) => k > 0), `KL per token: ${kls}`);
    await tokens.nth(kls.indexOf(Math.max(...kls))).click();
    const detail = tid(p, 'change-detail').first();
    assert.match(await detail.textContent(), /KL\(steered ‖ unsteered\) = [\d.]+ nats/);
    assert.ok((await tid(detail, 'change-rose').first().locator('li').count()) > 0, 'tokens that rose');
    assert.ok((await tid(detail, 'change-fell').first().locator('li').count()) > 0, 'tokens that fell');
    await strip.scrollIntoViewIfNeeded();
    await screenshot(p, 'inspect-changes', t);
    await shot(p.locator('#area-results'), 'inspect-strip', t);

    // 4. The prompt, layer by layer.
    await tid(p, 'lens-run').first().click();
    await p.waitForFunction(() => ['done', 'error'].includes(document.querySelector('[data-testid="lens"]')?.dataset.state), null, { timeout: 60_000 });
    assert.equal(await tid(p, 'lens').first().getAttribute('data-state'), 'done');
    const layers = await tid(p, 'lens-row').evaluateAll((els) => els.map((e) => e.dataset.layer));
    assert.deepEqual(layers, ['0', '1', '2', '3', '4'], 'every layer of the tiny model (4), and its output');
    assert.equal(await tid(p, 'lens-steering-dot').count(), 1, 'the steering tensor at layer 1');
    await tid(p, 'lens-chart').first().scrollIntoViewIfNeeded();
    await screenshot(p, 'inspect-lens', t);
    await shot(tid(p, 'lens').first(), 'inspect-lens-area', t);

    // 5. The user's own texts, typed key by key (Enter between them).
    await tid(p, 'inspect-own').first().check();
    await typeInto(p, tid(p, 'inspect-texts').first(), 'The wedding was lovely.\nThe funeral was quiet.');
    await readInspection(p);
    assert.match(await tid(p, 'inspect-summary').first().textContent(), /over 2 texts/);
    assert.equal(await tid(p, 'inspect-passage').count(), 2, 'both typed texts ranked');
    await shot(panel, 'inspect-own-texts', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});

test('Inspect a library vector: the page equals tiller inspect project --csv on the corpus', { timeout: 900_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await openPanel(p);
    await loadTinyCpu(p);
    await build(p, 'sentiment', 2);
    const entry = entryNamed(p, 'sentiment mean_diff L2');
    const file = (await download(p, entry, 'vec-download')).file;
    await tid(entry, 'vec-inspect').first().click();
    assert.match(await tid(p, 'inspect-target').first().textContent(), /Reading “sentiment mean_diff L2” at resid_pre layer/);
    await readInspection(p);
    const page = parseCsv((await download(p, p, 'inspect-csv')).bytes.toString('utf8'));

    const r = spawnSync(tillerBinary(), [
      'inspect', 'project', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--no-bos',
      '--vector', `${file}:2`, '--texts', CORPUS, '--csv',
    ], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
    assert.equal(r.status, 0, `tiller inspect project failed:\n${r.stderr}`);
    const cli = parseCsv(r.stdout);
    assert.equal(page.length, cli.length, 'the same tokens');
    let worst = 0;
    for (let k = 1; k < cli.length; k++) {
      assert.deepEqual(page[k].slice(0, 4), cli[k].slice(0, 4), `row ${k}: text, position, token`);
      const scale = Math.max(1, Math.abs(Number(cli[k][4])));
      worst = Math.max(worst, Math.abs(Number(page[k][4]) - Number(cli[k][4])) / scale);
    }
    t.diagnostic(`page vs CLI, ${cli.length - 1} tokens: max relative |Δ dot| ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-5, `the page's projections differ from the CLI's by ${worst}`);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
