// Tiller's service worker: a copy of the app shell (the page, its scripts, wasm and styles) so
// the page opens and runs a cached model with the network gone. `cargo xtask page` writes the
// shell's file list and a cache name that changes with the build in place of the line below.
//
// Requests for the shell go to the network first (a page that is online is always the
// server's newest), and only when the network fails to this copy. Everything else (models on
// the Hub or any other server, which the engine keeps in its own cache) is not touched.
/* tiller:shell */

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('tiller-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

/** The shell file a same-origin request asks for ('./index.html' for the page itself), or null. */
function shellFile(request) {
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return null;
  const file = `./${url.pathname.slice(scope.pathname.length)}`;
  if (request.mode === 'navigate' || file === './') return './index.html';
  return SHELL.includes(file) ? file : null;
}

self.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const file = shellFile(request);
  if (!file) return;
  event.respondWith(
    fetch(request).catch(async (error) => {
      const cache = await caches.open(CACHE);
      const copy = await cache.match(file);
      if (copy) return copy;
      throw error;
    }),
  );
});
