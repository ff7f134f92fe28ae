// The page's DOM contract (issue 5): every element the tests touch is found by its
// data-testid, and only through the helpers here, so the contract lives in one place.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const OUT_DIR = path.join(E2E_DIR, 'out');

/** Every data-testid of the contract. `unsteered-<i>` / `steered-<i>` are built by helpers. */
export const TESTIDS = [
  'model-select', 'engine-select', 'model-repo', 'model-url', 'model-files', 'model-load', 'model-cancel',
  'model-size', 'progress', 'model-status', 'cache-size', 'cache-clear', 'error',
  'prompt', 'term-row', 'term-text', 'term-layer', 'term-coeff', 'term-remove', 'term-add',
  'pair-a', 'pair-b', 'pair-layer', 'pair-coeff', 'pair-add',
  'bos', 'positions', 'site', 'temperature', 'top-p', 'top-k', 'freq-penalty', 'rep-penalty',
  'greedy', 'n', 'max-tokens', 'seed', 'run', 'stop', 'run-status', 'run-timing',
  'warning', 'vocab-panel', 'vocab-ln-f', 'vocab-entry', 'preset-select',
  'share-copy', 'share-link', 'confirm-download', 'confirm-cancel',
  // The sweep panel (issue 6).
  'sweep-panel', 'sweep-set', 'sweep-set-name', 'sweep-set-texts', 'sweep-set-remove', 'sweep-set-add',
  'sweep-layer-from', 'sweep-layer-to', 'sweep-coeffs', 'sweep-x', 'sweep-pick', 'sweep-metric',
  'sweep-run', 'sweep-stop', 'sweep-progress', 'sweep-chart', 'sweep-point', 'sweep-tooltip',
  'sweep-csv', 'sweep-error',
  // Models with a chat template (issue 11).
  'chat', 'system', 'chat-rendered', 'chat-terms',
  // Number fields (issue 18): `<id>-error` beside any number field, the coefficient's sign flip.
  'term-coeff-flip', 'pair-coeff-flip',
  // Gated repos (issue 11): the Hugging Face token and whether local storage keeps it.
  'hf-token', 'hf-token-remember',
  // Saved-vector terms of a recipe (issue 12).
  'vector-term-row', 'vector-term-remove', 'vector-term-coeff', 'vector-import', 'vector-import-note',
  // The Vectors area (issue 12): pairs, build, library, combination, cosine matrix.
  'vectors-panel', 'vec-preset', 'vec-lists', 'vec-pairs', 'vec-positive', 'vec-negative', 'vec-pairs-file',
  'vec-pairs-summary', 'vec-layer', 'vec-layer-to', 'vec-site', 'vec-method', 'vec-token', 'vec-held-out', 'vec-name',
  'vec-build', 'vec-stop', 'vec-status', 'vec-progress', 'vec-error',
  'vec-library-count', 'vec-entry', 'vec-entry-name', 'vec-entry-what', 'vec-entry-norms',
  'vec-use', 'vec-download', 'vec-download-gguf', 'vec-delete', 'vec-library-import', 'vec-library-note',
  'vec-formula', 'vec-combine-name', 'vec-combine', 'vec-cos-layer', 'vec-cosine', 'vec-cosine-cell',
  // The A/B evaluation (issue 12): vectors ticked, coefficients, run, chart, CSV.
  'vec-eval-items', 'vec-eval-pick', 'vec-eval-coeffs', 'vec-eval-run', 'vec-eval-stop', 'vec-eval-status',
  'vec-eval-progress', 'vec-eval-error', 'vec-eval-chart', 'vec-eval-point', 'vec-eval-tooltip', 'vec-eval-csv',
  // Reading a library vector (issue 12): vocabulary and norm against the prompt's residual stream.
  'vec-read', 'vec-reading', 'vec-reading-layer', 'vec-read-top', 'vec-read-bottom', 'vec-read-lnf',
  // The first-visit tour (issue 18).
  'tour', 'tour-text', 'tour-back', 'tour-next', 'tour-close', 'tour-open',
  // The Inspect area (issue 15): a vector over texts, the prompt layer by layer, what changed.
  'inspect-panel', 'inspect-empty', 'inspect-target', 'inspect-layer', 'inspect-corpus', 'inspect-own', 'inspect-texts',
  'inspect-file', 'inspect-by', 'inspect-run', 'inspect-stop', 'inspect-status', 'inspect-note', 'inspect-progress',
  'inspect-results', 'inspect-summary', 'inspect-csv', 'inspect-json', 'inspect-compare', 'inspect-vocab-top',
  'inspect-vocab-bottom', 'inspect-max-tokens', 'inspect-histogram', 'inspect-hover', 'inspect-top', 'inspect-passage',
  'inspect-token', 'inspect-whole', 'inspect-run-steering', 'vec-inspect', 'vocab-inspect',
  'lens', 'lens-run', 'lens-error', 'lens-prompt', 'lens-chart', 'lens-table', 'lens-row', 'lens-steering-dot', 'lens-library-dot',
  'changes-open', 'changes-strip', 'change-token', 'change-detail', 'change-rose', 'change-fell',
  'heads-panel', 'fv-task', 'fv-own', 'fv-pairs-summary', 'fv-both', 'fv-shots', 'fv-prompts', 'fv-seed', 'fv-top',
  'fv-eval', 'fv-cost', 'fv-error', 'fv-run', 'fv-stop', 'fv-status', 'fv-progress', 'fv-results', 'fv-probs',
  'fv-example-clean', 'fv-example-corrupted', 'fv-heatmap', 'fv-cell', 'fv-hover', 'fv-top-heads', 'fv-acc-chart',
  'fv-acc-zero', 'fv-acc-none', 'fv-vocab', 'fv-vocab-top', 'fv-vocab-bottom', 'fv-layer', 'fv-save', 'fv-use', 'fv-note',
  'iti-own', 'iti-texts', 'iti-summary', 'iti-val', 'iti-seed', 'iti-top', 'iti-direction', 'iti-error', 'iti-run', 'iti-stop',
  'iti-status', 'iti-progress', 'iti-results', 'iti-heatmap', 'iti-cell', 'iti-hover', 'iti-top-heads', 'iti-top-head',
  'iti-alpha', 'iti-use', 'iti-note', 'fv-file', 'iti-file', 'confirm-hub', 'fv-completions', 'fv-completion',
  // The banner's actions, the engine's note and the history (issue 17's recovery tests).
  'error-retry', 'error-load-anyway', 'error-use-cpu', 'engine-note', 'history-entry',
  // The Discover area (issue 14): MELBO.
  'discover-panel', 'melbo-prompts', 'melbo-prompts-error', 'melbo-source', 'melbo-target', 'melbo-radius', 'melbo-vectors',
  'melbo-steps', 'melbo-p', 'melbo-q', 'melbo-seed', 'melbo-new-tokens', 'melbo-target-tokens', 'melbo-orthogonal',
  'melbo-defaults', 'melbo-error', 'melbo-run', 'melbo-stop', 'melbo-status', 'melbo-training', 'melbo-progress',
  'melbo-chart', 'melbo-curve', 'melbo-vectors', 'melbo-cos', 'melbo-coeff', 'melbo-vector', 'melbo-unsteered',
  'melbo-plus', 'melbo-minus', 'melbo-vocab', 'melbo-resteer', 'melbo-sampled', 'melbo-decoding', 'melbo-use', 'melbo-note', 'melbo-radii', 'melbo-radii-error', 'melbo-sweep-run', 'melbo-sweep', 'melbo-sweep-chart',
  'melbo-sweep-row', 'melbo-sweep-div', 'melbo-sweep-ppl', 'melbo-sweep-csv', 'melbo-cos-matrix', 'melbo-cos-cell',
];

export const MODEL_SELECT_VALUES = ['gpt2', 'distilgpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', 'hub', 'url', 'local'];

const sel = (id) => `[data-testid="${id}"]`;

/** Locator of a contract element (within `scope`, a page or a locator). */
export function tid(scope, id) {
  const errorOf = id.endsWith('-error') && TESTIDS.includes(id.slice(0, -'-error'.length));
  if (!TESTIDS.includes(id) && !errorOf && !/^(un)?steered-\d+$/.test(id)) {
    throw new Error(`tid(): '${id}' is not in the page's DOM contract`);
  }
  return scope.locator(sel(id));
}

export const unsteered = (page, i) => tid(page, `unsteered-${i}`);
export const steered = (page, i) => tid(page, `steered-${i}`);

/**
 * Splits a CSV text into rows of fields (RFC 4180: fields in double quotes may hold commas,
 * quotes doubled and line breaks).
 */
export function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n') { row.push(field); rows.push(row); row = []; field = ''; } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

/** Page URL with the Hub endpoint replaced by the local Hub-like server. */
export function pageUrl(staticUrl, hubUrl, fragment = '') {
  const frag = fragment ? (fragment.startsWith('#') ? fragment : `#${fragment}`) : '';
  return `${staticUrl}/?hub=${hubUrl}${frag}`;
}

/** Fails with `message` unless the contract element exists (attached) within `timeout`. */
export async function expectPresent(page, id, timeout = 15_000, message = '') {
  try {
    await tid(page, id).first().waitFor({ state: 'attached', timeout });
  } catch {
    throw new Error(`page deviates from the DOM contract: no element [data-testid="${id}"] within ${timeout} ms${message ? ` (${message})` : ''}`);
  }
}

/**
 * Sets an <input>/<textarea>/<select>/checkbox contract element, firing `input` and `change`
 * (Leptos handlers may listen to either).
 */
export async function setValue(scopeOrPage, id, value) {
  const loc = typeof id === 'string' ? tid(scopeOrPage, id).first() : id;
  await reveal(loc);
  const info = await loc.evaluate((el) => ({ tag: el.tagName.toLowerCase(), type: (el.getAttribute('type') || '').toLowerCase() }));
  if (info.tag === 'select') {
    await loc.selectOption(String(value));
  } else if (info.type === 'checkbox' || info.type === 'radio') {
    await loc.setChecked(Boolean(value));
  } else {
    await loc.fill(String(value));
    await loc.dispatchEvent('change');
  }
}

/** Opens the collapsed <details> around an element, as a user would to reach it. */
export async function reveal(loc) {
  await loc.evaluate((el) => {
    const closed = [];
    for (let d = el.closest('details'); d; d = d.parentElement && d.parentElement.closest('details')) {
      if (!d.open) closed.unshift(d);
    }
    for (const d of closed) {
      const summary = d.querySelector(':scope > summary');
      if (summary) summary.click(); else d.open = true;
    }
  });
}

/** Clicks a contract element (opening a collapsed <details> around it first). */
export async function click(scope, id) {
  const loc = tid(scope, id).first();
  await reveal(loc);
  await loc.click();
}

export async function getValue(page, id) {
  const loc = typeof id === 'string' ? tid(page, id).first() : id;
  return loc.evaluate((el) => ('value' in el && el.tagName !== 'BUTTON' ? el.value : el.textContent));
}

export async function text(loc) {
  return ((await loc.first().textContent()) || '').trim();
}

export async function attr(page, id, name) {
  return tid(page, id).first().getAttribute(name);
}

/** Waits until the data-state of a contract element is one of `states`; returns it. */
export async function waitForState(page, id, states, timeout, { failOn = [] } = {}) {
  const want = Array.isArray(states) ? states : [states];
  const t0 = Date.now();
  let last = null;
  while (Date.now() - t0 < timeout) {
    last = await tid(page, id).first().getAttribute('data-state').catch(() => null);
    if (want.includes(last)) return last;
    if (failOn.includes(last)) {
      const err = await errorText(page);
      throw new Error(`[data-testid="${id}"] went to data-state="${last}" while waiting for ${want.join('|')}; error element: ${JSON.stringify(err)}`);
    }
    await page.waitForTimeout(100);
  }
  const err = await errorText(page);
  const shown = ((await tid(page, id).first().textContent().catch(() => '')) || '').trim().slice(0, 300);
  throw new Error(`[data-testid="${id}"] did not reach data-state ${want.join('|')} within ${timeout} ms (last: ${JSON.stringify(last)}, showing ${JSON.stringify(shown)}); error element: ${JSON.stringify(err)}`);
}

/** Text of the visible error element(s), '' if none. */
export async function errorText(page) {
  const els = tid(page, 'error');
  const n = await els.count().catch(() => 0);
  const parts = [];
  for (let i = 0; i < n; i++) {
    const t = ((await els.nth(i).textContent().catch(() => '')) || '').trim();
    if (t) parts.push(t);
  }
  return parts.join(' | ');
}

/** Clicks confirm-download if it shows up within `timeout`; returns whether it did. */
export async function confirmDownloadIfAsked(page, timeout = 3_000) {
  const c = tid(page, 'confirm-download').first();
  try {
    await c.waitFor({ state: 'visible', timeout });
  } catch {
    return false;
  }
  await c.click();
  return true;
}

/** Chooses a Hub repo in the model picker (model-select=hub, model-repo=repo). */
export async function pickHubRepo(page, repo) {
  await expectPresent(page, 'model-select');
  const values = await tid(page, 'model-select').first().evaluate((s) => [...s.options].map((o) => o.value));
  if (!values.includes('hub')) {
    throw new Error(`model-select has no 'hub' option (options: ${values.join(', ')})`);
  }
  await setValue(page, 'model-select', 'hub');
  await expectPresent(page, 'model-repo', 10_000, "after choosing model-select='hub'");
  await setValue(page, 'model-repo', repo);
  await tid(page, 'model-repo').first().press('Tab').catch(() => {});
}

/**
 * Clicks model-load (confirming the download if asked) and waits for model-status to be
 * `ready` (or throws with the error element's text on `error`).
 */
export async function loadModel(page, { timeout = 120_000 } = {}) {
  await tid(page, 'model-load').first().click();
  await confirmDownloadIfAsked(page, 2_000);
  await waitForState(page, 'model-status', 'ready', timeout, { failOn: ['error'] });
}

/** Removes every term row, then adds `terms` = [{text, layer, coeff}] through term-add. */
export async function setTerms(page, terms) {
  for (let guard = 0; guard < 50; guard++) {
    const rows = tid(page, 'term-row');
    const n = await rows.count();
    if (n === 0) break;
    await tid(rows.first(), 'term-remove').first().click();
    await page.waitForFunction(
      ([s, k]) => document.querySelectorAll(s).length < k,
      [sel('term-row'), n], { timeout: 5_000 },
    ).catch(() => { throw new Error(`term-remove did not remove a term-row (still ${n})`); });
  }
  for (const [i, t] of terms.entries()) {
    await tid(page, 'term-add').first().click();
    await page.waitForFunction(
      ([s, k]) => document.querySelectorAll(s).length > k,
      [sel('term-row'), i], { timeout: 5_000 },
    ).catch(() => { throw new Error(`term-add did not add a term-row (have ${i})`); });
    const row = tid(page, 'term-row').nth(i);
    await setValue(row, 'term-text', t.text);
    await setValue(row, 'term-layer', t.layer);
    await setValue(row, 'term-coeff', t.coeff);
  }
}

/** Reads the term rows back: [{text, layer, coeff}] (layer and coeff as numbers). */
export async function readTerms(page) {
  const rows = tid(page, 'term-row');
  const n = await rows.count();
  const out = [];
  for (let i = 0; i < n; i++) {
    const row = rows.nth(i);
    out.push({
      text: await getValue(row, tid(row, 'term-text').first()),
      layer: Number(await getValue(row, tid(row, 'term-layer').first())),
      coeff: Number(await getValue(row, tid(row, 'term-coeff').first())),
    });
  }
  return out;
}

/**
 * Fills the editor with a recipe: { prompt, terms, n, maxTokens, seed, ...sampling }.
 * Only the fields present are set.
 */
export async function setRecipe(page, r) {
  if (r.prompt !== undefined) await setValue(page, 'prompt', r.prompt);
  if (r.terms) await setTerms(page, r.terms);
  const fields = {
    bos: 'bos', positions: 'positions', site: 'site', temperature: 'temperature', topP: 'top-p',
    topK: 'top-k', freqPenalty: 'freq-penalty', repPenalty: 'rep-penalty', greedy: 'greedy',
    n: 'n', maxTokens: 'max-tokens', seed: 'seed',
  };
  for (const [k, id] of Object.entries(fields)) {
    if (r[k] !== undefined) await setValue(page, id, r[k]);
  }
}

/** Reads the editor state the share link must restore. */
export async function readRecipe(page) {
  const v = async (id) => {
    const loc = tid(page, id).first();
    if ((await loc.count()) === 0) return undefined;
    const type = await loc.getAttribute('type');
    if (type === 'checkbox') return loc.isChecked();
    return getValue(page, id);
  };
  return {
    prompt: await v('prompt'),
    terms: await readTerms(page),
    bos: await v('bos'),
    positions: await v('positions'),
    site: await v('site'),
    temperature: await v('temperature'),
    topP: await v('top-p'),
    topK: await v('top-k'),
    freqPenalty: await v('freq-penalty'),
    repPenalty: await v('rep-penalty'),
    greedy: await v('greedy'),
    n: await v('n'),
    maxTokens: await v('max-tokens'),
    seed: await v('seed'),
  };
}

/** The completions now shown: { unsteered: [..], steered: [..] } for i = 0..n-1. */
export async function readCompletions(page, n) {
  const u = [];
  const s = [];
  for (let i = 0; i < n; i++) {
    u.push(await text(unsteered(page, i)).catch(() => null));
    s.push(await text(steered(page, i)).catch(() => null));
  }
  return { unsteered: u, steered: s };
}

/** Clears a field and types `text` key by key, as a person would (never `fill()`). */
export async function typeInto(page, loc, text) {
  await reveal(loc);
  await loc.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text, { delay: 15 });
}

/** The share link: href of an <a>, value of an <input>/<textarea>, or the element's text. */
export async function readShareLink(page) {
  const loc = tid(page, 'share-link').first();
  return (await loc.evaluate((el) => el.getAttribute('href') || ('value' in el ? el.value : '') || el.textContent || '')).trim();
}

/** Screenshot to out/<name>.png; prints and returns the path. */
export async function screenshot(page, name, t) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${name}.png`);
  try {
    await page.screenshot({ path: file, fullPage: true, timeout: 20_000 });
  } catch (e) {
    const msg = `screenshot ${file} failed: ${e.message}`;
    if (t) t.diagnostic(msg); else console.log(msg);
    return null;
  }
  const msg = `screenshot: ${file}`;
  if (t) t.diagnostic(msg); else console.log(msg);
  return file;
}

/**
 * Records, from inside the page, every change of the result columns and of run-status
 * (MutationObserver: no poll can miss a token). Call before clicking Run; read with
 * `takeRecording(page)`.
 */
export async function startRecording(page, n) {
  await page.evaluate((n) => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const snap = () => {
      const st = q('run-status');
      const row = { t: Math.round(performance.now()), state: st ? st.getAttribute('data-state') : null };
      for (let i = 0; i < n; i++) {
        const u = q(`unsteered-${i}`);
        const s = q(`steered-${i}`);
        row[`u${i}`] = u ? u.textContent.trim() : null;
        row[`s${i}`] = s ? s.textContent.trim() : null;
      }
      return row;
    };
    window.__tillerRec = [snap()];
    const obs = new MutationObserver(() => {
      const r = snap();
      const last = window.__tillerRec[window.__tillerRec.length - 1];
      const same = Object.keys(r).every((k) => k === 't' || r[k] === last[k]);
      if (!same) window.__tillerRec.push(r);
    });
    obs.observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-state'],
    });
    window.__tillerRecStop = () => obs.disconnect();
  }, n);
}

export async function takeRecording(page) {
  return page.evaluate(() => {
    if (window.__tillerRecStop) window.__tillerRecStop();
    return window.__tillerRec || [];
  });
}

/** Parses a human size ("6.99 MB", "6.7 MiB", "6985424 bytes") into bytes; null if none. */
export function parseSize(s) {
  const m = /([\d][\d,]*(?:\.\d+)?)\s*(bytes|byte|B|kB|KB|KiB|MB|MiB|GB|GiB)\b/.exec(s || '');
  if (!m) return null;
  const n = Number(m[1].replace(/,/g, ''));
  const unit = {
    bytes: 1, byte: 1, B: 1, kB: 1e3, KB: 1e3, KiB: 1024, MB: 1e6, MiB: 1024 ** 2, GB: 1e9, GiB: 1024 ** 3,
  }[m[2]];
  return n * unit;
}

/** Waits until model-size shows a parseable size; returns its text, or '' after `timeout`. */
export async function waitForSizeText(page, timeout) {
  const t0 = Date.now();
  do {
    const loc = tid(page, 'model-size').first();
    if ((await loc.count()) > 0) {
      const t = ((await loc.textContent().catch(() => '')) || '').trim();
      if (parseSize(t) !== null) return t;
    }
    await page.waitForTimeout(150);
  } while (Date.now() - t0 < timeout);
  return '';
}

/**
 * Records, from inside the page, every value of the progress element's data-loaded /
 * data-total and of model-status (MutationObserver). Read with `takeProgress(page)`.
 */
export async function startProgressRecording(page) {
  await page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const snap = () => {
      const p = q('progress');
      const s = q('model-status');
      return {
        t: Math.round(performance.now()),
        loaded: p ? p.getAttribute('data-loaded') : null,
        total: p ? p.getAttribute('data-total') : null,
        text: p ? p.textContent.trim().slice(0, 200) : null,
        state: s ? s.getAttribute('data-state') : null,
      };
    };
    window.__tillerProg = [snap()];
    const obs = new MutationObserver(() => {
      const r = snap();
      const l = window.__tillerProg[window.__tillerProg.length - 1];
      if (r.loaded !== l.loaded || r.total !== l.total || r.state !== l.state || r.text !== l.text) window.__tillerProg.push(r);
    });
    obs.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
    window.__tillerProgStop = () => obs.disconnect();
  });
}

export async function takeProgress(page) {
  return page.evaluate(() => {
    if (window.__tillerProgStop) window.__tillerProgStop();
    return window.__tillerProg || [];
  });
}

/** Values of every vocab-entry: [{id, score, text}]. */
export async function readVocab(page) {
  return tid(page, 'vocab-entry').evaluateAll((els) => els.map((e) => ({
    id: e.getAttribute('data-id'),
    score: e.getAttribute('data-score'),
    text: e.textContent.trim(),
  })));
}

/**
 * Replaces the sweep panel's evaluation sets with `sets` = [{name, texts: [..]}] through
 * sweep-set-remove / sweep-set-add (opening the panel first).
 */
export async function setSweepSets(page, sets) {
  await reveal(tid(page, 'sweep-panel').first());
  for (let guard = 0; guard < 20; guard++) {
    const n = await tid(page, 'sweep-set').count();
    if (n === 0) break;
    await tid(tid(page, 'sweep-set').first(), 'sweep-set-remove').first().click();
    await page.waitForFunction(
      ([s, k]) => document.querySelectorAll(s).length < k,
      [sel('sweep-set'), n], { timeout: 5_000 },
    ).catch(() => { throw new Error(`sweep-set-remove did not remove a sweep-set (still ${n})`); });
  }
  for (const [i, set] of sets.entries()) {
    await tid(page, 'sweep-set-add').first().click();
    await page.waitForFunction(
      ([s, k]) => document.querySelectorAll(s).length > k,
      [sel('sweep-set'), i], { timeout: 5_000 },
    ).catch(() => { throw new Error(`sweep-set-add did not add a sweep-set (have ${i})`); });
    const row = tid(page, 'sweep-set').nth(i);
    await setValue(row, 'sweep-set-name', set.name);
    await setValue(row, 'sweep-set-texts', set.texts.join('\n'));
  }
}

/** Fills the sweep panel: { sets, from, to, coeffs, x, metric }; only the fields present. */
export async function setSweep(page, w) {
  await reveal(tid(page, 'sweep-panel').first());
  if (w.sets) await setSweepSets(page, w.sets);
  const fields = { from: 'sweep-layer-from', to: 'sweep-layer-to', coeffs: 'sweep-coeffs', x: 'sweep-x', metric: 'sweep-metric' };
  for (const [k, id] of Object.entries(fields)) {
    if (w[k] !== undefined) await setValue(page, id, w[k]);
  }
}

/** Reads the sweep panel's settings back: { sets: [{name, texts}], from, to, coeffs, x, metric }. */
export async function readSweep(page) {
  const rows = tid(page, 'sweep-set');
  const sets = [];
  for (let i = 0; i < (await rows.count()); i++) {
    const row = rows.nth(i);
    const texts = await getValue(row, tid(row, 'sweep-set-texts').first());
    sets.push({
      name: await getValue(row, tid(row, 'sweep-set-name').first()),
      texts: texts.split('\n').map((x) => x.trim()).filter(Boolean),
    });
  }
  return {
    sets,
    from: await getValue(page, 'sweep-layer-from'),
    to: await getValue(page, 'sweep-layer-to'),
    coeffs: await getValue(page, 'sweep-coeffs'),
    x: await getValue(page, 'sweep-x'),
    metric: await getValue(page, 'sweep-metric'),
  };
}

/** The chart's points: [{set, layer, coeff, value}] (numbers parsed), in document order. */
export async function readSweepPoints(page) {
  return tid(page, 'sweep-point').evaluateAll((els) => els.map((e) => ({
    set: e.getAttribute('data-set'),
    layer: Number(e.getAttribute('data-layer')),
    coeff: Number(e.getAttribute('data-coeff')),
    value: Number(e.getAttribute('data-value')),
    raw: e.getAttribute('data-value'),
  })));
}

/** The page's engine worker (its only dedicated worker), once it has started. */
export async function engineWorker(page, timeout = 30_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeout) {
    const w = page.workers()[0];
    if (w) return w;
    await page.waitForTimeout(100);
  }
  throw new Error(`the page started no worker within ${timeout} ms`);
}
