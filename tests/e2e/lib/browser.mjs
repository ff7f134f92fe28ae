// Headless Chromium with WebGPU on SwiftShader, as docs/SEMANTICS.md ("Test environment on these
// machines") prescribes. Never downloads a browser: playwright-core drives Debian's
// /usr/bin/chromium (override with TILLER_CHROMIUM).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.TILLER_CHROMIUM || '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--use-webgpu-adapter=swiftshader',
  '--disable-gpu-sandbox',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];

/**
 * Launches Chromium with a fresh user-data-dir (a brand-new profile: empty caches, empty
 * OPFS). Returns { context, userDataDir, close() }. Pass `userDataDir` to reuse a profile.
 * The page's first-visit tour is marked as seen (it would sit over the page's corner) unless
 * `tour` is true. The page's service worker (its offline copy) is blocked unless
 * `serviceWorkers` is 'allow': Playwright's `route()` does not see what a service worker
 * fetches, and the tests that hold back or break the page's files rely on it; offline.test.mjs
 * tests the worker itself.
 */
export async function launch({ userDataDir, extraArgs = [], webgpu = true, viewport = { width: 1400, height: 1000 }, tour = false, serviceWorkers = 'block' } = {}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install Debian's chromium (bash scripts/setup.sh) or set TILLER_CHROMIUM`);
  }
  const dir = userDataDir || fs.mkdtempSync(path.join(os.tmpdir(), 'tiller-e2e-profile-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    // webgpu: false launches the same browser without WebGPU (no adapter), to see the
    // page's "no WebGPU" message.
    args: webgpu
      ? [...CHROMIUM_ARGS, ...extraArgs]
      : [...CHROMIUM_ARGS.filter((a) => !/^--(enable-unsafe-webgpu|use-webgpu-adapter)/.test(a)), '--disable-features=WebGPU', ...extraArgs],
    viewport,
    serviceWorkers,
    // SwiftShader is slow; the page may keep the main thread busy between frames.
    timeout: 60_000,
  });
  context.setDefaultTimeout(30_000);
  if (!tour) await context.addInitScript(() => { try { localStorage.setItem('tiller.tour', 'done'); } catch {} });
  return {
    context,
    userDataDir: dir,
    async close({ keepProfile = false } = {}) {
      await context.close().catch(() => {});
      if (!keepProfile && !userDataDir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Collects console errors, page errors (uncaught exceptions, wasm traps) and failed
 * requests of a page and of its workers.
 */
export function watchPage(page) {
  const problems = { consoleErrors: [], pageErrors: [], failedRequests: [], console: [] };
  const onConsole = (where) => (msg) => {
    const text = `${where}${msg.type()}: ${msg.text()}`;
    problems.console.push(text);
    if (msg.type() === 'error') problems.consoleErrors.push(`${where}${msg.text()}`);
  };
  page.on('console', onConsole(''));
  page.on('pageerror', (err) => problems.pageErrors.push(String(err && err.stack ? err.stack : err)));
  page.on('requestfailed', (req) => problems.failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`));
  page.on('worker', (w) => {
    w.on('console', onConsole(`[worker ${w.url().split('/').pop()}] `));
  });
  return problems;
}
