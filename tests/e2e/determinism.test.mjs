// The same recipe and seed give the same tokens in the page and in the `tiller` CLI.
//
// Logits depend on the engine (f16 GPU kernels differ from the f32 reference, and between
// adapters), so the promise is per engine: here both sides use the CPU reference — the page's
// "CPU" engine (wasm) and `tiller generate --device cpu` (native). The reference takes exp and
// tanh from libm and the sampler draws from xoshiro256** with f64 maths from libm, so the two
// must agree token for token, with sampling on (not greedy), steered and unsteered.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { watchPage } from './lib/browser.mjs';
import { REPOS, FIXTURES, REPO_ROOT, tillerBinary } from './lib/env.mjs';
import {
  tid, pageUrl, waitForState, pickHubRepo, loadModel, setRecipe, readCompletions, screenshot, attr, getValue,
} from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const RECIPE = {
  prompt: 'I went up to my friend and said',
  terms: [
    { text: 'Love', layer: 2, coeff: 5 },
    { text: 'Hate', layer: 2, coeff: -5 },
  ],
  // The post's sampling, with a wider top-p so the draws matter.
  temperature: 1, topP: 0.9, topK: 0, freqPenalty: 1, repPenalty: 1, greedy: false,
  n: 3, maxTokens: 12, seed: 1234,
};

const shared = sharedSession();

/** `tiller generate --device cpu --json` on the fixture. */
function cli(recipe) {
  const args = [
    'generate',
    '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--json',
    '--prompt', recipe.prompt,
    ...recipe.terms.flatMap((t) => ['--add', `${t.layer}:${t.coeff}:${t.text}`]),
    '--temperature', String(recipe.temperature), '--top-p', String(recipe.topP), '--top-k', String(recipe.topK),
    '--freq-penalty', String(recipe.freqPenalty), '--rep-penalty', String(recipe.repPenalty),
    '--n', String(recipe.n), '--max-tokens', String(recipe.maxTokens), '--seed', String(recipe.seed),
  ];
  const r = spawnSync(tillerBinary(), args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `tiller generate failed:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

test('page (CPU engine) and CLI (--device cpu) sample the same tokens', { timeout: 600_000 }, async (t) => {
  const want = cli(RECIPE);
  const { p, probs } = await shared.openPage();
  try {
    // engine-select is outside the shared DOM contract list; address it directly.
    await p.locator('[data-testid="engine-select"]').selectOption('cpu');
    await pickHubRepo(p, REPOS.tiny);
    await loadModel(p, { timeout: 120_000 });
    assert.equal(await attr(p, 'model-status', 'data-engine'), 'cpu', 'the page did not load the CPU engine');
    await setRecipe(p, RECIPE);
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 240_000, { failOn: ['error'] });
    const got = await readCompletions(p, RECIPE.n);
    const norm = (x) => (x || '').replace(/\s+/g, ' ').trim();
    const diffs = [];
    for (const side of ['unsteered', 'steered']) {
      for (let i = 0; i < RECIPE.n; i++) {
        const page = norm(got[side][i]);
        const line = norm(want[side][i].text);
        t.diagnostic(`${side}[${i}] page ${JSON.stringify(page)} | CLI ${JSON.stringify(line)}`);
        if (!page.endsWith(line)) diffs.push(`${side}[${i}]: page ${JSON.stringify(page)}, CLI ${JSON.stringify(line)}`);
      }
    }
    // Each token's probability, on hover, is the CLI's (`probs` of generate --json).
    for (const side of ['unsteered', 'steered']) {
      const shown = await tid(p, `${side}-0`).first().evaluate((e) => [...e.querySelectorAll('.tok')].map((s) => Number(s.dataset.p)));
      const cliProbs = want[side][0].probs;
      assert.ok(cliProbs.length === want[side][0].tokens.length && shown.length > 0, `${side}[0]: ${shown.length} token spans, CLI ${cliProbs.length} probabilities`);
      for (const q of shown) {
        assert.ok(cliProbs.some((c) => Math.abs(c - q) <= 1e-6 * Math.max(c, 1e-12)), `${side}[0]: the page's p ${q} is not among the CLI's ${cliProbs}`);
      }
      assert.ok(await tid(p, `${side}-0`).first().evaluate((e) => /the model gave it p = /.test(e.querySelector('.tok')?.title || '')), 'a token says its probability on hover');
    }
    // Sampling did something: the comparisons are not all the same text.
    assert.ok(new Set(want.steered.map((c) => c.text)).size > 1, 'the CLI drew the same completion every time: not a sampling test');
    assert.deepEqual(diffs, [], `the page and the CLI sampled different tokens:\n${diffs.join('\n')}`);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await screenshot(p, 'determinism-page-vs-cli', t);
    await p.close();
  }
});

/** IEEE half bits of a number that f16 holds exactly (normal or zero). */
function f16Bits(x) {
  if (x === 0) return 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  const mant = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | mant;
}

/** A Tiller vector file: `layer.L` [C] f32 (safetensors), as `tiller vector caa --out` writes. */
function vectorFile(layer, values) {
  const header = { [`layer.${layer}`]: { dtype: 'F32', shape: [values.length], data_offsets: [0, values.length * 4] }, __metadata__: { 'tiller.kind': 'vector', name: 'made-up', site: 'resid_pre' } };
  let json = JSON.stringify(header);
  while (json.length % 8) json += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const data = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => data.writeFloatLE(v, i * 4));
  return Buffer.concat([len, Buffer.from(json), data]);
}

test('a share link carrying a saved vector steers the page as `--vector` steers the CLI', { timeout: 600_000 }, async (t) => {
  // f16-exact values (quarters in [-2, 2]): the link's f16 and the file's f32 hold the same numbers.
  const values = Array.from({ length: 64 }, (_, i) => (((i * 37) % 17) - 8) / 4);
  const bits = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => bits.writeUInt16LE(f16Bits(v), i * 2));
  const file = path.join(os.tmpdir(), `tiller-e2e-vector-${process.pid}.safetensors`);
  fs.writeFileSync(file, vectorFile(2, values));
  const recipe = {
    prompt: RECIPE.prompt, terms: [],
    vectors: [{ name: 'made-up', layer: 2, coeff: 3, site: 'resid_pre', positions: 'all', values: bits.toString('base64') }],
    sampling: { temperature: 1, top_k: 0, top_p: 0.9, freq_penalty: 1, rep_penalty: 1, greedy: false },
    seed: 99, n: 2, max_new_tokens: 10,
  };
  const state = { model: { hub: REPOS.tiny }, recipe };
  const fragment = 'v1.' + zlib.deflateRawSync(Buffer.from(JSON.stringify(state))).toString('base64url');
  const args = [
    'generate', '--model', path.join(FIXTURES, 'tiny-gpt2'), '--device', 'cpu', '--json', '--prompt', recipe.prompt,
    '--vector', `${file}:2:3`, '--temperature', '1', '--top-p', '0.9', '--freq-penalty', '1', '--n', '2', '--max-tokens', '10', '--seed', '99',
  ];
  const r = spawnSync(tillerBinary(), args, { cwd: REPO_ROOT, encoding: 'utf8', timeout: 600_000 });
  assert.equal(r.status, 0, `tiller generate --vector failed:\n${r.stderr}`);
  const want = JSON.parse(r.stdout);
  const p = await shared.session.context.newPage();
  const probs = watchPage(p);
  try {
    await p.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url, fragment), { waitUntil: 'load' });
    const row = tid(p, 'vector-term-row').first();
    await row.waitFor({ timeout: 30_000 });
    assert.match(await row.textContent(), /vector “made-up”.*layer 2, all positions/, 'the editor shows the vector term');
    assert.equal(await getValue(p, 'vector-term-coeff'), '3', 'the editor shows its coefficient');
    // The link names a Hub repo, so the page asks before downloading: not yet, the CPU engine first.
    const ask = tid(p, 'confirm-cancel').first();
    await ask.waitFor({ state: 'visible', timeout: 10_000 });
    await ask.click();
    await p.locator('[data-testid="engine-select"]').selectOption('cpu');
    await pickHubRepo(p, REPOS.tiny);
    await loadModel(p, { timeout: 120_000 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 240_000, { failOn: ['error'] });
    const norm = (x) => (x || '').replace(/\s+/g, ' ').trim();
    const sameAsCli = async (how) => {
      const got = await readCompletions(p, 2);
      for (const side of ['unsteered', 'steered']) {
        for (let i = 0; i < 2; i++) {
          t.diagnostic(`${how}: ${side}[${i}] page ${JSON.stringify(norm(got[side][i]))} | CLI ${JSON.stringify(norm(want[side][i].text))}`);
          assert.ok(norm(got[side][i]).endsWith(norm(want[side][i].text)), `${how}: ${side}[${i}] differs between the page and the CLI`);
        }
      }
    };
    await sameAsCli('link');
    assert.notDeepEqual(want.steered.map((c) => c.tokens), want.unsteered.map((c) => c.tokens), 'the vector changed nothing');
    // Remove it, then add the same file through the picker at coefficient 3: the same tokens.
    await tid(p, 'vector-term-remove').first().click();
    await row.waitFor({ state: 'detached', timeout: 5_000 });
    await tid(p, 'vector-import').first().setInputFiles(file);
    const note = tid(p, 'vector-import-note').first();
    await note.waitFor({ timeout: 10_000 });
    assert.match(await note.textContent(), /added “made-up” \(64 channels\) at layer 2 with coefficient 1/, 'the import says what it added');
    // Typed key by key, as a person would (a half-typed `-` is kept, then replaced by 3).
    const vcoeff = tid(p, 'vector-term-coeff').first();
    await vcoeff.click();
    await p.keyboard.press('Control+A');
    await p.keyboard.press('Backspace');
    await p.keyboard.type('-', { delay: 15 });
    assert.equal(await vcoeff.inputValue(), '-', 'a half-typed coefficient is kept');
    await p.keyboard.press('Backspace');
    await p.keyboard.type('3', { delay: 15 });
    assert.equal(await vcoeff.inputValue(), '3');
    await tid(p, 'run').first().click();
    await p.waitForFunction(() => document.querySelector('[data-testid="run-status"]')?.dataset.state !== 'done', null, { timeout: 5_000 }).catch(() => {});
    await waitForState(p, 'run-status', 'done', 240_000, { failOn: ['error'] });
    await sameAsCli('file picker');
    assert.match(await p.locator('[data-testid="history-entry"]').first().textContent(), /\+3 × vector “made-up” @2/, 'the history names the vector');
    // A file that is not a vector says so and adds nothing.
    const junk = path.join(os.tmpdir(), `tiller-e2e-junk-${process.pid}.safetensors`);
    fs.writeFileSync(junk, 'not a vector file');
    await tid(p, 'vector-import').first().setInputFiles(junk);
    await p.waitForFunction(() => /unchanged/.test(document.querySelector('[data-testid="vector-import-note"]')?.textContent || ''), null, { timeout: 10_000 });
    assert.equal(await tid(p, 'vector-term-row').count(), 1, 'a bad file changed the recipe');
    fs.rmSync(junk, { force: true });
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await screenshot(p, 'vector-link-page-vs-cli', t);
    await p.close();
    fs.rmSync(file, { force: true });
  }
});
