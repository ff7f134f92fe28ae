// The test environment: the built page (dist/), the Hub-like model server with the tiny
// fixture models, and Chromium.

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { E2E_DIR } from './contract.mjs';
import { startHubServer } from './hub-server.mjs';
import { startStaticServer } from './static-server.mjs';

export const REPO_ROOT = path.resolve(E2E_DIR, '..', '..');
// TILLER_DIST serves another build (e.g. a copy kept aside); by default the repo's dist/.
export const DIST = process.env.TILLER_DIST ? path.resolve(process.env.TILLER_DIST) : path.join(REPO_ROOT, 'dist');
export const FIXTURES = path.join(REPO_ROOT, 'tests', 'fixtures');

/**
 * The `tiller` binary as `cargo test --workspace` (the test command's stage 1) builds it: the
 * same command with --no-run is then a no-op, where `cargo run -p tiller-cli` would resolve
 * features for one package and rebuild the dependencies (minutes on 2 cores).
 */
export function tillerBinary() {
  const r = spawnSync('cargo', ['test', '--workspace', '--no-run', '-q'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 1_800_000 });
  if (r.status !== 0) throw new Error(`cargo test --workspace --no-run failed:\n${r.stderr}`);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR) : path.join(REPO_ROOT, 'target');
  return path.join(target, 'debug', 'tiller');
}

/** Repo ids the Hub-like server answers for. */
export const REPOS = {
  tiny: 'tiny/tiny-gpt2',
  tinyF32: 'tiny/tiny-gpt2-f32',
  corrupt: 'tiny/corrupt',
  garbage: 'tiny/garbage',
  slow: 'tiny/tiny-gpt2-slow',
  redirect: 'tiny/tiny-gpt2-redirect',
  url: 'files/tiny-gpt2-f32', // for the base-URL source (a URL no other test caches)
  llama: 'tiny/tiny-llama', // GQA, llama3 rope, chat template (tokenizer_config.json)
  qwen2: 'tiny/tiny-qwen2', // q/k/v biases, untied head, sharded bf16 checkpoint
  neox: 'tiny/tiny-neox', // partial rotary, parallel residual, erf-GELU
  gated: 'tiny/tiny-llama-gated', // 401 without GATED_TOKEN, like meta-llama/Llama-3.2-1B
  nan: 'tiny/tiny-gpt2-nan', // h.1.mlp.c_fc.weight holds 3 NaN
  drop: 'tiny/tiny-gpt2-drop', // the first download of model.safetensors breaks off half-way
  changed: 'tiny/tiny-gpt2-changed', // ... and the file's ETag changes meanwhile
};

/** Where the Hub-like server drops the first download of REPOS.drop and REPOS.changed. */
export const DROP_AFTER = 3_000_000;

/** The token the gated repo accepts. */
export const GATED_TOKEN = 'hf_tillerTestToken123';

/** A copy of an F16 safetensors file with `count` NaN written into `tensor`'s first values. */
export function withNaN(model, tensor, count) {
  const copy = Buffer.from(model);
  const len = Number(copy.readBigUInt64LE(0));
  const info = JSON.parse(copy.subarray(8, 8 + len).toString('utf8'))[tensor];
  if (!info || info.dtype !== 'F16') throw new Error(`withNaN: no F16 tensor ${tensor}`);
  for (let i = 0; i < count; i++) copy.writeUInt16LE(0x7e00, 8 + len + info.data_offsets[0] + 2 * i);
  return copy;
}

/** Fixture files of the Hub repos: tiny-gpt2 has config.json; tiny-gpt2-f32 does not. */
export function hubRepos() {
  const tiny = path.join(FIXTURES, 'tiny-gpt2');
  const tinyF32 = path.join(FIXTURES, 'tiny-gpt2-f32');
  const model = fs.readFileSync(path.join(tiny, 'model.safetensors'));
  // Truncated: the header is intact, the tensor data stops at 60 % of the file.
  const truncated = model.subarray(0, Math.floor(model.length * 0.6));
  // Garbage: not a safetensors file at all (its first 8 bytes, read as the header length,
  // are absurdly large).
  const garbage = Buffer.alloc(1 << 16);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 2654435761 >>> 24) & 0xff;
  Buffer.from('This is not a safetensors file.').copy(garbage, 0);
  const keep = { missing: ['golden.json'] };
  return {
    [REPOS.tiny]: { dir: tiny, ...keep },
    [REPOS.tinyF32]: { dir: tinyF32, ...keep }, // no config.json: 404, like a repo without one
    [REPOS.corrupt]: { dir: tiny, files: { 'model.safetensors': truncated }, ...keep },
    [REPOS.garbage]: { dir: tiny, files: { 'model.safetensors': garbage }, ...keep },
    [REPOS.slow]: { dir: tiny, bytesPerSec: 1_000_000, ...keep },
    // Like the real Hub: model.safetensors answers 302 to a CDN on another origin.
    [REPOS.redirect]: { dir: tiny, redirect: true, ...keep },
    [REPOS.url]: { dir: tinyF32, ...keep },
    [REPOS.llama]: { dir: path.join(FIXTURES, 'tiny-llama'), ...keep },
    [REPOS.qwen2]: { dir: path.join(FIXTURES, 'tiny-qwen2'), ...keep },
    [REPOS.neox]: { dir: path.join(FIXTURES, 'tiny-neox'), ...keep },
    [REPOS.gated]: { dir: path.join(FIXTURES, 'tiny-llama'), gated: GATED_TOKEN, ...keep },
    [REPOS.nan]: { dir: tiny, files: { 'model.safetensors': withNaN(model, 'h.1.mlp.c_fc.weight', 3) }, ...keep },
    [REPOS.drop]: { dir: tiny, dropAfter: DROP_AFTER, ...keep },
    [REPOS.changed]: { dir: tiny, dropAfter: DROP_AFTER, changeAfterDrop: true, ...keep },
  };
}

/** Builds dist/ with `cargo xtask page` only if dist/index.html is missing. */
export function ensureDist() {
  if (fs.existsSync(path.join(DIST, 'index.html'))) return;
  if (process.env.TILLER_DIST) throw new Error(`TILLER_DIST=${DIST} has no index.html`);
  const cargoBin = path.join(process.env.CARGO_HOME || path.join(process.env.HOME || '/root', '.cargo'), 'bin');
  const env = { ...process.env, PATH: `${cargoBin}:${process.env.PATH}` };
  console.log('dist/index.html missing: running `cargo xtask page` at the repo root');
  const r = spawnSync('cargo', ['xtask', 'page'], { cwd: REPO_ROOT, env, stdio: 'inherit' });
  if (r.error) throw new Error(`cargo xtask page could not start: ${r.error.message} (run bash scripts/setup.sh)`);
  if (r.status !== 0) throw new Error(`cargo xtask page failed (exit ${r.status})`);
  if (!fs.existsSync(path.join(DIST, 'index.html'))) throw new Error('cargo xtask page did not produce dist/index.html');
}

/** Starts the page server and the Hub-like server. */
export async function startServers() {
  ensureDist();
  const hub = await startHubServer(hubRepos());
  const site = await startStaticServer(DIST);
  return {
    hub,
    site,
    async close() {
      await Promise.all([hub.close(), site.close()]);
    },
  };
}
