// Number entry as a person types it (issue 18): real key presses (keyboard.type, never fill)
// into every number field of the editor, the pair shortcut and the sweep panel, including
// half-typed values on the way (`-`, `0.`, `1e`). The recipe the page holds, read back from
// its share link, must have exactly the typed values. A problem shows next to its field once
// the field is left, and goes when the text is fixed. No model is needed: the share link is
// built from the form alone. Self-contained: its own servers and browser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { tid, readShareLink, screenshot, getValue, typeInto } from './lib/contract.mjs';
import { sharedSession } from './lib/session.mjs';

const shared = sharedSession({ viewport: { width: 1280, height: 800 } });

/** The state a share link carries (`#v1.` + base64url of raw-deflated JSON). */
function decodeLink(link) {
  const frag = link.slice(link.indexOf('#') + 1);
  assert.ok(frag.startsWith('v1.'), `a v1 link: ${link.slice(0, 80)}`);
  return JSON.parse(zlib.inflateRawSync(Buffer.from(frag.slice(3), 'base64url')).toString('utf8'));
}

/** Leaves the field (Tab), so it checks itself. */
async function leave(page) {
  await page.keyboard.press('Tab');
}

async function recipe(page) {
  // The link follows the form; wait for it to settle after the last key press.
  await page.waitForTimeout(150);
  return decodeLink(await readShareLink(page));
}

test('every number field takes typed negative, decimal and exponent values exactly', { timeout: 180_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    const rows = tid(p, 'term-row');
    await rows.first().waitFor({ timeout: 30_000 });
    const coeff = tid(rows.nth(1), 'term-coeff').first();
    const layer = tid(rows.nth(1), 'term-layer').first();

    // A half-typed number stays as typed; leaving it says what is wrong; finishing fixes it.
    await typeInto(p, coeff, '-');
    assert.equal(await coeff.inputValue(), '-', 'a lone minus is kept while typing');
    await leave(p);
    const err = tid(rows.nth(1), 'term-coeff-error').first();
    await err.waitFor({ timeout: 5_000 });
    assert.match(await err.textContent(), /coefficient of `Hate`.*not a number yet/, 'the problem names the field');
    assert.equal(await coeff.getAttribute('aria-invalid'), 'true');
    await coeff.click();
    await p.keyboard.press('End');
    await p.keyboard.type('8');
    await err.waitFor({ state: 'detached', timeout: 5_000 });
    assert.equal(await coeff.inputValue(), '-8');

    await typeInto(p, layer, '3');
    await typeInto(p, tid(rows.nth(0), 'term-layer').first(), '10');
    await typeInto(p, tid(rows.nth(0), 'term-coeff').first(), '2.');
    const typed = {
      temperature: '0.7', 'top-p': '0.95', 'top-k': '40', 'freq-penalty': '1e-3', 'rep-penalty': '1.25',
      n: '2', 'max-tokens': '12', seed: '7',
    };
    for (const [id, text] of Object.entries(typed)) {
      const loc = tid(p, id).first();
      // Half-way values on the way to the full one must not be wiped.
      await typeInto(p, loc, text);
      assert.equal(await loc.inputValue(), text, `${id} shows what was typed`);
    }
    let r = (await recipe(p)).recipe;
    assert.deepEqual(r.terms.map((x) => [x.layer, x.coeff]), [[10, 2], [3, -8]], 'terms hold the typed layer and coefficients');
    assert.equal(r.sampling.temperature, 0.7);
    assert.equal(r.sampling.top_p, 0.95);
    assert.equal(r.sampling.top_k, 40);
    assert.equal(r.sampling.freq_penalty, 0.001);
    assert.equal(r.sampling.rep_penalty, 1.25);
    assert.equal(r.n, 2);
    assert.equal(r.max_new_tokens, 12);
    assert.equal(r.seed, 7);

    // Out of range: said next to the field, and the link keeps the last good recipe's shape
    // out of it (the form does not turn into a recipe).
    await typeInto(p, tid(p, 'top-p').first(), '950');
    await leave(p);
    const topErr = tid(p, 'top-p-error').first();
    await topErr.waitFor({ timeout: 5_000 });
    assert.match(await topErr.textContent(), /950 is out of range/);
    await typeInto(p, tid(p, 'top-p').first(), '0.5');
    await topErr.waitFor({ state: 'detached', timeout: 5_000 });

    // The ± button flips the typed text; the stripe follows the sign.
    await tid(rows.nth(1), 'term-coeff-flip').first().click();
    assert.equal(await coeff.inputValue(), '8');
    assert.match(await rows.nth(1).getAttribute('class'), /\bpos\b/);
    await tid(rows.nth(1), 'term-coeff-flip').first().click();
    assert.match(await rows.nth(1).getAttribute('class'), /\bneg\b/);

    // The pair shortcut takes typed values too.
    await typeInto(p, tid(p, 'pair-a').first(), 'Happy');
    await typeInto(p, tid(p, 'pair-b').first(), 'Sad');
    await typeInto(p, tid(p, 'pair-layer').first(), '2');
    await typeInto(p, tid(p, 'pair-coeff').first(), '-1.5');
    await tid(p, 'pair-add').first().click();
    r = (await recipe(p)).recipe;
    assert.deepEqual(r.terms.slice(2).map((x) => [x.text, x.layer, x.coeff]), [['Happy', 2, -1.5], ['Sad', 2, 1.5]]);

    // The sweep's layer range.
    await typeInto(p, tid(p, 'sweep-layer-from').first(), '1');
    await typeInto(p, tid(p, 'sweep-layer-to').first(), '4');
    const state = await recipe(p);
    assert.deepEqual(state.sweep?.layers, [1, 4], 'the sweep holds the typed layers');
    assert.equal(await getValue(p, 'sweep-layer-from'), '1');

    await screenshot(p, 'forms-typed-1280', t);
    await p.setViewportSize({ width: 390, height: 844 });
    await tid(p, 'term-row').first().scrollIntoViewIfNeeded();
    const sideways = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    await screenshot(p, 'forms-typed-390', t);
    assert.ok(sideways <= 0, `the phone layout scrolls sideways by ${sideways}px`);
    assert.deepEqual([...probs.consoleErrors, ...probs.pageErrors], [], 'no console or page errors');
  } finally {
    await p.close().catch(() => {});
  }
});

test('the editor survives a reload, and a link pasted into the open tab asks, then restores', { timeout: 180_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  try {
    await tid(p, 'term-row').first().waitFor({ timeout: 30_000 });
    await typeInto(p, tid(p, 'prompt').first(), 'A prompt worth keeping');
    const coeff = tid(tid(p, 'term-row').nth(0), 'term-coeff').first();
    await typeInto(p, coeff, '1e'); // half-typed, kept as typed
    await p.waitForTimeout(150);
    await p.reload({ waitUntil: 'load' });
    await tid(p, 'term-row').first().waitFor({ timeout: 30_000 });
    assert.equal(await getValue(p, 'prompt'), 'A prompt worth keeping', 'the prompt came back after a reload');
    assert.equal(await tid(tid(p, 'term-row').nth(0), 'term-coeff').first().inputValue(), '1e', 'the half-typed coefficient came back');

    // A link made from one recipe, pasted while the editor holds another.
    await typeInto(p, tid(tid(p, 'term-row').nth(0), 'term-coeff').first(), '3');
    await typeInto(p, tid(p, 'prompt').first(), 'The prompt in the link');
    await p.waitForTimeout(150);
    const link = await readShareLink(p);
    const hash = link.slice(link.indexOf('#'));
    await typeInto(p, tid(p, 'prompt').first(), 'My unsaved prompt');
    p.once('dialog', (d) => d.dismiss());
    await p.evaluate((h) => { location.hash = h; }, hash);
    await p.waitForTimeout(500);
    assert.equal(await getValue(p, 'prompt'), 'My unsaved prompt', 'declining the dialog kept the editor');
    await p.evaluate(() => { location.hash = ''; });
    let asked = '';
    p.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await p.evaluate((h) => { location.hash = h; }, hash);
    await p.waitForFunction(() => document.querySelector('[data-testid="prompt"]').value === 'The prompt in the link', null, { timeout: 5_000 });
    assert.match(asked, /replaces the recipe/, `the page asked first: ${asked}`);
    assert.deepEqual(probs.pageErrors, [], 'no uncaught errors');
  } finally {
    await p.close().catch(() => {});
  }
});
