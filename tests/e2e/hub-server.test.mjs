// Tests of the test harness itself: the Hub-like server answers like the Hub (paths, HEAD,
// Range, CORS, 404s, counters). No browser needed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { startHubServer, parseRange } from './lib/hub-server.mjs';
import { hubRepos, REPOS, FIXTURES } from './lib/env.mjs';

let hub;
const modelFile = path.join(FIXTURES, 'tiny-gpt2', 'model.safetensors');
const model = fs.readFileSync(modelFile);

function request(method, url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  hub = await startHubServer(hubRepos());
});
after(async () => {
  await hub?.close();
});

test('parseRange', () => {
  assert.deepEqual(parseRange('bytes=0-7', 100), [0, 7]);
  assert.deepEqual(parseRange('bytes=90-', 100), [90, 99]);
  assert.deepEqual(parseRange('bytes=-10', 100), [90, 99]);
  assert.deepEqual(parseRange('bytes=50-500', 100), [50, 99]);
  assert.equal(parseRange('bytes=100-', 100), 'bad');
  assert.equal(parseRange('bytes=5-2', 100), 'bad');
  assert.equal(parseRange('bytes=0-1,3-4', 100), null);
  assert.equal(parseRange(undefined, 100), null);
});

test('GET whole file: 200, Content-Length, ETag, CORS, no-store; counted', async () => {
  hub.reset();
  const r = await request('GET', hub.fileUrl(REPOS.tiny, 'model.safetensors'), { Origin: 'http://127.0.0.1:1' });
  assert.equal(r.status, 200);
  assert.equal(Number(r.headers['content-length']), model.length);
  assert.ok(r.body.equals(model));
  const sha = crypto.createHash('sha256').update(model).digest('hex');
  assert.equal(r.headers.etag, `"${sha}"`);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  for (const h of ['Content-Length', 'Content-Range', 'ETag']) {
    assert.match(r.headers['access-control-expose-headers'], new RegExp(h));
  }
  assert.equal(r.headers['accept-ranges'], 'bytes');
  assert.equal(r.headers['cache-control'], 'no-store');
  const c = hub.count(REPOS.tiny, 'model.safetensors');
  assert.equal(c.GET, 1);
  assert.equal(c.bodyBytes, model.length);
});

test('HEAD: size without a body', async () => {
  hub.reset();
  const r = await request('HEAD', hub.fileUrl(REPOS.tiny, 'model.safetensors'));
  assert.equal(r.status, 200);
  assert.equal(Number(r.headers['content-length']), model.length);
  assert.equal(r.body.length, 0);
  assert.equal(hub.count(REPOS.tiny, 'model.safetensors').HEAD, 1);
  assert.equal(hub.bodyBytes(REPOS.tiny, 'model.safetensors'), 0);
});

test('Range: 206 + Content-Range, suffix and open ranges, 416', async () => {
  hub.reset();
  const url = hub.fileUrl(REPOS.tiny, 'model.safetensors');
  let r = await request('GET', url, { Range: 'bytes=0-7' });
  assert.equal(r.status, 206);
  assert.equal(r.headers['content-range'], `bytes 0-7/${model.length}`);
  assert.equal(Number(r.headers['content-length']), 8);
  assert.ok(r.body.equals(model.subarray(0, 8)));
  r = await request('GET', url, { Range: 'bytes=-4' });
  assert.equal(r.status, 206);
  assert.ok(r.body.equals(model.subarray(model.length - 4)));
  r = await request('GET', url, { Range: `bytes=${model.length - 3}-` });
  assert.equal(r.status, 206);
  assert.equal(r.body.length, 3);
  r = await request('GET', url, { Range: `bytes=${model.length}-` });
  assert.equal(r.status, 416);
  assert.equal(r.headers['content-range'], `bytes */${model.length}`);
  r = await request('HEAD', url, { Range: 'bytes=0-99' });
  assert.equal(r.status, 206);
  assert.equal(Number(r.headers['content-length']), 100);
  const c = hub.count(REPOS.tiny, 'model.safetensors');
  assert.equal(c.bodyBytes, 8 + 4 + 3);
  assert.deepEqual(c.ranges.slice(0, 2), ['bytes=0-7', 'bytes=-4']);
});

test('If-None-Match with the ETag: 304', async () => {
  const url = hub.fileUrl(REPOS.tiny, 'tokenizer.json');
  const first = await request('HEAD', url);
  const r = await request('GET', url, { 'If-None-Match': first.headers.etag });
  assert.equal(r.status, 304);
  assert.equal(r.body.length, 0);
});

test('OPTIONS preflight allows Range from any origin', async () => {
  const r = await request('OPTIONS', hub.fileUrl(REPOS.tiny, 'model.safetensors'), {
    Origin: 'http://127.0.0.1:1',
    'Access-Control-Request-Method': 'GET',
    'Access-Control-Request-Headers': 'range',
  });
  assert.equal(r.status, 204);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  assert.match(r.headers['access-control-allow-methods'], /GET/);
  assert.match(r.headers['access-control-allow-headers'], /range/i);
});

test('404s: config.json of the f32 repo, unknown repo, unknown file, other paths', async () => {
  let r = await request('GET', hub.fileUrl(REPOS.tinyF32, 'config.json'));
  assert.equal(r.status, 404);
  assert.equal(r.headers['access-control-allow-origin'], '*', '404s carry CORS headers too');
  r = await request('GET', hub.fileUrl(REPOS.tinyF32, 'tokenizer.json'));
  assert.equal(r.status, 200);
  r = await request('GET', hub.fileUrl('nobody/nothing', 'config.json'));
  assert.equal(r.status, 404);
  assert.equal(r.headers['x-error-code'], 'RepoNotFound');
  r = await request('GET', hub.fileUrl(REPOS.tiny, 'pytorch_model.bin'));
  assert.equal(r.status, 404);
  assert.equal(r.headers['x-error-code'], 'EntryNotFound');
  r = await request('GET', hub.fileUrl(REPOS.tiny, 'golden.json'));
  assert.equal(r.status, 404, 'fixture goldens are not part of the repo');
  r = await request('GET', `${hub.url}/`);
  assert.equal(r.status, 404);
});

test('config.json and tokenizer.json are the fixtures', async () => {
  const cfg = await request('GET', hub.fileUrl(REPOS.tiny, 'config.json'));
  assert.equal(JSON.parse(cfg.body).n_layer, 4);
  const tok = await request('GET', hub.fileUrl(REPOS.tiny, 'tokenizer.json'));
  assert.ok(tok.body.equals(fs.readFileSync(path.join(FIXTURES, 'tiny-gpt2', 'tokenizer.json'))));
});

test('corrupt repos: truncated and garbage model.safetensors', async () => {
  const t = await request('GET', hub.fileUrl(REPOS.corrupt, 'model.safetensors'));
  assert.equal(t.status, 200);
  assert.ok(t.body.length < model.length);
  assert.ok(t.body.equals(model.subarray(0, t.body.length)), 'a prefix of the real file');
  const headerLen = Number(model.readBigUInt64LE(0));
  assert.ok(t.body.length > 8 + headerLen, 'the header is intact, the data is cut');
  const g = await request('GET', hub.fileUrl(REPOS.garbage, 'model.safetensors'));
  assert.equal(g.status, 200);
  assert.ok(Number(g.body.readBigUInt64LE(0)) > g.body.length, 'header length exceeds the file');
});

test('throttled repo streams slowly but completely', async () => {
  const t0 = Date.now();
  const r = await request('GET', hub.fileUrl(REPOS.slow, 'config.json'));
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).n_layer, 4);
  assert.ok(Date.now() - t0 < 5_000);
});

test('redirect repo: 302 to a CDN origin with X-Linked-Size; the CDN honours Range and CORS', async () => {
  hub.reset();
  const r = await request('HEAD', hub.fileUrl(REPOS.redirect, 'model.safetensors'));
  assert.equal(r.status, 302);
  assert.equal(Number(r.headers['x-linked-size']), model.length);
  assert.equal(r.headers['access-control-allow-origin'], '*');
  const loc = r.headers.location;
  assert.ok(loc.startsWith(hub.cdnUrl) && hub.cdnUrl !== hub.url, `redirects to another origin: ${loc}`);
  const g = await request('GET', loc, { Range: 'bytes=0-7' });
  assert.equal(g.status, 206);
  assert.ok(g.body.equals(model.subarray(0, 8)));
  assert.equal(g.headers['access-control-allow-origin'], '*');
  const c = hub.count(REPOS.redirect, 'model.safetensors');
  assert.equal(c.HEAD, 1);
  assert.equal(c.GET, 1);
  assert.equal(c.bodyBytes, 8);
  const cfg = await request('GET', hub.fileUrl(REPOS.redirect, 'config.json'));
  assert.equal(cfg.status, 200, 'small files are not redirected');
});
