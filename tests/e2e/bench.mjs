// How fast the page generates, in headless Chromium with WebGPU on SwiftShader (the flags of
// docs/SEMANTICS.md). A benchmark, not a test (`node --test` does not pick it up):
//
//     cd tests/e2e && node bench.mjs [--model gpt2] [--layers N] [--tokens 32] [--n 1] [--runs 2]
//
// Builds a model with the shapes of a released GPT-2 and random f16 weights (std 0.02,
// LayerNorms at 1 and 0, the real GPT-2 tokenizer), serves it from the Hub-like test server,
// loads it in the page and runs greedy generations of `--tokens` tokens with `--n`
// comparisons (2n sequences a step: n unsteered, n steered, one Love − Hate term pair at
// layer 1). Prints the worker's own timing of each run (`run-timing`: first tokens, which
// include the steering vectors and the prompt pass, then the mean wall-clock time of a decode
// step with its readback and sampling) and the adapter the page reports. The first run
// includes the GPU's shader compilation; the figures to read are the later runs'.

import os from 'node:os';
import path from 'node:path';
import { launch, watchPage } from './lib/browser.mjs';
import { DIST, FIXTURES, ensureDist } from './lib/env.mjs';
import { startHubServer } from './lib/hub-server.mjs';
import { startStaticServer } from './lib/static-server.mjs';
import { attr, pageUrl, pickHubRepo, loadModel, setRecipe, text, tid, waitForState } from './lib/contract.mjs';

const SHAPES = {
  distilgpt2: [6, 768, 12],
  gpt2: [12, 768, 12],
  'gpt2-medium': [24, 1024, 16],
  'gpt2-large': [36, 1280, 20],
};

function parseArgs(argv) {
  const a = { model: 'gpt2', layers: null, tokens: 32, n: 1, runs: 2 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--model') a.model = value();
    else if (flag === '--layers') a.layers = Number(value());
    else if (flag === '--tokens') a.tokens = Number(value());
    else if (flag === '--n') a.n = Number(value());
    else if (flag === '--runs') a.runs = Number(value());
    else throw new Error(`unknown argument ${flag} (see the comment at the top of bench.mjs)`);
  }
  if (!SHAPES[a.model]) throw new Error(`--model must be one of ${Object.keys(SHAPES).join(', ')}`);
  return a;
}

/** f16 bits of a finite f32 (round to nearest; the values here are far from f16's limits). */
function f16Bits(x) {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign; // below f16's normal range: zero is close enough for a benchmark
  const mant = u & 0x7fffff;
  let h = sign | (exp << 10) | (mant >>> 13);
  if (mant & 0x1000) h += 1; // round half up
  return h;
}

/** A GPT-2 of the given shapes as one safetensors file (F16), and its config.json. */
function randomGpt2(nLayer, c, nHead) {
  const V = 50257;
  const P = 1024;
  const tensors = [['wte.weight', [V, c], 'normal'], ['wpe.weight', [P, c], 'normal']];
  for (let l = 0; l < nLayer; l++) {
    const h = `h.${l}.`;
    tensors.push(
      [`${h}ln_1.weight`, [c], 'one'], [`${h}ln_1.bias`, [c], 'zero'],
      [`${h}attn.c_attn.weight`, [c, 3 * c], 'normal'], [`${h}attn.c_attn.bias`, [3 * c], 'zero'],
      [`${h}attn.c_proj.weight`, [c, c], 'normal'], [`${h}attn.c_proj.bias`, [c], 'zero'],
      [`${h}ln_2.weight`, [c], 'one'], [`${h}ln_2.bias`, [c], 'zero'],
      [`${h}mlp.c_fc.weight`, [c, 4 * c], 'normal'], [`${h}mlp.c_fc.bias`, [4 * c], 'zero'],
      [`${h}mlp.c_proj.weight`, [4 * c, c], 'normal'], [`${h}mlp.c_proj.bias`, [c], 'zero'],
    );
  }
  tensors.push(['ln_f.weight', [c], 'one'], ['ln_f.bias', [c], 'zero']);

  const header = {};
  let offset = 0;
  for (const [name, shape] of tensors) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'F16', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const buf = Buffer.alloc(8 + json.length + offset);
  buf.writeBigUInt64LE(BigInt(json.length), 0);
  buf.write(json, 8, 'latin1');

  // Normal(0, 0.02) values from a seeded table: 4096 Box-Muller draws, indexed by an LCG.
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const table = new Uint16Array(4096);
  for (let i = 0; i < table.length; i++) {
    const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
    table[i] = f16Bits(0.02 * z);
  }
  const data = new Uint16Array(buf.buffer, buf.byteOffset + 8 + json.length, offset / 2);
  let at = 0;
  for (const [, shape, kind] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (kind === 'normal') for (let i = 0; i < n; i++) data[at + i] = table[(s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 20];
    else if (kind === 'one') data.fill(0x3c00, at, at + n);
    at += n; // 'zero' is already zero
  }
  const config = { model_type: 'gpt2', n_layer: nLayer, n_embd: c, n_head: nHead, n_positions: P, n_ctx: P, vocab_size: V, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new' };
  return { model: buf, config: Buffer.from(JSON.stringify(config)) };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const [fullLayers, c, nHead] = SHAPES[args.model];
  const nLayer = args.layers ?? fullLayers;
  ensureDist();
  const t0 = Date.now();
  const { model, config } = randomGpt2(nLayer, c, nHead);
  console.log(`model: ${args.model} shapes, ${nLayer} of ${fullLayers} layers, random f16 weights (${(model.length / 1e6).toFixed(0)} MB, made in ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const repo = `bench/${args.model}-${nLayer}`;
  const hub = await startHubServer({
    [repo]: { dir: path.join(FIXTURES, 'tiny-gpt2'), files: { 'model.safetensors': model, 'config.json': config }, missing: ['golden.json'] },
  });
  const site = await startStaticServer(DIST);
  const session = await launch();
  try {
    const page = await session.context.newPage();
    const problems = watchPage(page);
    page.on('crash', () => console.log('bench: the page crashed'));
    await page.goto(pageUrl(site.url, hub.url), { waitUntil: 'load' });
    await pickHubRepo(page, repo);
    const tLoad = Date.now();
    await loadModel(page, { timeout: 600_000 });
    console.log(`loaded in ${((Date.now() - tLoad) / 1000).toFixed(1)} s: ${await text(tid(page, 'model-status').first())}`);
    await setRecipe(page, {
      prompt: 'I hate you because',
      terms: [{ text: 'Love', layer: 1, coeff: 5 }, { text: 'Hate', layer: 1, coeff: -5 }],
      n: args.n,
      maxTokens: args.tokens,
      seed: 1,
      greedy: true,
    });
    const rows = [];
    for (let r = 1; r <= args.runs; r++) {
      await tid(page, 'run').first().click();
      await waitForState(page, 'run-status', 'running', 30_000).catch(() => {});
      await waitForState(page, 'run-status', 'done', 1_800_000, { failOn: ['error'] });
      const steps = Number(await attr(page, 'run-timing', 'data-steps'));
      const first = Number(await attr(page, 'run-timing', 'data-first-ms'));
      const step = Number(await attr(page, 'run-timing', 'data-step-ms'));
      rows.push({ run: r, steps, first, step });
      console.log(`run ${r}: ${steps} steps of ${2 * args.n} sequences; first tokens after ${first.toFixed(0)} ms, then ${step.toFixed(1)} ms per step = ${(step / (2 * args.n)).toFixed(1)} ms per token per sequence`);
    }
    if (problems.pageErrors.length) console.log(`page errors: ${problems.pageErrors.join(' | ')}`);
    const best = Math.min(...rows.slice(1).map((x) => x.step).concat(rows.length === 1 ? [rows[0].step] : []));
    console.log(`\n| model | layers | sequences a step | decode, ms per step (best run after the first) | prompt + vectors, ms (last run) |`);
    console.log(`|---|---|---|---|---|`);
    console.log(`| ${args.model} | ${nLayer} of ${fullLayers} | ${2 * args.n} | ${best.toFixed(1)} | ${rows[rows.length - 1].first.toFixed(0)} |`);
    console.log(`browser: ${await page.evaluate(() => navigator.userAgent)}; cpus: ${os.cpus().length} × ${os.cpus()[0]?.model}`);
  } finally {
    await session.close();
    await Promise.all([hub.close(), site.close()]);
  }
}

main().catch((e) => {
  console.error(`bench: ${e.stack || e}`);
  process.exit(1);
});
