// Share links that ask too much (issue 17): a link naming a built-in GPT-2 opened on a page whose
// address points `?hub=` elsewhere asks first and names that server (nothing is fetched before
// the user agrees), and a link past the caps (65 terms, a 16,385-character prompt) is refused
// with a banner that says what and the cap, the editor keeping what it had.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { tid, pageUrl, readRecipe } from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession();

const decode = (frag) => JSON.parse(zlib.inflateRawSync(Buffer.from(frag.replace(/^#?v1\./, ''), 'base64url')).toString('utf8'));
const encode = (state) => `v1.${zlib.deflateRawSync(Buffer.from(JSON.stringify(state))).toString('base64url')}`;

async function pageLink(p) {
  const link = await tid(p, 'share-link').first().inputValue();
  assert.match(link, /#v1\./, link);
  return link.split('#')[1];
}

test('a built-in model from another ?hub= asks first, naming the server; links past the caps are refused', { timeout: 300_000 }, async () => {
  const { p, probs } = await shared.openPage();
  try {
    await tid(p, 'share-link').first().waitFor({ timeout: 30_000 });
    const state = decode(await pageLink(p));
    assert.deepEqual(state.model, { default: 'gpt2' }, 'the page starts on the built-in gpt2');

    // 1. The built-in gpt2 through a ?hub= that is not huggingface.co: a dialog that names it.
    const other = await shared.session.context.newPage();
    const watch = [];
    other.on('request', (r) => watch.push(r.url()));
    await other.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url, encode(state)), { waitUntil: 'load' });
    await tid(other, 'confirm-download').first().waitFor({ timeout: 30_000 });
    const said = await tid(other, 'confirm-hub').first().textContent();
    assert.ok(said.includes(shared.servers.hub.url), `the dialog names the server: ${said}`);
    await other.waitForTimeout(1_000);
    assert.deepEqual(watch.filter((u) => u.startsWith(shared.servers.hub.url) && /gpt2/.test(u)), [], 'nothing asked of that server before the user agrees');
    await tid(other, 'confirm-cancel').first().click();
    await other.close();

    // 2. Past the caps: 65 terms, then a long prompt. The banner says what; the editor keeps its recipe.
    const kept = await readRecipe(p);
    const many = { ...state, recipe: { ...state.recipe, terms: Array.from({ length: 65 }, (_, i) => ({ layer: 0, coeff: 1, text: `t${i}` })) } };
    await p.evaluate((f) => { window.location.hash = f; }, encode(many));
    await tid(p, 'error').first().waitFor({ timeout: 10_000 });
    const banner = await tid(p, 'error').first().textContent();
    assert.match(banner, /65 steering terms, more than the 64 a Tiller link carries/);
    assert.deepEqual(await readRecipe(p), kept, 'the editor is unchanged');
    const long = { ...state, recipe: { ...state.recipe, prompt: 'a'.repeat(16_385) } };
    await p.evaluate((f) => { window.location.hash = f; }, encode(long));
    await p.waitForFunction(() => /a prompt of 16385 characters/.test(document.querySelector('[data-testid="error"]')?.textContent || ''), null, { timeout: 10_000 });
    assert.deepEqual(await readRecipe(p), kept, 'the editor is unchanged');
    assert.deepEqual(probs.pageErrors, [], `page errors: ${probs.pageErrors.join('\n')}`);
  } finally {
    await p.close();
  }
});
