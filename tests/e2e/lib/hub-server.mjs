// A local server that answers like the Hugging Face Hub's file endpoint:
//
//     GET/HEAD /<repo>/resolve/<revision>/<file>
//
// for a fixed set of repos, each mapped to a folder (or to in-memory files). Everything the
// page needs from the real Hub is here: Content-Length, ETag, Accept-Ranges, single byte
// ranges (206 + Content-Range, 416 when unsatisfiable), HEAD, CORS (Access-Control-Allow-Origin
// "*", exposed headers, OPTIONS preflight). Every request is counted per repo and file, with the
// number of body bytes sent, so tests can assert "no second download".
//
// Answers carry `Cache-Control: no-store` so that Chromium's own HTTP cache can never stand in
// for the page's weight cache (OPFS / Cache Storage): a reload that does not hit this server
// for model.safetensors really came from the page's cache.
//
// Options per repo:
//   dir:      a folder whose files are served
//   files:    { name: Buffer } served from memory (override / add to dir)
//   missing:  [names] answered 404 even if present in dir (e.g. config.json)
//   bytesPerSec: throttle bodies (to watch progress, or to cancel mid-download)
//   gated:    a token: every file answers 401 (like a gated repo) unless the request carries
//             `Authorization: Bearer <token>`, and 403 for a wrong token
//   redirect: answer *.safetensors with a 302 to a "CDN" on another origin (another port of
//             this server), as the real Hub does for LFS files; the 302 carries X-Linked-Size
//             and X-Linked-Etag. Requests are counted under the resolve path either way.
//   dropAfter: for the first `drops` (default 1) whole-file GETs of a *.safetensors file, send
//             the headers (the full Content-Length) and this many body bytes, then drop the
//             connection, as a flaky network does half-way through a download
//   changeAfterDrop: once a connection was dropped, the file's ETag changes (as if a new
//             version were pushed meanwhile): a resume must notice and refuse to splice

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const RESOLVE_RE = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/;

const CONTENT_TYPES = {
  '.json': 'application/json',
  '.safetensors': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
};

const EXPOSE = [
  'Content-Length', 'Content-Range', 'Content-Type', 'ETag', 'Accept-Ranges',
  'X-Linked-Size', 'X-Linked-Etag', 'X-Error-Code', 'X-Repo-Commit',
].join(', ');

/** Parses a Range header. Returns null (serve whole), 'bad' (416) or [start, endInclusive]. */
export function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multiple ranges or other units: serve the whole file, as servers may
  const [, first, last] = m;
  if (first === '' && last === '') return null;
  if (first === '') {
    const n = Number(last);
    if (n === 0 || size === 0) return 'bad';
    return [Math.max(0, size - n), size - 1];
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Number(last);
  if (start >= size || end < start) return 'bad';
  return [start, Math.min(end, size - 1)];
}

function loadRepo(spec) {
  const files = new Map();
  if (spec.dir) {
    for (const name of fs.readdirSync(spec.dir)) {
      const p = path.join(spec.dir, name);
      if (fs.statSync(p).isFile()) files.set(name, fs.readFileSync(p));
    }
  }
  for (const [name, buf] of Object.entries(spec.files || {})) files.set(name, Buffer.from(buf));
  for (const name of spec.missing || []) files.delete(name);
  const entries = new Map();
  for (const [name, data] of files) {
    const sha = crypto.createHash('sha256').update(data).digest('hex');
    entries.set(name, { data, etag: `"${sha}"`, sha });
  }
  return {
    entries, bytesPerSec: spec.bytesPerSec || 0, redirect: !!spec.redirect, gated: spec.gated || null,
    dropAfter: spec.dropAfter || 0, drops: spec.drops ?? 1, dropped: 0, changeAfterDrop: !!spec.changeAfterDrop,
  };
}

/**
 * Starts the server on 127.0.0.1 with a free port.
 * @param {Record<string, {dir?: string, files?: Record<string, Buffer>, missing?: string[], bytesPerSec?: number}>} repos
 */
export async function startHubServer(repos) {
  const table = new Map();
  for (const [repo, spec] of Object.entries(repos)) table.set(repo, loadRepo(spec));

  /** counts[`${repo}/${file}`] = { GET, HEAD, OPTIONS, other, bodyBytes, ranges: [] } */
  const counts = new Map();
  const log = [];
  const sockets = new Set();

  function counter(key) {
    if (!counts.has(key)) {
      counts.set(key, { GET: 0, HEAD: 0, OPTIONS: 0, other: 0, bodyBytes: 0, status: [], ranges: [] });
    }
    return counts.get(key);
  }

  function cors(req, res) {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Expose-Headers', EXPOSE);
    res.setHeader('Timing-Allow-Origin', '*');
  }

  function end(res, status, headers, body) {
    res.writeHead(status, headers);
    res.end(body);
  }

  async function sendBody(req, res, buf, rate, c) {
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    if (!rate) {
      c.bodyBytes += buf.length;
      res.end(buf);
      return;
    }
    // Throttled: chunks every 50 ms.
    const chunk = Math.max(1, Math.floor(rate / 20));
    for (let off = 0; off < buf.length; off += chunk) {
      if (res.destroyed || req.destroyed) return;
      const piece = buf.subarray(off, Math.min(buf.length, off + chunk));
      c.bodyBytes += piece.length;
      const ok = res.write(piece);
      if (!ok) await new Promise((r) => res.once('drain', r));
      await new Promise((r) => setTimeout(r, 50));
    }
    res.end();
  }

  let cdnOrigin = '';
  const handler = (viaCdn) => async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let pathname = decodeURIComponent(url.pathname);
    if (viaCdn) {
      // The CDN serves /cdn/<repo>/<file> with the same bytes, ranges and headers.
      const cm = /^\/cdn\/(.+)\/([^/]+)$/.exec(pathname);
      pathname = cm ? `/${cm[1]}/resolve/main/${cm[2]}` : '/';
    }
    const m = RESOLVE_RE.exec(pathname);
    const key = m ? `${m[1]}/${m[3]}` : pathname;
    const c = counter(key);
    if (req.method in c) c[req.method] += 1; else c.other += 1;
    const entry = { method: req.method, path: pathname, cdn: viaCdn, range: req.headers.range || null, status: 0 };
    log.push(entry);
    res.on('finish', () => { entry.status = res.statusCode; c.status.push(res.statusCode); });
    if (req.headers.range) c.ranges.push(req.headers.range);

    cors(req, res);
    if (req.method === 'OPTIONS') {
      const reqHeaders = req.headers['access-control-request-headers'];
      return end(res, 204, {
        'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
        'Access-Control-Allow-Headers': reqHeaders || 'Range, If-None-Match, If-Match, Content-Type, Authorization',
        'Access-Control-Max-Age': '0',
        'Content-Length': '0',
      });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return end(res, 405, { Allow: 'GET, HEAD, OPTIONS', 'Content-Type': 'text/plain' }, 'method not allowed');
    }
    if (!m) {
      return end(res, 404, { 'Content-Type': 'text/plain', 'X-Error-Code': 'EntryNotFound' }, 'not found');
    }
    const [, repo, , file] = m;
    const r = table.get(repo);
    if (!r) {
      return end(res, 404, {
        'Content-Type': 'application/json', 'X-Error-Code': 'RepoNotFound',
      }, JSON.stringify({ error: 'Repository not found' }));
    }
    if (r.gated && !viaCdn) {
      const auth = req.headers.authorization || '';
      if (auth !== `Bearer ${r.gated}`) {
        const status = auth ? 403 : 401;
        return end(res, status, {
          'Content-Type': 'application/json', 'X-Error-Code': 'GatedRepo',
        }, JSON.stringify({ error: auth ? 'Invalid credentials' : 'Access to this repo is restricted' }));
      }
    }
    const f = r.entries.get(file);
    if (!f) {
      return end(res, 404, {
        'Content-Type': 'application/json', 'X-Error-Code': 'EntryNotFound',
      }, JSON.stringify({ error: 'Entry not found' }));
    }
    const size = f.data.length;
    if (r.redirect && !viaCdn && file.endsWith('.safetensors')) {
      return end(res, 302, {
        Location: `${cdnOrigin}/cdn/${repo}/${file}`,
        'X-Linked-Size': String(size),
        'X-Linked-Etag': f.etag,
        'Content-Length': '0',
        'Cache-Control': 'no-store',
      });
    }
    const base = {
      'Content-Type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: f.etag,
      'X-Linked-Size': String(size),
      'X-Linked-Etag': f.etag,
      'X-Repo-Commit': '0000000000000000000000000000000000000000',
      'Cache-Control': 'no-store',
    };
    const inm = req.headers['if-none-match'];
    if (inm && inm.split(',').map((s) => s.trim()).includes(f.etag)) {
      return end(res, 304, base);
    }
    const range = parseRange(req.headers.range, size);
    if (range === 'bad') {
      return end(res, 416, { ...base, 'Content-Range': `bytes */${size}`, 'Content-Length': '0' });
    }
    if (range) {
      const [s, e] = range;
      const body = f.data.subarray(s, e + 1);
      res.writeHead(206, { ...base, 'Content-Range': `bytes ${s}-${e}/${size}`, 'Content-Length': String(body.length) });
      return sendBody(req, res, body, r.bytesPerSec, c);
    }
    if (req.method === 'GET' && r.dropAfter && r.dropped < r.drops && file.endsWith('.safetensors')) {
      r.dropped += 1;
      if (r.changeAfterDrop) f.etag = `"changed-${r.dropped}-${f.sha}"`;
      res.writeHead(200, { ...base, 'Content-Length': String(size) });
      const part = f.data.subarray(0, Math.min(size - 1, r.dropAfter));
      c.bodyBytes += part.length;
      res.write(part, () => setTimeout(() => req.socket.destroy(), 50));
      return;
    }
    res.writeHead(200, { ...base, 'Content-Length': String(size) });
    return sendBody(req, res, f.data, r.bytesPerSec, c);
  };
  const listen = async (srv) => {
    srv.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    await new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', resolve);
    });
    return srv.address().port;
  };
  const server = http.createServer(handler(false));
  const cdn = http.createServer(handler(true));
  const port = await listen(server);
  const cdnPort = await listen(cdn);
  const origin = `http://127.0.0.1:${port}`;
  cdnOrigin = `http://127.0.0.1:${cdnPort}`;

  const zero = { GET: 0, HEAD: 0, OPTIONS: 0, other: 0, bodyBytes: 0, status: [], ranges: [] };
  return {
    port,
    url: origin,
    cdnUrl: cdnOrigin,
    /** URL of a file, as the page should request it. */
    fileUrl: (repo, file, rev = 'main') => `${origin}/${repo}/resolve/${rev}/${file}`,
    /** A copy of the counters of one file (zeros if never requested). */
    count: (repo, file) => structuredClone(counts.get(`${repo}/${file}`) || zero),
    /** Total body bytes of a file sent so far (a download, whole or in ranges). */
    bodyBytes: (repo, file) => (counts.get(`${repo}/${file}`) || zero).bodyBytes,
    size: (repo, file) => table.get(repo)?.entries.get(file)?.data.length,
    log,
    reset() { counts.clear(); log.length = 0; },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise((r) => server.close(r)), new Promise((r) => cdn.close(r))]);
    },
  };
}
