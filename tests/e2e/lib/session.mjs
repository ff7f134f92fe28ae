// The servers (page and Hub-like) and the browser one test file shares: started before its
// first test, closed after its last.

import { before, after } from 'node:test';
import { launch, watchPage } from './browser.mjs';
import { startServers } from './env.mjs';
import { pageUrl } from './contract.mjs';

/**
 * Registers the file's `before`/`after` and returns `{ servers, session, openPage }`, the first
 * two filled in once `before` has run. `launchOptions` go to `launch()` (viewport, tour, ...).
 */
export function sharedSession(launchOptions = {}) {
  const shared = { servers: null, session: null };
  before(async () => {
    shared.servers = await startServers();
    shared.session = await launch(launchOptions);
  });
  after(async () => {
    await shared.session?.close?.().catch(() => {});
    await shared.servers?.close();
  });
  /**
   * A new page of the shared browser, watched (`watchPage`), opened at the page (with
   * `fragment`; `beforeGoto(page)` runs first, e.g. to add an init script).
   */
  shared.openPage = async (fragment = '', { beforeGoto } = {}) => {
    const p = await shared.session.context.newPage();
    const probs = watchPage(p);
    if (beforeGoto) await beforeGoto(p);
    await p.goto(pageUrl(shared.servers.site.url, shared.servers.hub.url, fragment), { waitUntil: 'load' });
    return { p, probs };
  };
  return shared;
}

/**
 * For a file whose tests each want a fresh browser (an empty profile: no cache, no history):
 * registers its `before`/`after` and returns `{ servers, launch, open }`. `launch(opts)` starts
 * a browser (`launch()` options) that is closed after the file's last test; `open(session,
 * opts)` opens the page, watched, in `session` or in a new browser when it is none.
 */
export function freshSessions() {
  const fresh = { servers: null, sessions: [] };
  before(async () => {
    fresh.servers = await startServers();
  });
  after(async () => {
    for (const s of fresh.sessions) await s.close().catch(() => {});
    await fresh.servers?.close();
  });
  fresh.launch = async (opts) => {
    const s = await launch(opts);
    fresh.sessions.push(s);
    return s;
  };
  fresh.open = async (session, opts) => {
    const s = session || await fresh.launch(opts);
    const p = await s.context.newPage();
    const probs = watchPage(p);
    await p.goto(pageUrl(fresh.servers.site.url, fresh.servers.hub.url), { waitUntil: 'load' });
    return { s, p, probs };
  };
  return fresh;
}
