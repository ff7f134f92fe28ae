// How fast the page generates, in headless Chromium with WebGPU on SwiftShader (the flags of
// docs/SEMANTICS.md). A benchmark, not a test (`node --test` does not pick it up):
//
//     cd tests/e2e && node bench.mjs [--model gpt2] [--layers N] [--tokens 32] [--n 1] [--runs 2]
//
// Builds a model with the shapes of a released checkpoint and random weights (std 0.02, norms
// at 1 and 0): a GPT-2 (distilgpt2, gpt2, gpt2-medium, gpt2-large, gpt2-xl; f16, the real GPT-2
// tokenizer) or Llama-3.2-1B (`--model llama-3.2-1b`: bf16, grouped-query attention 32/8,
// llama3 rope, tied head, the real Llama 3.1 tokenizer), serves it from the Hub-like test server,
// loads it in the page and runs greedy generations of `--tokens` tokens with `--n`
// comparisons (2n sequences a step: n unsteered, n steered, one Love − Hate term pair at
// layer 1). Prints the worker's own timing of each run (`run-timing`: first tokens, which
// include the steering vectors and the prompt pass, then the mean wall-clock time of a decode
// step with its readback and sampling), the load time and the worker's wasm memory after the
// load (wasm memory only grows, so that is its peak while loading), and the adapter the page
// reports. The first run
// includes the GPU's shader compilation; the figures to read are the later runs'.
//
// `--inspect` then reads the last run's steering vector (layer 1) over the page's built-in
// corpus in the Inspect area, `--runs` times, and prints how long each reading took (click to
// "done", as a user waits for it). `--heads` finds a function vector for the antonyms task in
// the Heads area (10 examples, `--prompts` prompts, no evaluation: the clean prompts and every
// head's patched passes) and runs ITI's probes on the 120 shipped statements, and prints how
// long each took. `--engine cpu` loads the page's CPU engine instead of WebGPU.
//
// `--melbo` instead trains MELBO vectors in the Discover area (`--vectors 1`, `--steps 12`,
// the form's default layers, R 4, one prompt of 32 tokens) and prints the wall-clock ms per
// training step as the page's progress bar advances (forward and backward; the first step,
// which compiles the shaders, and the completions after the last are left out), and what a
// 32-vector, 300-step run would take at that rate.

import os from 'node:os';
import path from 'node:path';
import { launch, watchPage } from './lib/browser.mjs';
import { DIST, FIXTURES, ensureDist } from './lib/env.mjs';
import { startHubServer } from './lib/hub-server.mjs';
import { startStaticServer } from './lib/static-server.mjs';
import { attr, pageUrl, pickHubRepo, loadModel, setRecipe, text, tid, typeInto, waitForState } from './lib/contract.mjs';

/** GPT-2s: [layers, channels, heads]. */
const SHAPES = {
  distilgpt2: [6, 768, 12],
  gpt2: [12, 768, 12],
  'gpt2-medium': [24, 1024, 16],
  'gpt2-large': [36, 1280, 20],
  'gpt2-xl': [48, 1600, 25],
};
/** Llamas (the released config.json's fields), served with the real Llama 3.1 tokenizer of the
 *  tiny-llama fixture. */
const LLAMAS = {
  'llama-3.2-1b': {
    hidden_size: 2048, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64,
    intermediate_size: 8192, vocab_size: 128256, max_position_embeddings: 131072, rms_norm_eps: 1e-5,
    rope_theta: 500000.0, tie_word_embeddings: true,
    rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  },
};

function parseArgs(argv) {
  const a = { model: 'gpt2', layers: null, tokens: 32, n: 1, runs: 2, inspect: false, heads: false, prompts: 4, engine: 'auto', melbo: false, vectors: 1, steps: 12 };
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
    else if (flag === '--inspect') a.inspect = true;
    else if (flag === '--heads') a.heads = true;
    else if (flag === '--prompts') a.prompts = Number(value());
    else if (flag === '--engine') a.engine = value();
    else if (flag === '--melbo') a.melbo = true;
    else if (flag === '--vectors') a.vectors = Number(value());
    else if (flag === '--steps') a.steps = Number(value());
    else throw new Error(`unknown argument ${flag} (see the comment at the top of bench.mjs)`);
  }
  if (!SHAPES[a.model] && !LLAMAS[a.model]) throw new Error(`--model must be one of ${[...Object.keys(SHAPES), ...Object.keys(LLAMAS)].join(', ')}`);
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

/** bf16 bits of a finite f32 (round to nearest even). */
function bf16Bits(x) {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
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
  const config = { model_type: 'gpt2', n_layer: nLayer, n_embd: c, n_head: nHead, n_positions: P, n_ctx: P, vocab_size: V, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new' };
  return { model: safetensors(tensors, 'F16'), config: Buffer.from(JSON.stringify(config)) };
}

/** A Llama of the given config (Hugging Face names, [out, in] linears, tied head) in BF16. */
function randomLlama(cfg, nLayer) {
  const c = cfg.hidden_size;
  const kv = cfg.num_key_value_heads * cfg.head_dim;
  const tensors = [['model.embed_tokens.weight', [cfg.vocab_size, c], 'normal']];
  for (let l = 0; l < nLayer; l++) {
    const h = `model.layers.${l}.`;
    tensors.push(
      [`${h}input_layernorm.weight`, [c], 'one'],
      [`${h}self_attn.q_proj.weight`, [cfg.num_attention_heads * cfg.head_dim, c], 'normal'],
      [`${h}self_attn.k_proj.weight`, [kv, c], 'normal'],
      [`${h}self_attn.v_proj.weight`, [kv, c], 'normal'],
      [`${h}self_attn.o_proj.weight`, [c, cfg.num_attention_heads * cfg.head_dim], 'normal'],
      [`${h}post_attention_layernorm.weight`, [c], 'one'],
      [`${h}mlp.gate_proj.weight`, [cfg.intermediate_size, c], 'normal'],
      [`${h}mlp.up_proj.weight`, [cfg.intermediate_size, c], 'normal'],
      [`${h}mlp.down_proj.weight`, [c, cfg.intermediate_size], 'normal'],
    );
  }
  tensors.push(['model.norm.weight', [c], 'one']);
  const config = {
    ...cfg, architectures: ['LlamaForCausalLM'], model_type: 'llama', num_hidden_layers: nLayer, hidden_act: 'silu',
    attention_bias: false, mlp_bias: false, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], torch_dtype: 'bfloat16',
  };
  return { model: safetensors(tensors, 'BF16'), config: Buffer.from(JSON.stringify(config)) };
}

/** One safetensors file of 16-bit tensors: `normal` ones N(0, 0.02), `one` ones 1, `zero` 0. */
function safetensors(tensors, dtype) {
  const bits = dtype === 'BF16' ? bf16Bits : f16Bits;
  const header = {};
  let offset = 0;
  for (const [name, shape] of tensors) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
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
    table[i] = bits(0.02 * z);
  }
  const data = new Uint16Array(buf.buffer, buf.byteOffset + 8 + json.length, offset / 2);
  let at = 0;
  for (const [, shape, kind] of tensors) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (kind === 'normal') for (let i = 0; i < n; i++) data[at + i] = table[(s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 20];
    else if (kind === 'one') data.fill(bits(1), at, at + n);
    at += n; // 'zero' is already zero
  }
  return buf;
}

/** 32 tokens under the GPT-2 tokenizer (common words, one token each with their space). */
const MELBO_PROMPT = 'The old man walked down the road to the small town where he had lived for many years with his wife and two sons who now worked in the city';

/** Trains MELBO vectors in the Discover area and times the steps off its progress bar. */
async function melbo(page, args) {
  await page.locator('nav.areas a[data-area="area-discover"]').click();
  await tid(page, 'melbo-prompts').first().fill(MELBO_PROMPT);
  await typeInto(page, tid(page, 'melbo-radius').first(), '4');
  await typeInto(page, tid(page, 'melbo-vectors').first(), String(args.vectors));
  await typeInto(page, tid(page, 'melbo-steps').first(), String(args.steps));
  await typeInto(page, tid(page, 'melbo-new-tokens').first(), '4');
  console.log(`MELBO: ${await text(tid(page, 'melbo-defaults').first())}`);
  const t0 = Date.now();
  await tid(page, 'melbo-run').first().click();
  // (time, steps done) each time the progress bar moves, until the run is done.
  const marks = await page.evaluate(async () => {
    const out = [];
    const status = () => document.querySelector('[data-testid="melbo-status"]')?.dataset.state;
    let last = -1;
    for (;;) {
      const bar = document.querySelector('[data-testid="melbo-progress"]');
      const v = bar ? Number(bar.value) : last;
      if (v !== last) {
        out.push([performance.now(), v]);
        last = v;
      }
      const s = status();
      if (s === 'done' || s === 'error') return { out, state: s, end: performance.now() };
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  if (marks.state !== 'done') throw new Error(`the MELBO run ended: ${await text(tid(page, 'melbo-status').first())}`);
  const steps = marks.out.filter(([, v]) => v >= 1);
  if (steps.length < 2) throw new Error('too few steps to time: raise --steps');
  const [[ta, va], [tb, vb]] = [steps[0], steps[steps.length - 1]];
  const perStep = (tb - ta) / (vb - va);
  console.log(`${await text(tid(page, 'melbo-status').first())} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`\n| model | layers | ms per training step (steps ${va} … ${vb}) | a 32-vector, 300-step run |`);
  console.log(`|---|---|---|---|`);
  console.log(`| ${args.model} | ${args.layersShown} | ${perStep.toFixed(0)} | ${(perStep * 32 * 300 / 60000).toFixed(0)} min |`);
  console.log(`adapter: ${await text(tid(page, 'model-status').first())}`);
  console.log(`browser: ${await page.evaluate(() => navigator.userAgent)}; cpus: ${os.cpus().length} × ${os.cpus()[0]?.model}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const llama = LLAMAS[args.model];
  const fullLayers = llama ? llama.num_hidden_layers : SHAPES[args.model][0];
  const nLayer = args.layers ?? fullLayers;
  args.layersShown = `${nLayer} of ${fullLayers}`;
  ensureDist();
  const t0 = Date.now();
  const { model, config } = llama ? randomLlama(llama, nLayer) : randomGpt2(nLayer, SHAPES[args.model][1], SHAPES[args.model][2]);
  console.log(`model: ${args.model} shapes, ${nLayer} of ${fullLayers} layers, random ${llama ? 'bf16' : 'f16'} weights (${(model.length / 1e6).toFixed(0)} MB, made in ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const repo = `bench/${args.model}-${nLayer}`;
  // The tokenizer (and for a Llama its tokenizer_config.json) comes from a fixture of the family.
  const dir = path.join(FIXTURES, llama ? 'tiny-llama' : 'tiny-gpt2');
  const hub = await startHubServer({
    [repo]: { dir, files: { 'model.safetensors': model, 'config.json': config }, missing: ['golden.json'] },
  });
  const site = await startStaticServer(DIST);
  const session = await launch();
  try {
    const page = await session.context.newPage();
    const problems = watchPage(page);
    page.on('crash', () => console.log('bench: the page crashed'));
    await page.goto(pageUrl(site.url, hub.url), { waitUntil: 'load' });
    if (args.engine !== 'auto') await page.locator('[data-testid="engine-select"]').selectOption(args.engine);
    await pickHubRepo(page, repo);
    const tLoad = Date.now();
    await loadModel(page, { timeout: 600_000 });
    console.log(`loaded in ${((Date.now() - tLoad) / 1000).toFixed(1)} s: ${await text(tid(page, 'model-status').first())}`);
    if (args.melbo) {
      await melbo(page, args);
      return;
    }
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
    if (args.inspect) {
      await tid(page, 'inspect-run-steering').first().click();
      const times = [];
      for (let r = 1; r <= args.runs; r++) {
        const t = Date.now();
        await tid(page, 'inspect-run').first().click();
        await page.waitForFunction(() => /^(done|failed)/.test(document.querySelector('[data-testid="inspect-status"]')?.textContent || ''), null, { timeout: 3_600_000 });
        const status = await text(tid(page, 'inspect-status').first());
        if (status !== 'done') throw new Error(`the reading ended: ${status}`);
        times.push(Date.now() - t);
        console.log(`inspect ${r}: ${await text(tid(page, 'inspect-summary').first())} ${times.at(-1)} ms`);
      }
      console.log(`inspect over the corpus: best ${Math.min(...times)} ms of ${times.length}`);
    }
    if (args.heads) {
      await page.locator('nav.areas a[data-area="area-heads"]').click();
      const type = async (id, v) => {
        const loc = tid(page, id).first();
        await loc.fill(v);
        await loc.dispatchEvent('change');
      };
      await type('fv-shots', '10');
      await type('fv-prompts', String(args.prompts));
      await type('fv-eval', '0');
      let t = Date.now();
      await tid(page, 'fv-run').first().click();
      await waitForState(page, 'fv-status', 'done', 3_600_000, { failOn: ['error'] });
      console.log(`function vector (${args.prompts} prompts of 10 examples, every head's AIE): ${Date.now() - t} ms`);
      t = Date.now();
      await tid(page, 'iti-run').first().click();
      await waitForState(page, 'iti-status', 'done', 3_600_000, { failOn: ['error'] });
      console.log(`ITI probes (120 statements, a probe per head): ${Date.now() - t} ms`);
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
