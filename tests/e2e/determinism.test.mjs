// The same recipe and seed give the same tokens in the page and in the `tiller` CLI.
//
// Logits depend on the engine (f16 GPU kernels differ from the f32 reference, and between
// adapters), so the promise is per engine: here both sides use the CPU reference — the page's
// "CPU" engine (wasm) and `tiller generate --device cpu` (native). The reference takes exp and
// tanh from libm and the sampler draws from xoshiro256** with f64 maths from libm, so the two
// must agree token for token, with sampling on (not greedy), steered and unsteered.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { launch, watchPage } from './lib/browser.mjs';
import { startServers, REPOS, FIXTURES, REPO_ROOT } from './lib/env.mjs';
import {
  tid, pageUrl, waitForState, pickHubRepo, loadModel, setRecipe, readCompletions, screenshot, attr,
} from './lib/contract.mjs';

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

let servers;
let session;

before(async () => {
  servers = await startServers();
  session = await launch();
});

after(async () => {
  await session?.close?.().catch(() => {});
  await servers?.close();
});

/**
 * The `tiller` binary as `cargo test --workspace` (the test command's stage 1) builds it: the
 * same command with --no-run is then a no-op, where `cargo run -p tiller-cli` would resolve
 * features for one package and rebuild the dependencies (minutes on 2 cores).
 */
function tillerBinary() {
  const r = spawnSync('cargo', ['test', '--workspace', '--no-run', '-q'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 1_800_000 });
  assert.equal(r.status, 0, `cargo test --workspace --no-run failed:\n${r.stderr}`);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR) : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug', 'tiller');
}

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
  const p = await session.context.newPage();
  const probs = watchPage(p);
  try {
    await p.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
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
    // Sampling did something: the comparisons are not all the same text.
    assert.ok(new Set(want.steered.map((c) => c.text)).size > 1, 'the CLI drew the same completion every time: not a sampling test');
    assert.deepEqual(diffs, [], `the page and the CLI sampled different tokens:\n${diffs.join('\n')}`);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await screenshot(p, 'determinism-page-vs-cli', t);
    await p.close();
  }
});
