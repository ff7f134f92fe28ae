// End-to-end tests of the Tiller page (issue 5, section 8): the built page (`cargo xtask page`) served
// locally, in headless Chromium with WebGPU on SwiftShader, loading tiny GPT-2s from a local
// server that answers like the Hugging Face Hub (?hub=http://127.0.0.1:PORT).
//
// The tests run in order and share one browser profile ("main") where it matters (the model
// loaded in 02 is run in 03, its cache is reloaded in 06); each one still checks its own
// preconditions and loads what it needs, so a failure reads as itself. Every test saves a
// screenshot to out/<name>.png (also on failure) and prints its path.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { launch, watchPage } from './lib/browser.mjs';
import { loadDecoder } from './lib/gpt2-decode.mjs';
import path from 'node:path';
import { startServers, REPOS, FIXTURES } from './lib/env.mjs';
import {
  tid, unsteered, steered, pageUrl, expectPresent, setValue, getValue, text, attr, waitForState,
  errorText, confirmDownloadIfAsked, pickHubRepo, loadModel, setRecipe, readRecipe, readTerms,
  readCompletions, readShareLink, screenshot, startRecording, takeRecording, parseSize,
  waitForSizeText, startProgressRecording, takeProgress, readVocab, MODEL_SELECT_VALUES, setTerms, click,
  reveal, setSweep, readSweep, readSweepPoints, OUT_DIR, parseCsv,
} from './lib/contract.mjs';

const MODEL = 'model.safetensors';
/** The preset-like recipe of the issue: Love − Hate at layer 1 of the 4-layer tiny model. */
const RECIPE = {
  prompt: 'I hate you because',
  terms: [
    { text: 'Love', layer: 1, coeff: 5 },
    { text: 'Hate', layer: 1, coeff: -5 },
  ],
  n: 2,
  maxTokens: 10,
  seed: 1,
};
const RUN_TIMEOUT = 120_000;
const LOAD_TIMEOUT = 120_000;

let servers;
let main; // the main browser session (fresh profile, kept across tests for the cache)
let page; // its page
let problems; // console errors etc. of `page`
let mainProfile = null; // its user-data-dir once 06b restarts the browser on it
const extraSessions = [];
/** Results shared between tests (null when the producing test failed). */
const shared = { firstRun: null, shareLink: null, recipeState: null };

/** Registers a test that always screenshots `ctx.shot` (default: the main page) at the end. */
function e2e(name, fn, timeout = 240_000) {
  test(name, { timeout }, async (t) => {
    const ctx = { shot: null };
    try {
      await fn(t, ctx);
    } finally {
      const p = ctx.shot || page;
      if (p && !p.isClosed()) await screenshot(p, name, t);
    }
  });
}

async function newSession(opts) {
  const s = await launch(opts);
  extraSessions.push(s);
  return s;
}

async function openPage(session, fragment = '') {
  const p = await session.context.newPage();
  const probs = watchPage(p);
  await p.goto(pageUrl(servers.site.url, servers.hub.url, fragment), { waitUntil: 'load' });
  return { p, probs };
}

/** Loads the tiny Hub model in `p` unless it is ready already. */
async function ensureModel(p, repo = REPOS.tiny) {
  // Run alone (--test-name-pattern), a test may find the main page not opened yet.
  if (p.url() === 'about:blank') await p.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
  const state = await attr(p, 'model-status', 'data-state').catch(() => null);
  const repoNow = (await tid(p, 'model-repo').count()) ? await getValue(p, 'model-repo').catch(() => null) : null;
  if (state === 'ready' && repoNow === repo) return;
  await pickHubRepo(p, repo);
  await loadModel(p, { timeout: LOAD_TIMEOUT });
}

/** Clicks Run and waits for run-status done; returns the completions. */
async function runAndWait(p, n) {
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  return readCompletions(p, n);
}

function realProblems(probs) {
  // A missing favicon is the static server's 404, not the page's fault.
  const errs = probs.consoleErrors.filter((e) => !/favicon\.ico|Failed to load resource: the server responded with a status of 404/.test(e));
  return { consoleErrors: errs, pageErrors: probs.pageErrors };
}

before(async () => {
  servers = await startServers();
  console.log(`page: ${servers.site.url}  hub: ${servers.hub.url}`);
  main = await launch();
  await main.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: servers.site.url }).catch(() => {});
  page = await main.context.newPage();
  problems = watchPage(page);
});

after(async () => {
  for (const s of extraSessions) await s.close();
  await main?.close();
  if (mainProfile) fs.rmSync(mainProfile, { recursive: true, force: true });
  await servers?.close();
});

e2e('01-page-loads', async (t) => {
  await page.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
  const missing404 = () => servers.site.requests.filter((r) => r.status === 404).map((r) => r.path);
  await expectPresent(page, 'model-select', 30_000).catch((e) => {
    throw new Error(`${e.message}: the page did not render; files missing from the build: ${JSON.stringify(missing404())}; console errors: ${problems.consoleErrors.join(' | ')}`);
  });

  // Title and intro.
  const title = await page.title();
  const h1 = await page.locator('h1').first().textContent({ timeout: 5_000 }).catch(() => '');
  assert.match(`${title} ${h1}`, /tiller/i, `neither <title> (${JSON.stringify(title)}) nor <h1> (${JSON.stringify(h1)}) names Tiller`);
  const body = await page.locator('body').innerText();
  assert.match(body, /steer/i, 'the intro does not say what the page does (no mention of steering)');

  // The contract elements that exist before any model is loaded.
  const always = [
    'model-select', 'model-load', 'model-status', 'cache-size', 'prompt', 'term-add',
    'pair-a', 'pair-b', 'pair-layer', 'pair-coeff', 'pair-add', 'bos', 'positions', 'site',
    'temperature', 'top-p', 'top-k', 'freq-penalty', 'rep-penalty', 'greedy', 'n', 'max-tokens',
    'seed', 'run', 'run-status', 'preset-select',
  ];
  const missing = [];
  for (const id of always) if ((await tid(page, id).count()) === 0) missing.push(id);
  assert.deepEqual(missing, [], `page deviates from the DOM contract: missing data-testid ${missing.join(', ')}`);

  const options = await tid(page, 'model-select').first().evaluate((s) => [...s.options].map((o) => o.value));
  for (const v of MODEL_SELECT_VALUES) assert.ok(options.includes(v), `model-select lacks option '${v}' (has ${options.join(', ')})`);

  // The post's sampling defaults: temperature 1, top-p 0.3, frequency penalty 1.
  assert.equal(Number(await getValue(page, 'temperature')), 1, 'default temperature is not 1');
  assert.equal(Number(await getValue(page, 'top-p')), 0.3, 'default top-p is not 0.3');
  assert.equal(Number(await getValue(page, 'freq-penalty')), 1, 'default frequency penalty is not 1');

  // WebGPU: available here (SwiftShader); the page must not claim otherwise.
  const hasAdapter = await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())));
  await page.waitForTimeout(2_000); // let start-up errors surface
  const err = await errorText(page);
  if (hasAdapter) {
    assert.doesNotMatch(err, /webgpu/i, `WebGPU works in this browser, yet the page says: ${err}`);
    const state = await attr(page, 'model-status', 'data-state');
    assert.equal(state, 'idle', `model-status before loading is ${state}, not idle`);
  } else {
    assert.match(err, /webgpu/i, 'no WebGPU adapter and no message about WebGPU');
  }
  const pr = realProblems(problems);
  assert.deepEqual(pr.pageErrors, [], `uncaught errors: ${pr.pageErrors.join('\n')}`);
  assert.deepEqual(pr.consoleErrors, [], `console errors: ${pr.consoleErrors.join('\n')}`);
});

e2e('01b-no-webgpu-message', async (t, ctx) => {
  // Same browser without WebGPU: the page must say so, naming browsers or flags.
  const s = await newSession({ webgpu: false });
  const { p, probs } = await openPage(s);
  ctx.shot = p;
  await expectPresent(p, 'model-select', 30_000);
  assert.equal(await p.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter()))), false,
    'test setup: this browser still has a WebGPU adapter');
  // The message may be an error, or a warning where the page falls back to its CPU engine.
  const message = async () => [await errorText(p), ...(await tid(p, 'warning').allTextContents().catch(() => []))]
    .map((x) => x.trim()).filter(Boolean).join(' | ');
  let err = '';
  for (let i = 0; i < 20 && !/webgpu/i.test(err); i++) { await p.waitForTimeout(250); err = await message(); }
  if (!/webgpu/i.test(err)) {
    // Maybe the page only checks when asked to load a model.
    await pickHubRepo(p, REPOS.tiny);
    await tid(p, 'model-load').first().click();
    await confirmDownloadIfAsked(p, 2_000);
    for (let i = 0; i < 60 && !/webgpu/i.test(err); i++) { await p.waitForTimeout(250); err = await message(); }
  }
  t.diagnostic(`error/warning: ${err}`);
  assert.match(err, /webgpu/i, `no readable "no WebGPU" message in [data-testid=error] or [data-testid=warning] (got ${JSON.stringify(err)})`);
  assert.match(err, /chrome|edge|firefox|safari|browser|flag/i, `the message does not say which browsers/flags work: ${err}`);
  assert.deepEqual(probs.pageErrors, [], `uncaught errors: ${probs.pageErrors.join('\n')}`);
});

e2e('02-load-hub-model', async (t) => {
  if (!(await tid(page, 'model-select').count())) {
    await page.goto(pageUrl(servers.site.url, servers.hub.url));
  }
  servers.hub.reset();
  const modelSize = servers.hub.size(REPOS.tiny, MODEL);
  const allSize = modelSize + servers.hub.size(REPOS.tiny, 'tokenizer.json') + servers.hub.size(REPOS.tiny, 'config.json');

  await pickHubRepo(page, REPOS.tiny);
  // The size is shown before downloading: after picking the repo, or at the latest while the
  // page asks to confirm the download.
  let sizeText = await waitForSizeText(page, 15_000);
  await startProgressRecording(page);
  await tid(page, 'model-load').first().click();
  const asked = await confirmDownloadIfAsked(page, 1_500).catch(() => false);
  if (!sizeText && asked) sizeText = await waitForSizeText(page, 1_000);
  t.diagnostic(`model-size: ${JSON.stringify(sizeText)}; asked to confirm: ${asked}`);
  assert.ok(sizeText, 'model-size showed no size before the download (after picking the repo)');
  const shown = parseSize(sizeText);
  assert.ok(shown >= 0.85 * modelSize && shown <= 1.15 * allSize,
    `model-size ${JSON.stringify(sizeText)} (${shown} B) is not the repo's size (${modelSize} B of weights, ${allSize} B in all)`);

  await waitForState(page, 'model-status', 'ready', LOAD_TIMEOUT, { failOn: ['error'] });
  const prog = await takeProgress(page);
  t.diagnostic(`progress samples: ${prog.length}; first ${JSON.stringify(prog[1] || null)}; last ${JSON.stringify(prog[prog.length - 1])}`);
  const withTotal = prog.filter((s) => s.total !== null && Number(s.total) > 0);
  assert.ok(withTotal.length > 0, 'the progress element never showed data-total > 0 during the load');
  const full = withTotal.filter((s) => Number(s.loaded) === Number(s.total));
  assert.ok(full.length > 0, `progress never reached 100% (data-loaded == data-total); last ${JSON.stringify(withTotal[withTotal.length - 1])}`);
  const total = Number(full[full.length - 1].total);
  assert.ok(total >= 0.85 * modelSize && total <= 1.15 * allSize, `progress data-total ${total} is not the download's size (~${modelSize}..${allSize})`);
  const loadedSeq = withTotal.map((s) => Number(s.loaded));
  const nonMonotonic = loadedSeq.some((v, i) => i > 0 && v < loadedSeq[i - 1] && Number(withTotal[i].total) === Number(withTotal[i - 1].total));
  assert.ok(!nonMonotonic, `data-loaded went backwards: ${loadedSeq.join(', ')}`);
  // If the progress element is still shown, it must say 100%.
  if ((await tid(page, 'progress').count()) > 0) {
    const l = await attr(page, 'progress', 'data-loaded');
    const tt = await attr(page, 'progress', 'data-total');
    if (tt !== null && Number(tt) > 0) assert.equal(Number(l), Number(tt), 'progress shows less than 100% after the model is ready');
  }
  // The weights were fetched once (whole or in ranges), not twice.
  const got = servers.hub.bodyBytes(REPOS.tiny, MODEL);
  t.diagnostic(`model.safetensors: ${JSON.stringify(servers.hub.count(REPOS.tiny, MODEL).ranges.slice(0, 5))}…, ${got} body bytes`);
  assert.ok(got >= modelSize * 0.95 && got <= modelSize * 1.1, `model.safetensors body bytes sent: ${got}, file is ${modelSize}`);
  assert.equal(await attr(page, 'model-status', 'data-state'), 'ready');
});

e2e('03-run-recipe-streams-and-differs', async (t) => {
  await ensureModel(page);
  await setRecipe(page, RECIPE);
  const terms = await readTerms(page);
  assert.deepEqual(terms, RECIPE.terms, 'the term rows do not hold what was typed');
  await startRecording(page, RECIPE.n);
  await tid(page, 'run').first().click();
  await waitForState(page, 'run-status', ['running', 'done'], 30_000, { failOn: ['error'] });
  await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  const rec = await takeRecording(page);
  const res = await readCompletions(page, RECIPE.n);
  t.diagnostic(`completions: ${JSON.stringify(res)}`);
  t.diagnostic(`recorded ${rec.length} DOM states; states seen: ${[...new Set(rec.map((r) => r.state))].join(',')}`);

  for (let i = 0; i < RECIPE.n; i++) {
    assert.ok(res.unsteered[i], `unsteered-${i} is empty or missing after the run`);
    assert.ok(res.steered[i], `steered-${i} is empty or missing after the run`);
  }
  // Streaming: while run-status was "running", each column showed at least two different
  // non-empty texts (token by token, not all at the end).
  for (const key of ['u0', 's0']) {
    const seen = [...new Set(rec.filter((r) => r.state === 'running' && r[key]).map((r) => r[key]))];
    assert.ok(seen.length >= 2,
      `${key === 'u0' ? 'unsteered-0' : 'steered-0'} did not stream: ${seen.length} distinct text(s) while running (${JSON.stringify(seen.slice(0, 3))})`);
  }
  assert.ok(rec.some((r) => r.state === 'running'), 'run-status never showed "running"');
  assert.notDeepEqual(res.steered, res.unsteered, 'steered and unsteered completions are identical');
  assert.notEqual(res.steered[0], res.unsteered[0], 'steered-0 equals unsteered-0');
  // Each pair is marked where it departs: the text before the mark is the same on both
  // sides, and the mark starts where the two first differ.
  for (let i = 0; i < RECIPE.n; i++) {
    // The elements' untrimmed text, in characters as the page counts them (code points).
    const raw = async (id) => [...(await tid(page, id).first().textContent())];
    const [u, st] = [await raw(`unsteered-${i}`), await raw(`steered-${i}`)];
    let common = 0;
    while (common < Math.min(u.length, st.length) && u[common] === st[common]) common++;
    for (const [id, full] of [[`unsteered-${i}`, u], [`steered-${i}`, st]]) {
      const departs = Number(await attr(page, id, 'data-departs'));
      const mark = await tid(page, id).first().locator('mark.departs').textContent({ timeout: 1000 }).catch(() => '');
      if (u.join('') === st.join('')) {
        assert.equal(departs, -1, `${id}: an identical pair is not marked`);
      } else {
        assert.equal(departs, common, `${id}: data-departs is where the pair's texts first differ`);
        assert.equal(mark, full.slice(common).join(''), `${id}: the mark holds the rest of the completion`);
      }
    }
  }
  // The worker's timing of the run: one step per token, a positive time per step.
  const steps = Number(await attr(page, 'run-timing', 'data-steps'));
  const stepMs = Number(await attr(page, 'run-timing', 'data-step-ms'));
  t.diagnostic(`run-timing: ${await text(tid(page, 'run-timing').first())}`);
  assert.equal(steps, RECIPE.maxTokens, 'run-timing data-steps is not one step per generated token');
  assert.ok(stepMs > 0 && Number.isFinite(stepMs), `run-timing data-step-ms is ${stepMs}`);
  shared.firstRun = res;
  shared.recipeState = await readRecipe(page);
});

// Regression: a Run that reaches the worker while another job holds the engine (here the
// vocabulary, asked for in the same task, so the run always arrives second) used to fail
// with "no model is ready"; it must wait its turn and finish.
e2e('03b-run-while-the-engine-is-busy', async (t) => {
  await ensureModel(page);
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 4 });
  try {
    await page.evaluate(() => {
      document.querySelector('[data-testid="vocab-decode"]').click();
      document.querySelector('[data-testid="run"]').click();
    });
    await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
    const res = await readCompletions(page, 1);
    t.diagnostic(`completions: ${JSON.stringify(res)}`);
    assert.ok(res.steered[0] && res.unsteered[0], 'the run that waited for the engine produced no completions');
  } finally {
    // Later tests (05's share link) start from the editor as 03 left it.
    await setRecipe(page, RECIPE);
  }
});

// Ctrl+Enter runs from the keyboard (here from inside the prompt box): the same run as the
// button's, announced by the status line (a polite live region).
e2e('03c-ctrl-enter-runs', async (t) => {
  await ensureModel(page);
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 4 });
  try {
    const meta = async () => (await page.locator('.run-meta').first().textContent().catch(() => '')) || '';
    const before = Number((/Run #(\d+)/.exec(await meta()) || [0, 0])[1]);
    await tid(page, 'prompt').first().click();
    await page.keyboard.press('Control+Enter');
    await waitForState(page, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
    const after = Number((/Run #(\d+)/.exec(await meta()) || [0, 0])[1]);
    assert.equal(after, before + 1, `Ctrl+Enter started one run: ${await meta()}`);
    assert.equal(await tid(page, 'prompt').first().inputValue(), RECIPE.prompt, 'Ctrl+Enter did not type into the prompt');
    assert.equal(await tid(page, 'run-status').first().getAttribute('aria-live'), 'polite', 'the run status is a live region');
    const res = await readCompletions(page, 1);
    assert.ok(res.steered[0] && res.unsteered[0], 'the keyboard run produced completions');
  } finally {
    await setRecipe(page, RECIPE);
  }
});

e2e('04-vocab-panel', async (t) => {
  await ensureModel(page);
  await expectPresent(page, 'vocab-panel', 30_000, 'with a model loaded and a recipe set');
  let t0 = Date.now();
  while ((await tid(page, 'vocab-entry').count()) === 0 && Date.now() - t0 < 5_000) await page.waitForTimeout(250);
  if ((await tid(page, 'vocab-entry').count()) === 0) {
    // The panel may fill only after a run (of the current recipe).
    await setRecipe(page, RECIPE);
    await runAndWait(page, RECIPE.n);
  }
  t0 = Date.now();
  while ((await tid(page, 'vocab-entry').count()) === 0 && Date.now() - t0 < 60_000) await page.waitForTimeout(250);
  const before = await readVocab(page);
  assert.ok(before.length > 0, 'the vocab panel has no vocab-entry within 60 s');
  for (const e of before) {
    assert.match(String(e.id), /^\d+$/, `vocab-entry data-id ${JSON.stringify(e.id)} is not a token id`);
    assert.ok(Number(e.id) < 50257, `vocab-entry data-id ${e.id} is past the vocabulary`);
    assert.ok(e.score !== null && Number.isFinite(Number(e.score)), `vocab-entry data-score ${JSON.stringify(e.score)} is not a number`);
  }
  const panelText = await tid(page, 'vocab-panel').first().innerText();
  assert.match(panelText, /heuristic/i, 'the vocab panel is not labelled as a heuristic');
  t.diagnostic(`${before.length} entries; first: ${JSON.stringify(before.slice(0, 3))}`);

  const lnf = tid(page, 'vocab-ln-f').first();
  await expectPresent(page, 'vocab-ln-f');
  const wasOn = await lnf.isChecked();
  await setValue(page, 'vocab-ln-f', !wasOn);
  const key = (v) => v.map((e) => `${e.id}:${e.score}`).join('|');
  let after = before;
  const t1 = Date.now();
  // (The panel may empty for a moment while it recomputes.)
  while ((after.length === 0 || key(after) === key(before)) && Date.now() - t1 < 30_000) {
    await page.waitForTimeout(250);
    after = await readVocab(page);
  }
  t.diagnostic(`after toggling ln_f: ${JSON.stringify(after.slice(0, 3))}`);
  assert.ok(after.length > 0, 'the vocab panel stayed empty for 30 s after toggling ln_f');
  const sb = before.map((e) => e.score).join('|');
  const sa = after.map((e) => e.score).join('|');
  assert.notEqual(sa, sb, 'toggling vocab-ln-f did not change the scores');
  // Toggle back: the original scores return (a pure function of the vector).
  await setValue(page, 'vocab-ln-f', wasOn);
  let back = after;
  const t2 = Date.now();
  while (key(back) !== key(before) && Date.now() - t2 < 30_000) {
    await page.waitForTimeout(250);
    back = await readVocab(page);
  }
  assert.equal(key(back), key(before), 'toggling vocab-ln-f back did not restore the scores');
});

function normRecipe(r) {
  const num = (x) => (x === undefined || x === null || x === '' ? x : Number(x));
  return {
    prompt: r.prompt,
    terms: r.terms,
    bos: r.bos,
    positions: r.positions,
    site: r.site,
    temperature: num(r.temperature),
    topP: num(r.topP),
    topK: num(r.topK),
    freqPenalty: num(r.freqPenalty),
    repPenalty: num(r.repPenalty),
    greedy: r.greedy,
    n: num(r.n),
    maxTokens: num(r.maxTokens),
    seed: num(r.seed),
  };
}

e2e('05-share-link-reproduces', async (t, ctx) => {
  await ensureModel(page);
  if (!shared.firstRun) {
    await setRecipe(page, RECIPE);
    shared.firstRun = await runAndWait(page, RECIPE.n);
    shared.recipeState = await readRecipe(page);
  }
  const state = normRecipe(shared.recipeState || (await readRecipe(page)));
  await expectPresent(page, 'share-copy');
  await tid(page, 'share-copy').first().click();
  await expectPresent(page, 'share-link', 10_000, 'after clicking share-copy');
  let link = '';
  const t0 = Date.now();
  while (!link && Date.now() - t0 < 10_000) { link = await readShareLink(page); if (!link) await page.waitForTimeout(200); }
  t.diagnostic(`share link: ${link}`);
  assert.ok(link, 'share-link is empty after share-copy');
  const u = new URL(link, servers.site.url);
  assert.equal(`${u.origin}${u.pathname}`, `${servers.site.url}/`, `the share link does not point at this page: ${link}`);
  assert.ok(u.hash.length > 1, `the share link has no fragment (the state belongs in the URL fragment): ${link}`);
  shared.shareLink = link;

  // A fresh browser (empty profile, empty cache) opens the link, with the same hub param.
  const bytesBefore = servers.hub.bodyBytes(REPOS.tiny, MODEL);
  const s = await newSession();
  const { p, probs } = await openPage(s, u.hash);
  ctx.shot = p;
  await expectPresent(p, 'model-select', 30_000);
  // Not one of the five defaults: the page asks before downloading anything.
  const c = tid(p, 'confirm-download').first();
  await c.waitFor({ state: 'visible', timeout: 15_000 }).catch(() => {
    throw new Error('opening a link to a non-default model (a Hub repo) did not ask before downloading (no visible confirm-download)');
  });
  await p.waitForTimeout(500);
  assert.equal(servers.hub.bodyBytes(REPOS.tiny, MODEL), bytesBefore, 'model.safetensors was downloaded before the user confirmed');

  // The state is restored.
  assert.equal(await getValue(p, 'model-select'), 'hub', 'model-select not restored to hub');
  assert.equal(await getValue(p, 'model-repo'), REPOS.tiny, 'model-repo not restored');
  const restored = normRecipe(await readRecipe(p));
  assert.deepEqual(restored, state, 'the link did not restore the editor state');

  await c.click();
  await waitForState(p, 'model-status', 'ready', LOAD_TIMEOUT, { failOn: ['error'] });
  // Run unless the page already runs the restored recipe by itself.
  await p.waitForTimeout(1_000);
  const rs = await attr(p, 'run-status', 'data-state');
  if (rs !== 'running' && rs !== 'done') await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', RUN_TIMEOUT, { failOn: ['error'] });
  const again = await readCompletions(p, RECIPE.n);
  t.diagnostic(`reproduced: ${JSON.stringify(again)}`);
  assert.deepEqual(again, shared.firstRun, 'the shared link did not reproduce the same completions');
  assert.deepEqual(probs.pageErrors, [], `uncaught errors: ${probs.pageErrors.join('\n')}`);
});

e2e('06-reload-from-cache', async (t) => {
  await ensureModel(page);
  // The cache's size is shown, non-zero, once a model is cached.
  await expectPresent(page, 'cache-size');
  let cacheText = '';
  const t0 = Date.now();
  while (!(parseSize(cacheText) > 0) && Date.now() - t0 < 15_000) {
    cacheText = await text(tid(page, 'cache-size'));
    if (!(parseSize(cacheText) > 0)) await page.waitForTimeout(250);
  }
  t.diagnostic(`cache-size before reload: ${JSON.stringify(cacheText)}`);
  assert.ok(parseSize(cacheText) > 0, `cache-size shows no cached bytes after a load: ${JSON.stringify(cacheText)}`);

  const before = {
    model: servers.hub.count(REPOS.tiny, MODEL),
    tok: servers.hub.count(REPOS.tiny, 'tokenizer.json'),
    cfg: servers.hub.count(REPOS.tiny, 'config.json'),
  };
  await page.reload({ waitUntil: 'load' });
  await expectPresent(page, 'model-select', 30_000);
  await page.waitForTimeout(1_000);
  await confirmDownloadIfAsked(page, 1_000);
  let st = await attr(page, 'model-status', 'data-state');
  if (st !== 'ready' && st !== 'loading') {
    await pickHubRepo(page, REPOS.tiny);
    await tid(page, 'model-load').first().click();
    await confirmDownloadIfAsked(page, 2_000);
  }
  await waitForState(page, 'model-status', 'ready', LOAD_TIMEOUT, { failOn: ['error'] });
  const after = {
    model: servers.hub.count(REPOS.tiny, MODEL),
    tok: servers.hub.count(REPOS.tiny, 'tokenizer.json'),
    cfg: servers.hub.count(REPOS.tiny, 'config.json'),
  };
  const d = (k) => ({ GET: after[k].GET - before[k].GET, HEAD: after[k].HEAD - before[k].HEAD, bytes: after[k].bodyBytes - before[k].bodyBytes });
  t.diagnostic(`requests during the reload: model ${JSON.stringify(d('model'))}, tokenizer ${JSON.stringify(d('tok'))}, config ${JSON.stringify(d('cfg'))}`);
  assert.equal(d('model').bytes, 0, `model.safetensors was downloaded again after the reload (${d('model').bytes} bytes in ${d('model').GET} GETs)`);

  // The cached weights are the same weights: the recipe gives the same completions.
  if (shared.firstRun) {
    await setRecipe(page, RECIPE);
    const again = await runAndWait(page, RECIPE.n);
    assert.deepEqual(again, shared.firstRun, 'the model loaded from the cache gives other completions than the downloaded one');
  }
});

e2e('06b-browser-restart-from-cache', async (t) => {
  // The cache outlives the browser: quit, start again on the same profile, load.
  mainProfile = main.userDataDir;
  await main.close({ keepProfile: true });
  main = await launch({ userDataDir: mainProfile });
  page = await main.context.newPage();
  problems = watchPage(page);
  await page.goto(pageUrl(servers.site.url, servers.hub.url), { waitUntil: 'load' });
  await expectPresent(page, 'model-select', 30_000);
  const before = servers.hub.bodyBytes(REPOS.tiny, MODEL);
  await ensureModel(page);
  const got = servers.hub.bodyBytes(REPOS.tiny, MODEL) - before;
  assert.equal(got, 0, `after a browser restart model.safetensors was downloaded again (${got} bytes)`);
});

e2e('06c-cache-clear', async (t) => {
  await ensureModel(page);
  await expectPresent(page, 'cache-clear');
  await tid(page, 'cache-clear').first().click();
  await confirmDownloadIfAsked(page, 1_000); // a "really clear?" confirmation, if any
  let cacheText = await text(tid(page, 'cache-size'));
  const t0 = Date.now();
  while (parseSize(cacheText) !== 0 && !/empty|^\s*0\b|none/i.test(cacheText) && Date.now() - t0 < 15_000) {
    await page.waitForTimeout(250);
    cacheText = await text(tid(page, 'cache-size'));
  }
  t.diagnostic(`cache-size after clear: ${JSON.stringify(cacheText)}`);
  assert.ok(parseSize(cacheText) === 0 || /empty|^\s*0\b|none/i.test(cacheText), `cache-size after cache-clear: ${JSON.stringify(cacheText)}`);
  // The next load downloads again.
  await page.reload({ waitUntil: 'load' });
  await expectPresent(page, 'model-select', 30_000);
  const before = servers.hub.bodyBytes(REPOS.tiny, MODEL);
  await ensureModel(page);
  const got = servers.hub.bodyBytes(REPOS.tiny, MODEL) - before;
  const size = servers.hub.size(REPOS.tiny, MODEL);
  assert.ok(got >= 0.95 * size, `after cache-clear the model was not downloaded again (${got} of ${size} bytes)`);
});

e2e('07-corrupt-model-readable-error', async (t) => {
  if (!(await tid(page, 'model-select').count())) await page.goto(pageUrl(servers.site.url, servers.hub.url));
  await expectPresent(page, 'model-select', 30_000);
  const myPrompt = 'My own prompt, which must survive a bad download';
  await setValue(page, 'prompt', myPrompt);

  for (const [repo, what] of [
    [REPOS.corrupt, /truncat|too short|cut off|incomplete|past the end|beyond|out of (range|bounds)|expected|missing|short|end of (file|data)|size/i],
    [REPOS.garbage, /header|not a safetensors|invalid|corrupt|malformed|too (large|big|long)|size|parse/i],
  ]) {
    await pickHubRepo(page, repo);
    await tid(page, 'model-load').first().click();
    await confirmDownloadIfAsked(page, 2_000);
    const state = await waitForState(page, 'model-status', ['error', 'ready'], LOAD_TIMEOUT);
    const err = await errorText(page);
    t.diagnostic(`${repo}: model-status ${state}; error: ${JSON.stringify(err)}`);
    assert.equal(state, 'error', `${repo}: a corrupt model.safetensors loaded as "ready"`);
    assert.ok(err, `${repo}: model-status is error but [data-testid=error] is empty`);
    assert.match(err, /model\.safetensors/, `${repo}: the error does not name the bad file: ${err}`);
    assert.match(err, what, `${repo}: the error does not say what is wrong with the file: ${err}`);
    assert.doesNotMatch(err, /unreachable|RuntimeError|panicked|wasm-function|\bundefined\b/i, `${repo}: the error is an opaque trap: ${err}`);
    assert.equal(await getValue(page, 'prompt'), myPrompt, `${repo}: the page lost the user's prompt`);
  }
  const pr = realProblems(problems);
  assert.deepEqual(pr.pageErrors, [], `uncaught errors: ${pr.pageErrors.join('\n')}`);
});

e2e('08-tampered-share-link', async (t, ctx) => {
  let link = shared.shareLink;
  if (!link) {
    // Make one from the main page (05 failed before saving it).
    await tid(page, 'share-copy').first().click().catch(() => {});
    link = await readShareLink(page).catch(() => '');
  }
  const frag = link ? new URL(link, servers.site.url).hash.slice(1) : '';
  const variants = [];
  if (frag.length > 8) {
    variants.push(['cut off', frag.slice(0, Math.floor(frag.length * 0.6))]);
    const mid = Math.floor(frag.length / 2);
    variants.push(['bad characters', `${frag.slice(0, mid)}!!*~${frag.slice(mid + 4)}`]);
    const m = /^v(\d+)([.:~_-])/.exec(frag);
    if (m) variants.push(['unknown version', `v999${m[2]}${frag.slice(m[0].length)}`]);
  } else {
    variants.push(['garbage', 'v1.!!!not-a-link!!!']);
  }
  const s = await newSession();
  const bytesBefore = servers.hub.bodyBytes(REPOS.tiny, MODEL);
  let last = null;
  for (const [what, f] of variants) {
    const { p, probs } = await openPage(s, f);
    ctx.shot = p;
    last = p;
    await expectPresent(p, 'model-select', 30_000);
    let err = '';
    for (let i = 0; i < 40 && !err; i++) { await p.waitForTimeout(250); err = await errorText(p); }
    t.diagnostic(`${what}: #${f.slice(0, 40)}… → ${JSON.stringify(err)}`);
    assert.ok(err, `a tampered link (${what}) shows no error`);
    assert.match(err, /link|url|fragment/i, `the error for a tampered link (${what}) does not say the link is the problem: ${err}`);
    assert.doesNotMatch(err, /unreachable|RuntimeError|panicked|wasm-function/i, `opaque trap for a tampered link (${what}): ${err}`);
    assert.deepEqual(probs.pageErrors, [], `uncaught errors with a tampered link (${what}): ${probs.pageErrors.join('\n')}`);
    assert.notEqual(await attr(p, 'model-status', 'data-state'), 'loading', `a tampered link (${what}) started a download`);
  }
  assert.equal(servers.hub.bodyBytes(REPOS.tiny, MODEL), bytesBefore, 'a tampered link downloaded weights');

  // The page keeps working: load the tiny model and run a short recipe.
  const p = last;
  await setValue(p, 'prompt', 'Still working after a bad link');
  assert.equal(await getValue(p, 'prompt'), 'Still working after a bad link');
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: LOAD_TIMEOUT });
  await setRecipe(p, { terms: [{ text: 'Love', layer: 1, coeff: 5 }], n: 1, maxTokens: 4, seed: 3 });
  const res = await runAndWait(p, 1);
  assert.ok(res.steered[0] && res.unsteered[0], `no completions after a bad link: ${JSON.stringify(res)}`);
});

e2e('09-pair-shortcut', async (t) => {
  if (!(await tid(page, 'model-select').count())) await page.goto(pageUrl(servers.site.url, servers.hub.url));
  await setTerms(page, []);
  await setValue(page, 'pair-a', 'Love');
  await setValue(page, 'pair-b', 'Hate');
  await setValue(page, 'pair-layer', 2);
  await setValue(page, 'pair-coeff', 4);
  await click(page, 'pair-add');
  await page.waitForTimeout(300);
  const terms = await readTerms(page);
  assert.deepEqual(terms, [
    { text: 'Love', layer: 2, coeff: 4 },
    { text: 'Hate', layer: 2, coeff: -4 },
  ], 'pair-add did not add +c for text A and −c for text B');
});

e2e('10-padding-warning', async (t) => {
  await ensureModel(page);
  // Same layer, different token counts: the shorter term is padded with spaces.
  await setRecipe(page, { prompt: 'I hate you because you are', terms: [
    { text: 'Love', layer: 1, coeff: 5 },
    { text: 'I really do not like you', layer: 1, coeff: -5 },
  ] });
  let w = '';
  const t0 = Date.now();
  while (!/pad/i.test(w) && Date.now() - t0 < 15_000) {
    await page.waitForTimeout(250);
    const els = tid(page, 'warning');
    w = (await els.allTextContents().catch(() => [])).join(' | ');
  }
  t.diagnostic(`warning: ${JSON.stringify(w)}`);
  assert.match(w, /pad/i, 'no inline warning that terms are padded');
  assert.match(w, /\d/, 'the padding warning does not show the token counts');
});

/** Text of all warning elements, waiting up to `timeout` for one matching `re`. */
async function waitForWarning(p, re, timeout = 15_000) {
  let w = '';
  const t0 = Date.now();
  do {
    w = (await tid(p, 'warning').allTextContents().catch(() => [])).join(' | ');
    if (re.test(w)) break;
    await p.waitForTimeout(250);
  } while (Date.now() - t0 < timeout);
  return w;
}

e2e('10b-longer-than-prompt-and-context-warnings', async (t) => {
  await ensureModel(page);
  // A steering text longer than the prompt: warned inline, and a run says so.
  await setRecipe(page, { prompt: 'Hi', terms: [{ text: 'I talk about weddings constantly', layer: 1, coeff: 4 }], n: 1, maxTokens: 4 });
  const w = await waitForWarning(page, /longer|prompt/i);
  t.diagnostic(`warning (longer than the prompt): ${JSON.stringify(w)}`);
  // "I talk about weddings constantly" is 5 tokens, "Hi" 1: the warning names both counts.
  assert.ok(/prompt/i.test(w) && /\b5\b/.test(w) && /\b1\b/.test(w),
    `no inline warning that the steering text (5 tokens) is longer than the prompt (1 token): ${JSON.stringify(w)}`);
  // Near the context limit (128 tokens for the tiny model).
  await setRecipe(page, { prompt: 'the '.repeat(120).trim(), terms: [{ text: 'Love', layer: 1, coeff: 4 }], maxTokens: 20 });
  const c = await waitForWarning(page, /context|limit|1024|128/i);
  t.diagnostic(`warning (context): ${JSON.stringify(c)}`);
  assert.match(c, /context|limit/i, `no inline warning that the prompt is near the context limit: ${JSON.stringify(c)}`);
});

e2e('11-f32-repo-without-config', async (t) => {
  // tiny-gpt2-f32 has no config.json (404): shapes come from the tensors.
  servers.hub.reset();
  await pickHubRepo(page, REPOS.tinyF32);
  await loadModel(page, { timeout: LOAD_TIMEOUT });
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 5 });
  const res = await runAndWait(page, 1);
  t.diagnostic(`f32: ${JSON.stringify(res)}`);
  assert.ok(res.steered[0] && res.unsteered[0], 'no completions from the f32 model');
});

e2e('12-progress-and-cancel', async (t) => {
  // A throttled repo (1 MB/s): progress moves through intermediate values; cancel stops it.
  await pickHubRepo(page, REPOS.slow);
  await startProgressRecording(page);
  await tid(page, 'model-load').first().click();
  await confirmDownloadIfAsked(page, 1_500);
  await waitForState(page, 'model-status', 'loading', 10_000, { failOn: ['error'] });
  await page.waitForTimeout(2_500);
  const mid = { loaded: await attr(page, 'progress', 'data-loaded'), total: await attr(page, 'progress', 'data-total'), text: await text(tid(page, 'progress')) };
  t.diagnostic(`mid-download progress: ${JSON.stringify(mid)}`);
  assert.ok(Number(mid.total) > 0 && Number(mid.loaded) > 0 && Number(mid.loaded) < Number(mid.total),
    `progress mid-download is not between 0 and 100%: ${JSON.stringify(mid)}`);
  assert.match(mid.text, /%/, `the progress bar shows no percent: ${JSON.stringify(mid.text)}`);
  assert.match(mid.text, /\/s/, `the progress bar shows no speed: ${JSON.stringify(mid.text)}`);
  await expectPresent(page, 'model-cancel');
  await tid(page, 'model-cancel').first().click();
  const st = await waitForState(page, 'model-status', ['idle', 'error'], 15_000);
  const bytesAtCancel = servers.hub.bodyBytes(REPOS.slow, MODEL);
  await page.waitForTimeout(2_000);
  assert.ok(servers.hub.bodyBytes(REPOS.slow, MODEL) - bytesAtCancel < 200_000, 'the download went on after cancel');
  assert.ok(bytesAtCancel < servers.hub.size(REPOS.slow, MODEL), 'cancel came after the whole file');
  t.diagnostic(`after cancel: model-status ${st}, error ${JSON.stringify(await errorText(page))}`);
});

e2e('12b-reload-after-cancel', async (t) => {
  // A cancelled download must not leave a partial file that passes for the model: loading
  // the same repo again completes (downloading what is missing) and the model works.
  if ((await attr(page, 'model-status', 'data-state')) === 'loading') {
    await tid(page, 'model-cancel').first().click();
    await waitForState(page, 'model-status', ['idle', 'error'], 15_000);
  }
  const before = servers.hub.bodyBytes(REPOS.slow, MODEL);
  await pickHubRepo(page, REPOS.slow);
  await loadModel(page, { timeout: LOAD_TIMEOUT });
  const got = servers.hub.bodyBytes(REPOS.slow, MODEL) - before;
  t.diagnostic(`re-load after cancel fetched ${got} bytes`);
  assert.ok(got > 0, 'the re-load after a cancel fetched nothing: a partial download was taken for the model');
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 4 });
  const res = await runAndWait(page, 1);
  assert.ok(res.steered[0] && res.unsteered[0], 'no completions after re-loading a cancelled model');
}, 240_000);

e2e('13-default-model-sizes', async (t) => {
  // The five defaults show their size before any download (and nothing is downloaded).
  const expected = { gpt2: 548_105_171, distilgpt2: 352_824_413, 'gpt2-xl': 6_431_829_964 };
  servers.hub.reset();
  for (const [name, bytes] of Object.entries(expected)) {
    await setValue(page, 'model-select', name);
    const sizeText = await waitForSizeText(page, 10_000);
    t.diagnostic(`${name}: ${JSON.stringify(sizeText)}`);
    assert.ok(sizeText, `model-size shows no size for ${name}`);
    const shown = parseSize(sizeText);
    assert.ok(Math.abs(shown - bytes) / bytes < 0.12, `model-size for ${name} says ${JSON.stringify(sizeText)}, expected about ${bytes} bytes`);
  }
  const sent = servers.hub.log.filter((r) => r.method === 'GET' && /model\.safetensors/.test(r.path) && !r.range);
  assert.deepEqual(sent, [], 'choosing a default model started downloading its weights');
});

e2e('14-hub-redirect-to-cdn', async (t) => {
  // The real Hub answers model.safetensors with a 302 to a CDN on another origin.
  servers.hub.reset();
  await pickHubRepo(page, REPOS.redirect);
  await loadModel(page, { timeout: LOAD_TIMEOUT });
  const c = servers.hub.count(REPOS.redirect, MODEL);
  t.diagnostic(`redirected repo: ${JSON.stringify({ GET: c.GET, HEAD: c.HEAD, bytes: c.bodyBytes })}`);
  assert.ok(c.bodyBytes >= 0.95 * servers.hub.size(REPOS.redirect, MODEL), 'the weights did not come through the redirect');
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 5 });
  const res = await runAndWait(page, 1);
  assert.ok(res.steered[0] && res.unsteered[0], 'no completions from the redirected repo');
});

e2e('15-runs-on-webgpu', async (t) => {
  // With a WebGPU adapter (SwiftShader here) the default engine must be the WebGPU one.
  // The contract has no engine attribute: model-status's data-engine is read if the page has
  // one, else its text (which names the engine).
  await ensureModel(page);
  const hasAdapter = await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())));
  assert.ok(hasAdapter, 'test setup: no WebGPU adapter in this browser');
  const engineAttr = await attr(page, 'model-status', 'data-engine');
  const status = await text(tid(page, 'model-status'));
  t.diagnostic(`model-status: data-engine=${JSON.stringify(engineAttr)} text=${JSON.stringify(status)}`);
  if (engineAttr !== null) {
    assert.match(engineAttr, /gpu/i, `model-status data-engine is ${JSON.stringify(engineAttr)} although WebGPU is available`);
  } else {
    assert.doesNotMatch(status, /\bcpu\b/i, `the model runs on the CPU although WebGPU is available: ${JSON.stringify(status)}`);
    assert.match(status, /webgpu|\bgpu\b/i, `model-status does not say the model runs on WebGPU: ${JSON.stringify(status)}`);
  }
});

e2e('16-main-thread-stays-responsive', async (t) => {
  // The engine runs in a worker: during a run the page keeps painting frames.
  await ensureModel(page);
  await setRecipe(page, { ...RECIPE, n: 2, maxTokens: 24 });
  await page.evaluate(() => {
    window.__tillerGaps = { max: 0, frames: 0, stop: false };
    let last = performance.now();
    const tick = (now) => {
      const g = window.__tillerGaps;
      g.max = Math.max(g.max, now - last);
      g.frames += 1;
      last = now;
      if (!g.stop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  await runAndWait(page, 2);
  const gaps = await page.evaluate(() => { window.__tillerGaps.stop = true; return window.__tillerGaps; });
  t.diagnostic(`frames during the run: ${gaps.frames}, longest gap ${Math.round(gaps.max)} ms`);
  assert.ok(gaps.frames >= 3, `only ${gaps.frames} frames painted during the run`);
  assert.ok(gaps.max < 1_500, `the main thread froze for ${Math.round(gaps.max)} ms during a run`);
});

e2e('17-base-url-source', async (t) => {
  // model-select=url: a base URL holding the three files.
  servers.hub.reset();
  await setValue(page, 'model-select', 'url');
  await expectPresent(page, 'model-url', 10_000, "after choosing model-select='url'");
  await setValue(page, 'model-url', `${servers.hub.url}/${REPOS.url}/resolve/main`);
  await tid(page, 'model-url').first().press('Tab').catch(() => {});
  await loadModel(page, { timeout: LOAD_TIMEOUT });
  assert.ok(servers.hub.bodyBytes(REPOS.url, MODEL) > 0, 'the weights did not come from the base URL');
  await setRecipe(page, { ...RECIPE, n: 1, maxTokens: 4 });
  const res = await runAndWait(page, 1);
  assert.ok(res.steered[0] && res.unsteered[0], 'no completions from a base-URL model');
});

e2e('18-local-files-source', async (t) => {
  // model-select=local: the three files picked from disk (no network at all).
  servers.hub.reset();
  await setValue(page, 'model-select', 'local');
  await expectPresent(page, 'model-files', 10_000, "after choosing model-select='local'");
  const dir = path.join(FIXTURES, 'tiny-gpt2');
  await startProgressRecording(page);
  await tid(page, 'model-files').first().setInputFiles(['model.safetensors', 'tokenizer.json', 'config.json'].map((f) => path.join(dir, f)));
  await page.waitForTimeout(1_000);
  // Picking the files may start the load by itself; otherwise press Load.
  const seen = await page.evaluate(() => window.__tillerProg.map((r) => r.state));
  if (!seen.includes('loading')) await tid(page, 'model-load').first().click();
  await waitForState(page, 'model-status', 'loading', 10_000).catch(() => {});
  await waitForState(page, 'model-status', 'ready', LOAD_TIMEOUT, { failOn: ['error'] });
  const states = (await takeProgress(page)).map((r) => r.state);
  assert.ok(states.includes('loading'), `the local files were never loaded (model-status went ${states.join(' → ')})`);
  assert.equal(servers.hub.log.length, 0, `local files made network requests: ${JSON.stringify(servers.hub.log.slice(0, 3))}`);
  await setRecipe(page, RECIPE);
  const res = await runAndWait(page, RECIPE.n);
  t.diagnostic(`local: ${JSON.stringify(res)}`);
  if (shared.firstRun) {
    assert.deepEqual(res, shared.firstRun, 'the same files picked locally give other completions than from the Hub');
  }
});

e2e('19-greedy-matches-hf-golden', async (t) => {
  // Greedy decoding is deterministic: the page's steered and unsteered completions must be
  // the tokens Hugging Face transformers produced for the same recipes (golden.json, dumped
  // by tests/fixtures/make_golden.py), for the F16 and the F32 tiny model.
  const norm = (x) => x.replace(/\s+/g, ' ').trim();
  const failures = [];
  // Five of the ten golden recipes (each run takes seconds on SwiftShader): between them
  // BOS on and off, one and two layers, a term with a leading space, both dtypes.
  for (const [repo, dir, pick] of [[REPOS.tiny, 'tiny-gpt2', [0, 1, 3]], [REPOS.tinyF32, 'tiny-gpt2-f32', [2, 4]]]) {
    const golden = JSON.parse(fs.readFileSync(path.join(FIXTURES, dir, 'golden.json'), 'utf8'));
    const decode = loadDecoder(path.join(FIXTURES, dir, 'tokenizer.json'));
    await ensureModel(page, repo);
    for (const g of pick.map((i) => golden.steered[i])) {
      const n = g.greedy.length;
      await setRecipe(page, {
        prompt: g.prompt,
        terms: g.terms.map((x) => ({ text: x.text, layer: x.layer, coeff: x.coeff })),
        bos: g.bos, greedy: true, freqPenalty: 0, repPenalty: 1, n: 1, maxTokens: n, seed: 0,
      });
      const res = await runAndWait(page, 1);
      const want = { steered: decode(g.greedy), unsteered: decode(g.greedy_unsteered) };
      for (const k of ['steered', 'unsteered']) {
        const got = norm(res[k][0] || '');
        if (!got.endsWith(norm(want[k]))) {
          failures.push(`${repo} "${g.prompt}" bos=${g.bos} ${k}: page ${JSON.stringify(got)}, HF ${JSON.stringify(want[k])}`);
        }
      }
    }
  }
  for (const f of failures) t.diagnostic(f);
  assert.deepEqual(failures, [], `greedy completions differ from Hugging Face's:\n${failures.join('\n')}`);
});

e2e('20-presets', async (t) => {
  // The published examples, with the post's prompts and coefficients, layer scaled by depth.
  await ensureModel(page);
  const opts = await tid(page, 'preset-select').first().evaluate((s) => [...s.options].map((o) => ({ value: o.value, text: o.textContent.trim() })));
  t.diagnostic(`presets: ${opts.map((o) => o.text).join(' / ')}`);
  const love = opts.find((o) => /love/i.test(o.text) && /hate/i.test(o.text));
  assert.ok(love, `no Love − Hate preset among: ${opts.map((o) => o.text).join(', ')}`);
  for (const re of [/praise/i, /anger|calm/i, /wedding/i, /alive|die/i, /eiffel/i, /dragon/i]) {
    assert.ok(opts.some((o) => re.test(o.text)), `no preset matching ${re} among: ${opts.map((o) => o.text).join(', ')}`);
  }
  await setValue(page, 'preset-select', love.value);
  await page.waitForTimeout(300);
  const r = await readRecipe(page);
  t.diagnostic(`Love − Hate preset: ${JSON.stringify({ prompt: r.prompt, terms: r.terms })}`);
  assert.equal(r.prompt, 'I hate you because', "the Love − Hate preset does not use the post's prompt");
  assert.equal(r.terms.length, 2);
  assert.deepEqual(r.terms.map((x) => [x.text, x.coeff]), [['Love', 5], ['Hate', -5]]);
  assert.equal(r.terms[0].layer, r.terms[1].layer);
  assert.ok(r.terms[0].layer >= 0 && r.terms[0].layer < 4, `preset layer ${r.terms[0].layer} is outside the tiny model's 4 layers`);
  const body = await page.locator('body').innerText();
  assert.match(body, /scaled/i, 'the preset is not labelled as scaled for this smaller model');
});

e2e('21-layer-bounded-by-depth', async (t) => {
  // The tiny model has 4 layers (0..3): layer 7 is refused with a message, and not run.
  await ensureModel(page);
  await setRecipe(page, { prompt: 'I hate you because', terms: [{ text: 'Love', layer: 7, coeff: 5 }], n: 1, maxTokens: 4 });
  const max = await tid(page, 'term-row').first().locator('[data-testid="term-layer"]').getAttribute('max');
  t.diagnostic(`term-layer max=${JSON.stringify(max)}`);
  const findLine = async () => {
    const body = `${await errorText(page)}\n${await page.locator('body').innerText()}`;
    return body.split('\n').find((l) => /layer/i.test(l) && /\b7\b/.test(l) && /range|0\s*(\.\.|–|-|to)\s*3|only|depth/i.test(l)) || '';
  };
  let line = '';
  const t0 = Date.now();
  while (!line && Date.now() - t0 < 10_000) { await page.waitForTimeout(250); line = await findLine(); }
  const runBtn = tid(page, 'run').first();
  const enabled = await runBtn.isEnabled();
  let states = [];
  if (enabled) {
    // run-status may still say "done" from an earlier run: watch what the click changes.
    await startRecording(page, 1);
    await runBtn.click();
    await page.waitForTimeout(3_000);
    states = (await takeRecording(page)).slice(1).map((r) => r.state);
    if (!line) line = await findLine();
  }
  t.diagnostic(`message: ${JSON.stringify(line)}; Run enabled: ${enabled}; run-status after clicking Run: ${JSON.stringify(states)}`);
  assert.ok(line, 'no message that layer 7 is out of range for a 4-layer model');
  assert.ok(!states.includes('running') && !states.includes('done'), `a term at layer 7 of a 4-layer model ran (${states.join(' → ')})`);
});

/** Short evaluation sets: the tiny model scores them in a few steps on SwiftShader. */
const SWEEP_SETS = [
  { name: 'related', texts: ['The bride and groom danced at the wedding.', 'We planned the wedding for June.'] },
  { name: 'unrelated', texts: ['The train leaves the station at seven.', 'He fixed the kitchen tap today.'] },
];
const SWEEP_TIMEOUT = 180_000;

/** Clicks sweep-run and waits for sweep-progress data-state done; returns the points. */
async function runSweepAndWait(p) {
  await click(p, 'sweep-run');
  await expectPresent(p, 'sweep-progress', 10_000, 'after clicking sweep-run');
  await waitForState(p, 'sweep-progress', 'done', SWEEP_TIMEOUT, { failOn: ['error'] }).catch(async (e) => {
    const errs = await tid(p, 'sweep-error').allTextContents().catch(() => []);
    throw new Error(`${e.message}; sweep-error: ${JSON.stringify(errs)}`);
  });
  return readSweepPoints(p);
}

/** Errors shown in the sweep panel. */
const sweepErrors = async (p) => (await tid(p, 'sweep-error').allTextContents()).map((x) => x.trim());

e2e('22-sweep-chart-csv', async (t) => {
  // A layer × coefficient sweep of Love − Hate on the 4-layer tiny model: 2 sets × 4 layers ×
  // coefficients {0, 4}. The chart draws one line per set; coefficient 0 is the unsteered
  // model, so its perplexity ratio is exactly 1 and its KL exactly 0.
  await ensureModel(page);
  await setRecipe(page, RECIPE);
  await reveal(tid(page, 'sweep-panel').first());
  const defaults = await readSweep(page);
  t.diagnostic(`defaults: ${JSON.stringify(defaults)}`);
  assert.equal(defaults.from, '0', 'the default layer range does not start at 0');
  assert.equal(defaults.to, '3', 'the default layer range is not every layer of the 4-layer model (0 to 3)');
  assert.ok(defaults.sets.length >= 2 && defaults.sets.every((s) => s.name && s.texts.length), 'no default evaluation sets');
  assert.ok(defaults.sets.some((s) => s.texts.some((x) => /wedding/i.test(x))), 'no default set of wedding texts');

  await setSweep(page, { sets: SWEEP_SETS, from: 0, to: 3, coeffs: '0, 4', x: 'layer', metric: 'ppl_ratio' });
  assert.deepEqual(await sweepErrors(page), [], 'valid sweep settings show an error');
  const t0 = Date.now();
  let points = await runSweepAndWait(page);
  t.diagnostic(`sweep took ${Date.now() - t0} ms`);
  const total = await attr(page, 'sweep-progress', 'data-total');
  assert.equal(await attr(page, 'sweep-progress', 'data-done'), total, 'the progress bar does not end at 100 %');

  // x = layer, at the strongest coefficient (4) by default: 2 sets × 4 layers.
  assert.equal(await attr(page, 'sweep-chart', 'data-points'), '8', 'sweep-chart data-points is not 2 sets × 4 layers');
  assert.equal(points.length, 8);
  assert.deepEqual([...new Set(points.map((p) => p.set))], ['related', 'unrelated']);
  assert.deepEqual([...new Set(points.map((p) => p.layer))].sort(), [0, 1, 2, 3]);
  assert.ok(points.every((p) => p.coeff === 4 && Number.isFinite(p.value) && p.value > 0), `bad points: ${JSON.stringify(points)}`);
  assert.ok(points.some((p) => p.value !== 1), 'coefficient 4 changed no perplexity at all');

  // At coefficient 0 every ratio is exactly 1.
  await setValue(page, 'sweep-pick', '0');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="sweep-point"]')].every((e) => e.getAttribute('data-coeff') === '0'));
  points = await readSweepPoints(page);
  assert.equal(points.length, 8);
  assert.deepEqual(points.map((p) => p.raw), Array(8).fill('1'), `ratios at coefficient 0: ${JSON.stringify(points)}`);

  // x = coefficient, at one layer: 2 sets × 2 coefficients, the ones at 0 exactly 1.
  await setValue(page, 'sweep-x', 'coeff');
  await page.waitForFunction(() => document.querySelector('[data-testid="sweep-chart"]')?.getAttribute('data-points') === '4');
  points = await readSweepPoints(page);
  assert.deepEqual(points.filter((p) => p.coeff === 0).map((p) => p.raw), ['1', '1']);
  // KL instead: exactly 0 at coefficient 0, positive at 4.
  await setValue(page, 'sweep-metric', 'kl');
  await page.waitForFunction(() => /KL/.test(document.querySelector('[data-testid="sweep-chart"]')?.textContent || ''));
  points = await readSweepPoints(page);
  assert.deepEqual(points.filter((p) => p.coeff === 0).map((p) => p.raw), ['0', '0'], `KL at coefficient 0: ${JSON.stringify(points)}`);
  assert.ok(points.filter((p) => p.coeff === 4).every((p) => p.value > 0), `KL at coefficient 4: ${JSON.stringify(points)}`);
  await setValue(page, 'sweep-metric', 'ppl_ratio');
  await setValue(page, 'sweep-x', 'layer');
  await setValue(page, 'sweep-pick', '4');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="sweep-point"]')].every((e) => e.getAttribute('data-coeff') === '4'));

  // Hovering a point shows its values.
  await tid(page, 'sweep-chart').first().scrollIntoViewIfNeeded();
  const pt = tid(page, 'sweep-point').nth(5);
  const want = await pt.evaluate((e) => ({ set: e.getAttribute('data-set'), layer: e.getAttribute('data-layer'), value: Number(e.getAttribute('data-value')) }));
  await pt.hover();
  const tip = tid(page, 'sweep-tooltip').first();
  await tip.waitFor({ state: 'visible', timeout: 5_000 }).catch(() => { throw new Error('hovering a sweep-point shows no sweep-tooltip'); });
  const tipText = await tip.textContent();
  t.diagnostic(`tooltip: ${tipText}`);
  assert.ok(tipText.includes(want.set) && tipText.includes(`layer ${want.layer}`), `tooltip ${JSON.stringify(tipText)} does not name ${JSON.stringify(want)}`);
  const shown = Number(/perplexity ratio ([\d.]+)/.exec(tipText)?.[1]);
  assert.ok(Math.abs(shown - want.value) <= 5e-4 * want.value, `tooltip ratio ${shown} is not the point's ${want.value}`);
  // The chart with the tooltip as a student sees it (already in view: no scroll moves the
  // mouse off the point), then the whole panel.
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const chartShot = path.join(OUT_DIR, '22-sweep-chart.png');
  await tid(page, 'sweep-chart').first().screenshot({ path: chartShot });
  t.diagnostic(`screenshot: ${chartShot}`);
  await page.mouse.move(0, 0);
  const panelShot = path.join(OUT_DIR, '22-sweep-panel.png');
  await tid(page, 'sweep-panel').first().screenshot({ path: panelShot });
  t.diagnostic(`screenshot: ${panelShot}`);

  // CSV: the header of tiller_core::sweep::to_csv and a row per (set, layer, coefficient).
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 10_000 }), click(page, 'sweep-csv')]);
  const csv = fs.readFileSync(await download.path(), 'utf8');
  t.diagnostic(`CSV ${download.suggestedFilename()}:\n${csv.split('\n').slice(0, 4).join('\n')}`);
  assert.match(download.suggestedFilename(), /\.csv$/);
  // The multiplier is named so, and `coefficients` says what each term was given at it.
  const rows = parseCsv(csv);
  assert.equal(rows[0].join(','), 'set,layer,multiplier,coefficients,ppl_ratio,kl,loss_steered,loss_unsteered,tokens,texts', `CSV header: ${rows[0]}`);
  assert.equal(rows.length - 1, 2 * 4 * 2, 'CSV rows are not 2 sets × 4 layers × 2 coefficients');
  const zero = rows.slice(1).filter((c) => c[2] === '0');
  assert.equal(zero.length, 8);
  assert.ok(zero.every((c) => c[3] === '+0 "Love"; +0 "Hate"' && c[4] === '1.000000' && c[5] === '0.000000'), `CSV rows at multiplier 0: ${JSON.stringify(zero)}`);
  const other = rows.slice(1).find((c) => c[2] !== '0');
  const k = Number(other[2]);
  assert.equal(other[3], `${k * 5 >= 0 ? '+' : ''}${k * 5} "Love"; ${-k * 5 >= 0 ? '+' : ''}${-k * 5} "Hate"`, `CSV coefficients at multiplier ${k}`);
});

e2e('22b-sweep-bad-input-and-stop', async (t) => {
  // Bad settings get a sentence each and keep what was typed; Stop ends a long sweep early.
  await ensureModel(page);
  await setRecipe(page, RECIPE);
  await setSweep(page, { sets: SWEEP_SETS, from: 0, to: 3, coeffs: '0, 4' });
  const cases = [
    [{ coeffs: '0, 2, x' }, /`x`.*not a number/, () => getValue(page, 'sweep-coeffs'), '0, 2, x'],
    [{ to: 7 }, /layer 7 is out of range.*0\.\.3/, () => getValue(page, 'sweep-layer-to'), '7'],
    [{ sets: [{ name: 'related', texts: [] }] }, /`related` has no texts/, () => getValue(page, 'sweep-set-name'), 'related'],
  ];
  for (const [settings, re, read, kept] of cases) {
    await setSweep(page, settings);
    let errs = [];
    for (let i = 0; i < 20 && !errs.some((e) => re.test(e)); i++) { await page.waitForTimeout(100); errs = await sweepErrors(page); }
    t.diagnostic(`${JSON.stringify(settings)} → ${JSON.stringify(errs)}`);
    assert.ok(errs.some((e) => re.test(e)), `no sweep-error matching ${re} for ${JSON.stringify(settings)} (got ${JSON.stringify(errs)})`);
    assert.equal(await read(), kept, 'the panel did not keep what was typed');
    // Run sweep refuses: no sweep starts.
    const before = await attr(page, 'sweep-progress', 'data-total').catch(() => null);
    await click(page, 'sweep-run');
    await page.waitForTimeout(500);
    assert.notEqual(await attr(page, 'sweep-progress', 'data-state').catch(() => null), 'running', 'a sweep started with bad settings');
    assert.equal(await attr(page, 'sweep-progress', 'data-total').catch(() => null), before);
    await setSweep(page, { sets: SWEEP_SETS, from: 0, to: 3, coeffs: '0, 4' });
  }
  assert.deepEqual(await sweepErrors(page), []);

  // A long sweep (many coefficients), stopped after its first steps.
  await setSweep(page, { coeffs: Array.from({ length: 24 }, (_, i) => i / 2).join(',') });
  await click(page, 'sweep-run');
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="sweep-progress"]')?.getAttribute('data-done')) >= 1, null, { timeout: 60_000 });
  await click(page, 'sweep-stop');
  await waitForState(page, 'sweep-progress', 'done', 60_000, { failOn: ['error'] });
  const done = Number(await attr(page, 'sweep-progress', 'data-done'));
  const total = Number(await attr(page, 'sweep-progress', 'data-total'));
  const body = await tid(page, 'sweep-panel').first().innerText();
  t.diagnostic(`stopped at step ${done} of ${total}`);
  assert.ok(done < total, `the sweep ran to its end (${done} of ${total}) despite Stop`);
  assert.match(body, /stopped/i, 'the panel does not say the sweep was stopped');
  // The engine is free again: a generation run works.
  await setRecipe(page, { maxTokens: 3, n: 1 });
  await runAndWait(page, 1);
  await setRecipe(page, RECIPE);
});

e2e('22c-sweep-share-link', async (t, ctx) => {
  // The sweep settings travel in the share link and come back in a fresh browser.
  await ensureModel(page);
  await setRecipe(page, RECIPE);
  const mine = {
    sets: [{ name: 'weddings', texts: ['A wedding in June.', 'The bride smiled.'] }, { name: 'other', texts: ['Rain fell on the roof.'] }],
    from: 1, to: 3, coeffs: '0,3', x: 'coeff', metric: 'kl',
  };
  await setSweep(page, mine);
  assert.deepEqual(await sweepErrors(page), []);
  const want = await readSweep(page);
  let link = '';
  for (let i = 0; i < 50 && !link.includes('#'); i++) { link = await readShareLink(page); await page.waitForTimeout(100); }
  t.diagnostic(`share link (${link.length} chars): ${link}`);
  const u = new URL(link, servers.site.url);
  const s = await newSession();
  const { p, probs } = await openPage(s, u.hash);
  ctx.shot = p;
  await expectPresent(p, 'sweep-panel', 30_000);
  assert.equal(await tid(p, 'sweep-panel').first().evaluate((d) => d.open), true, 'a link with sweep settings does not unfold the sweep panel');
  const restored = await readSweep(p);
  t.diagnostic(`restored: ${JSON.stringify(restored)}`);
  assert.deepEqual(restored, want, 'the link did not restore the sweep settings');
  // Load (after the confirmation) and sweep with the restored settings: 2 sets × 2 coefficients at one layer.
  await tid(p, 'confirm-download').first().click();
  await waitForState(p, 'model-status', 'ready', LOAD_TIMEOUT, { failOn: ['error'] });
  const points = await runSweepAndWait(p);
  assert.equal(points.length, 4, `points: ${JSON.stringify(points)}`);
  assert.deepEqual(points.filter((q) => q.coeff === 0).map((q) => q.raw), ['0', '0'], 'KL at coefficient 0 is not exactly 0');
  assert.deepEqual(probs.pageErrors, [], `uncaught errors: ${probs.pageErrors.join('\n')}`);
});
