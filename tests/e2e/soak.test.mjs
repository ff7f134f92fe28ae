// Soak (issue 17): 500 consecutive runs and 50 model loads in one page on the tiny model. The
// worker's wasm memory and its live GPU buffers (counted by a FinalizationRegistry around
// createBuffer, after a forced garbage collection) stay flat, and the runs do not slow down as
// they pile up (the median of the last 100 against the first 100). The figures go to
// out/soak.json; RELIABILITY.md quotes a run of it. It found run numbers stuck at #201 once the
// page had let its oldest runs go (numbered by count).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { sharedSession } from './lib/session.mjs';
import { REPOS } from './lib/env.mjs';
import { tid, setRecipe, pickHubRepo, loadModel, waitForState, engineWorker, OUT_DIR } from './lib/contract.mjs';

const RUNS = 500;
const LOADS = 50;
// Warm-up before the first reading: caches, pipelines and the history's cap are reached early.
const WARM_RUNS = 50;
const WARM_LOADS = 5;
const MiB = 1 << 20;
// `gc()` in the worker, to count only the GPU buffers still reachable.
const shared = sharedSession({ extraArgs: ['--js-flags=--expose-gc'] });

/** Counts the GPU buffers the worker creates and the ones the garbage collector has freed. */
async function countBuffers(w) {
  await w.evaluate(() => {
    const soak = { created: 0, freed: 0, bytes: 0 };
    self.__soak = soak;
    const freed = new FinalizationRegistry((size) => {
      soak.freed += 1;
      soak.bytes -= size;
    });
    const create = GPUDevice.prototype.createBuffer;
    GPUDevice.prototype.createBuffer = function (desc) {
      const buffer = create.call(this, desc);
      soak.created += 1;
      soak.bytes += desc.size;
      freed.register(buffer, desc.size);
      return buffer;
    };
  });
}

/** Live GPU buffers (count, bytes) after the worker's garbage is collected. */
async function liveBuffers(w) {
  return w.evaluate(async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 50));
    }
    return { live: self.__soak.created - self.__soak.freed, bytes: self.__soak.bytes, created: self.__soak.created };
  });
}

const number = async (p, id, attr) => Number(await tid(p, id).first().getAttribute(attr));
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

test(`${RUNS} runs and ${LOADS} loads in one page: memory and GPU buffers flat, no slowdown`, { timeout: 1_500_000 }, async (t) => {
  const { p, probs } = await shared.openPage();
  const w = await engineWorker(p);
  await countBuffers(w);
  await pickHubRepo(p, REPOS.tiny);
  await loadModel(p, { timeout: 180_000 });
  await setRecipe(p, { prompt: 'I hate you because', terms: [{ text: 'Love', layer: 1, coeff: 4 }], n: 1, maxTokens: 2 });

  const runNumber = () => p.evaluate(() => Number(/Run #(\d+)/.exec(document.querySelector('.run-meta')?.textContent || '')?.[1] || 0));
  const times = [];
  let warm = null;
  for (let i = 1; i <= RUNS; i++) {
    const before = await runNumber();
    const t0 = Date.now();
    await tid(p, 'run').first().click();
    await p.waitForFunction((n) => {
      const m = /Run #(\d+)/.exec(document.querySelector('.run-meta')?.textContent || '');
      return m && Number(m[1]) > n && document.querySelector('[data-testid="run-status"]')?.dataset.state === 'done';
    }, before, { timeout: 60_000, polling: 10 }).catch(async (e) => {
      const shown = await p.evaluate(() => [...document.querySelectorAll('.run-meta')].map((m) => m.textContent).join(' | '));
      const state = await tid(p, 'run-status').first().getAttribute('data-state');
      throw new Error(`run ${i} (after run #${before}) did not finish: run-status ${state}, shown: ${shown}: ${e.message}`);
    });
    times.push(Date.now() - t0);
    if (i === WARM_RUNS) warm = { wasm: await number(p, 'run-timing', 'data-wasm-memory'), ...(await liveBuffers(w)) };
  }
  const end = { wasm: await number(p, 'run-timing', 'data-wasm-memory'), ...(await liveBuffers(w)) };
  const runs = {
    runs: RUNS,
    warm,
    end,
    first100MedianMs: median(times.slice(0, 100)),
    last100MedianMs: median(times.slice(-100)),
    totalS: times.reduce((a, b) => a + b, 0) / 1000,
  };
  t.diagnostic(`runs: ${JSON.stringify(runs)}`);

  const loadTimes = [];
  let warmLoad = null;
  for (let i = 1; i <= LOADS; i++) {
    const t0 = Date.now();
    await tid(p, 'model-load').first().click();
    await p.waitForFunction(() => document.querySelector('[data-testid="model-status"]')?.dataset.state !== 'ready', null, { timeout: 5_000, polling: 10 }).catch(() => {});
    await waitForState(p, 'model-status', 'ready', 120_000, { failOn: ['error'] });
    loadTimes.push(Date.now() - t0);
    assert.equal(await tid(p, 'model-status').first().getAttribute('data-source'), 'cache', `load ${i} reads the cache`);
    if (i === WARM_LOADS) warmLoad = { wasm: await number(p, 'model-status', 'data-wasm-memory'), ...(await liveBuffers(w)) };
  }
  const endLoad = { wasm: await number(p, 'model-status', 'data-wasm-memory'), ...(await liveBuffers(w)) };
  const loads = { loads: LOADS, warm: warmLoad, end: endLoad, firstMedianMs: median(loadTimes.slice(0, 10)), lastMedianMs: median(loadTimes.slice(-10)) };
  t.diagnostic(`loads: ${JSON.stringify(loads)}`);
  // Still runs after all that.
  await tid(p, 'run').first().click();
  await waitForState(p, 'run-status', 'done', 60_000, { failOn: ['error'] });

  fs.mkdirSync(OUT_DIR, { recursive: true });
  fs.writeFileSync(path.join(OUT_DIR, 'soak.json'), JSON.stringify({ runs, loads }, null, 2));

  assert.ok(end.wasm - warm.wasm <= 4 * MiB, `wasm memory grew ${(end.wasm - warm.wasm) / MiB} MiB over runs ${WARM_RUNS}..${RUNS}`);
  assert.ok(end.live <= warm.live + 16, `live GPU buffers went from ${warm.live} to ${end.live} over runs ${WARM_RUNS}..${RUNS}`);
  assert.ok(end.bytes <= warm.bytes + 4 * MiB, `live GPU buffer bytes went from ${warm.bytes} to ${end.bytes}`);
  assert.ok(runs.last100MedianMs <= 5 * runs.first100MedianMs + 50, `runs slowed down: median ${runs.first100MedianMs} ms → ${runs.last100MedianMs} ms`);
  assert.ok(endLoad.wasm - warmLoad.wasm <= 16 * MiB, `wasm memory grew ${(endLoad.wasm - warmLoad.wasm) / MiB} MiB over loads ${WARM_LOADS}..${LOADS}`);
  assert.ok(endLoad.live <= warmLoad.live + 16, `live GPU buffers went from ${warmLoad.live} to ${endLoad.live} over loads ${WARM_LOADS}..${LOADS}`);
  assert.ok(endLoad.bytes <= warmLoad.bytes + 4 * MiB, `live GPU buffer bytes went from ${warmLoad.bytes} to ${endLoad.bytes} over loads`);
  assert.deepEqual(probs.pageErrors, []);
});
