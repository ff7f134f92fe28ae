// Helpers of the Vectors area's e2e tests (vectors.test.mjs, vectors-eval.test.mjs).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPOS } from './env.mjs';
import { tid, waitForState, pickHubRepo, loadModel, typeInto } from './contract.mjs';

/** The tensors of a safetensors file: { name: Float32Array }, and its metadata. */
export function readSafetensors(buf) {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    const [a, b] = v.data_offsets;
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    out[k] = Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
  }
  return { tensors: out, meta: header.__metadata__ || {} };
}

export async function openPanel(p) {
  const panel = tid(p, 'vectors-panel').first();
  await panel.waitFor({ timeout: 30_000 });
  if (!(await panel.evaluate((d) => d.open))) await panel.locator('summary').click();
}

export async function loadTinyCpu(p) {
  await p.locator('[data-testid="engine-select"]').selectOption('cpu');
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: 120_000 });
}

export async function build(p, preset, layer) {
  await tid(p, 'vec-preset').first().selectOption(preset);
  await typeInto(p, tid(p, 'vec-layer').first(), String(layer));
  const before = await tid(p, 'vec-entry').count();
  await tid(p, 'vec-build').first().click();
  await waitForState(p, 'vec-status', 'done', 120_000, { failOn: ['error'] });
  await p.waitForFunction((k) => document.querySelectorAll('[data-testid="vec-entry"]').length > k, before, { timeout: 10_000 });
}

export const entryNamed = (p, name) => p.locator(`[data-testid="vec-entry"][data-name="${name}"]`);

export async function download(p, entry, id) {
  const [dl] = await Promise.all([p.waitForEvent('download', { timeout: 15_000 }), tid(entry, id).first().click()]);
  const file = path.join(os.tmpdir(), `tiller-e2e-${process.pid}-${dl.suggestedFilename()}`);
  await dl.saveAs(file);
  return { file, name: dl.suggestedFilename(), bytes: fs.readFileSync(file) };
}
