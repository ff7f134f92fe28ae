// The servers (page and Hub-like) and the browser one test file shares: started before its
// first test, closed after its last.

import { before, after } from 'node:test';
import { launch } from './browser.mjs';
import { startServers } from './env.mjs';

/**
 * Registers the file's `before`/`after` and returns `{ servers, session }`, filled in once
 * `before` has run. `launchOptions` go to `launch()` (viewport, tour, ...).
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
  return shared;
}
