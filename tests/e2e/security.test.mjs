// The page's security (issue 17, item 8): its Content-Security-Policy is in force (an inline
// script put into the page does not run and is reported as a violation; a whole load and run
// of a model raises none), and user text never reaches the DOM as markup: a share link whose
// prompt, steering texts and system message are HTML and script payloads restores them as
// text, runs, and opens no dialog, adds no element and logs no error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { tid, readRecipe, pickHubRepo, loadModel, waitForState, setRecipe, readCompletions, screenshot } from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';
import { REPOS } from './lib/env.mjs';

const shared = sharedSession();
const decode = (frag) => JSON.parse(zlib.inflateRawSync(Buffer.from(frag.replace(/^#?v1\./, ''), 'base64url')).toString('utf8'));
const encode = (state) => `v1.${zlib.deflateRawSync(Buffer.from(JSON.stringify(state))).toString('base64url')}`;

/** Records CSP violations from the page's first script on. */
async function watchCsp(p) {
  await p.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective}: ${e.blockedURI || e.sample || ''}`));
  });
}

test('the Content-Security-Policy is in force: no inline script runs, and a load and a run raise no violation', { timeout: 300_000 }, async (t) => {
  const { p, probs } = await shared.openPage('', { beforeGoto: watchCsp });
  try {
    const csp = await p.evaluate(() => document.querySelector('meta[http-equiv="Content-Security-Policy"]')?.content || '');
    const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([k, ...v]) => [k, v]));
    t.diagnostic(`policy: ${csp}`);
    assert.deepEqual(directives['script-src'], ["'self'", "'wasm-unsafe-eval'"], 'scripts only from the page, WebAssembly allowed, no inline or eval');
    assert.deepEqual(directives['object-src'], ["'none'"], 'no plugins');
    assert.deepEqual(directives['base-uri'], ["'none'"]);
    assert.deepEqual(directives['form-action'], ["'none'"]);
    assert.ok(!/unsafe-eval'|unsafe-inline/.test((directives['script-src'] || []).join(' ').replace("'wasm-unsafe-eval'", '')), csp);

    // The page works under it: a model loads and runs.
    await pickHubRepo(p, REPOS.tiny);
    await loadModel(p, { timeout: 180_000 });
    await setRecipe(p, { prompt: 'I hate you because', terms: [{ text: 'Love', layer: 1, coeff: 4 }], n: 1, maxTokens: 4, seed: 1 });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 180_000, { failOn: ['error'] });
    assert.deepEqual(await p.evaluate(() => window.__csp), [], 'loading and running raised CSP violations');

    // An inline script and an inline event handler put into the page do not run.
    const ran = await p.evaluate(async () => {
      window.__ran = [];
      const s = document.createElement('script');
      s.textContent = 'window.__ran.push("inline script")';
      document.body.append(s);
      const img = document.createElement('img');
      img.setAttribute('onerror', 'window.__ran.push("inline handler")');
      img.src = 'data:,not-an-image';
      document.body.append(img);
      await new Promise((r) => setTimeout(r, 500));
      img.remove();
      s.remove();
      return window.__ran;
    });
    assert.deepEqual(ran, [], 'an inline script or handler ran');
    const seen = await p.evaluate(() => window.__csp);
    assert.ok(seen.some((v) => v.startsWith('script-src')), `the blocked script was reported as a violation: ${JSON.stringify(seen)}`);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});

const PAYLOADS = [
  '<img src=x onerror="window.__pwned=1;alert(1)">',
  '<script>window.__pwned=2;alert(2)</script>',
  '"><svg onload=alert(3)><b>bold</b>',
  "javascript:alert(4)//&lt;&amp;",
];

test('markup and script in a share link stay text: restored, run and rendered without a dialog or an element', { timeout: 300_000 }, async (t) => {
  // A link made on the tiny model, its prompt and steering texts replaced by payloads, opened
  // in a new tab as a user would.
  const { p: maker } = await shared.openPage();
  await pickHubRepo(maker, REPOS.tiny);
  await tid(maker, 'share-link').first().waitFor({ timeout: 30_000 });
  await maker.waitForFunction(() => /#v1\./.test(document.querySelector('[data-testid="share-link"]')?.value || ''), null, { timeout: 20_000 });
  const state = decode((await tid(maker, 'share-link').first().inputValue()).split('#')[1]);
  await maker.close();
  const prompt = `${PAYLOADS[0]} then ${PAYLOADS[1]}`;
  const evil = { ...state, recipe: { ...state.recipe, prompt, terms: PAYLOADS.map((text, i) => ({ layer: 1, coeff: i % 2 ? -2 : 2, text })) } };

  const dialogs = [];
  const { p, probs } = await shared.openPage(encode(evil), {
    beforeGoto: async (page) => {
      page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    },
  });
  try {
    await p.waitForFunction((want) => document.querySelector('[data-testid="prompt"]')?.value === want, prompt, { timeout: 30_000 });
    const r = await readRecipe(p);
    assert.equal(r.prompt, prompt, 'the prompt came back exactly, as text');
    assert.deepEqual(r.terms.map((x) => x.text), PAYLOADS, 'the steering texts came back exactly, as text');
    const before = await p.evaluate(() => document.querySelectorAll('img, script, svg b, iframe').length);
    await tid(p, 'confirm-download').first().click({ timeout: 30_000 });
    await waitForState(p, 'model-status', 'ready', 180_000, { failOn: ['error'] });
    await tid(p, 'run').first().click();
    await waitForState(p, 'run-status', 'done', 180_000, { failOn: ['error'] });
    const { unsteered, steered } = await readCompletions(p, 1);
    assert.ok(unsteered[0] && steered[0], 'a run with the payloads completes');
    const after = await p.evaluate(() => document.querySelectorAll('img, script, svg b, iframe').length);
    assert.equal(after, before, 'a payload became an element');
    assert.equal(await p.evaluate(() => window.__pwned), undefined, 'a payload ran');
    assert.deepEqual(dialogs, [], `dialogs opened: ${dialogs.join(', ')}`);
    const text = await p.evaluate(() => document.body.innerText);
    assert.ok(text.includes('<img src=x onerror='), 'the payload shows as the text it is');
    await screenshot(p, 'security-markup-as-text', t);
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
