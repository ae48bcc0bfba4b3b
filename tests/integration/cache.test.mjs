// cache.test.mjs - the response cache: a repeated request is answered
// from state_dir/cache without calling the upstream (x-aigw-cache: hit),
// also as a stream; requests that differ in anything that changes the
// answer never share an entry; TTL, Cache-Control, errors and cut streams;
// usage of a hit; aigwctl cache stats and purge; /metrics.

import assert from 'node:assert/strict';

import { eventually, freePort, request, sleep, test, useGateway } from './lib/harness.mjs';

const metricsPort = await freePort();
const ctx = useGateway({
  cache: { max_size: '64m' },
  metrics: `127.0.0.1:${metricsPort}`,
  models: [
    { name: 'cached', cache: { ttl: '10m' }, targets: [{ provider: 'local', model: 'mock-small' }] },
    { name: 'cached2', cache: { ttl: '10m' }, targets: [{ provider: 'local', model: 'mock-small' }] },
    { name: 'short', cache: { ttl: '1s' }, targets: [{ provider: 'local', model: 'mock-small' }] },
    { name: 'det', cache: { ttl: '10m', when: 'deterministic' }, targets: [{ provider: 'local', model: 'mock-small' }] },
    { name: 'emb', cache: { ttl: '10m' }, targets: [{ provider: 'local', model: 'mock-embed-v1' }] },
  ],
}, async (gw, c) => { c.key = (await gw.createKey()).key; });

let n = 0;
// A request body no other test sends.
const fresh = (extra = {}) => ({
  model: 'cached', messages: [{ role: 'user', content: `question ${process.pid} ${++n}` }], ...extra,
});

async function upstreamCalls() {
  const r = await request(ctx.gw.mock.port, { method: 'GET', path: '/mock/stats' });
  return r.json().chat;
}

const chat = (body, headers) => ctx.gw.post('/v1/chat/completions', ctx.key, body, headers);

// The content of a streamed answer, and its events.
function streamed(res) {
  assert.equal(res.status, 200, res.text);
  assert.equal(res.events.at(-1).data, '[DONE]');
  const chunks = res.events.filter((e) => e.json);
  return {
    content: chunks.map((e) => e.json.choices?.[0]?.delta?.content ?? '').join(''),
    roles: chunks.map((e) => e.json.choices?.[0]?.delta?.role).filter(Boolean),
    finish: chunks.map((e) => e.json.choices?.[0]?.finish_reason).filter(Boolean),
    usage: chunks.find((e) => e.json.usage)?.json.usage ?? null,
  };
}

test('a repeated request is a hit: same answer, no upstream call, x-aigw-cache: hit', async () => {
  const body = fresh();
  const before = await upstreamCalls();
  const a = await chat(body);
  assert.equal(a.status, 200, a.text);
  assert.equal(a.headers['x-aigw-cache'], 'miss');
  assert.ok(a.headers['x-aigw-target']);
  assert.equal(await upstreamCalls(), before + 1);
  const b = await chat(body);
  assert.equal(b.status, 200, b.text);
  assert.equal(b.headers['x-aigw-cache'], 'hit');
  assert.equal(b.headers['x-aigw-target'], undefined, 'a hit calls no target');
  assert.deepEqual(b.json(), a.json());
  assert.equal(await upstreamCalls(), before + 1, 'the mock saw no second request');
});

test('a model without cache: sends no x-aigw-cache and always calls the upstream', async () => {
  const body = fresh({ model: 'demo' });
  const before = await upstreamCalls();
  const a = await chat(body);
  const b = await chat(body);
  assert.equal(a.headers['x-aigw-cache'], undefined);
  assert.equal(b.headers['x-aigw-cache'], undefined);
  assert.equal(await upstreamCalls(), before + 2);
});

test('the same JSON with its keys in another order, or another stream, user or stream_options, is a hit', async () => {
  const body = fresh({ temperature: 0, max_tokens: 20 });
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'miss');
  const reordered = `{"max_tokens": 20.0, "messages": ${JSON.stringify(body.messages)}, "temperature": 0.0, "model": "cached"}`;
  const r = await ctx.gw.post('/v1/chat/completions', ctx.key, reordered, { 'Content-Type': 'application/json' });
  assert.equal(r.headers['x-aigw-cache'], 'hit', r.text);
  assert.equal((await chat({ ...body, user: 'someone-else' })).headers['x-aigw-cache'], 'hit');
  const s = await chat({ ...body, stream: true, stream_options: { include_usage: true } });
  assert.equal(s.headers['x-aigw-cache'], 'hit');
});

test('requests that differ in anything that changes the answer never share an entry', async () => {
  const base = fresh({ temperature: 0.2, max_tokens: 30, top_p: 1 });
  assert.equal((await chat(base)).headers['x-aigw-cache'], 'miss');
  const variants = [
    { ...base, temperature: 0.3 },
    { ...base, max_tokens: 31 },
    { ...base, top_p: 0.9 },
    { ...base, seed: 7 },
    { ...base, stop: ['\n'] },
    { ...base, n: 2 },
    { ...base, response_format: { type: 'json_object' } },
    { ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] },
    { ...base, tool_choice: 'none' },
    { ...base, model: 'cached2' },
    { ...base, messages: [...base.messages, { role: 'user', content: 'and more' }] },
    { ...base, messages: [{ role: 'system', content: base.messages[0].content }] },
    { ...base, messages: [{ ...base.messages[0], content: `${base.messages[0].content}.` }] },
  ];
  for (const v of variants) {
    const before = await upstreamCalls();
    const r = await chat(v);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-aigw-cache'], 'miss', `variant ${JSON.stringify(v)}`);
    assert.equal(await upstreamCalls(), before + 1);
  }
  // and each of them is now an entry of its own
  for (const v of variants) assert.equal((await chat(v)).headers['x-aigw-cache'], 'hit');
  assert.equal((await chat(base)).headers['x-aigw-cache'], 'hit');
});

test('a streamed miss is stored whole and replayed as a stream identical in content', async () => {
  const body = fresh({ stream: true, stream_options: { include_usage: true } });
  const before = await upstreamCalls();
  const a = await chat(body, { 'x-mock-chunks': '9' });
  assert.equal(a.headers['x-aigw-cache'], 'miss');
  const orig = streamed(a);
  const b = await chat(body);
  assert.equal(b.headers['x-aigw-cache'], 'hit');
  assert.match(b.headers['content-type'], /text\/event-stream/);
  const again = streamed(b);
  assert.equal(await upstreamCalls(), before + 1);
  assert.equal(again.content, orig.content);
  assert.equal(again.content, 'tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 tok8 ');
  assert.deepEqual(again.roles, ['assistant']);
  assert.deepEqual(again.finish, orig.finish);
  assert.deepEqual(again.usage, orig.usage);
  // Content comes in pieces, as a stream does.
  assert.ok(b.events.filter((e) => e.json?.choices?.[0]?.delta?.content).length > 1);
  // The same entry, asked for without a stream: one chat.completion.
  const c = await chat({ ...body, stream: false });
  assert.equal(c.headers['x-aigw-cache'], 'hit');
  assert.equal(c.json().object, 'chat.completion');
  assert.equal(c.json().choices[0].message.content, orig.content);
  assert.equal(c.json().choices[0].finish_reason, 'stop');
});

test('a non-streamed answer replays as a stream; usage only when include_usage asks', async () => {
  const body = fresh();
  const a = await chat(body, { 'x-mock-chunks': '4' });
  const text = a.json().choices[0].message.content;
  const s = await chat({ ...body, stream: true });
  assert.equal(s.headers['x-aigw-cache'], 'hit');
  const got = streamed(s);
  assert.equal(got.content, text);
  assert.equal(got.usage, null, 'no usage chunk unless asked');
  const u = streamed(await chat({ ...body, stream: true, stream_options: { include_usage: true } }));
  assert.deepEqual(u.usage, a.json().usage);
});

test('Cache-Control: no-cache skips the lookup but stores; no-store does neither', async () => {
  const body = fresh();
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'miss');
  let before = await upstreamCalls();
  const nc = await chat(body, { 'Cache-Control': 'no-cache' });
  assert.equal(nc.headers['x-aigw-cache'], 'bypass');
  assert.equal(await upstreamCalls(), before + 1);
  // no-cache stored its answer: the next plain request gets that one
  const hit = await chat(body);
  assert.equal(hit.headers['x-aigw-cache'], 'hit');
  assert.equal(hit.json().id, nc.json().id);

  const other = fresh();
  before = await upstreamCalls();
  const ns = await chat(other, { 'Cache-Control': 'max-age=0, no-store' });
  assert.equal(ns.headers['x-aigw-cache'], 'bypass');
  assert.equal((await chat(other, { 'Cache-Control': 'no-store' })).headers['x-aigw-cache'], 'bypass');
  assert.equal(await upstreamCalls(), before + 2);
  assert.equal((await chat(other)).headers['x-aigw-cache'], 'miss', 'no-store stored nothing');
});

test('entries expire after their ttl', async () => {
  const body = fresh({ model: 'short' });
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'miss');
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'hit');
  await sleep(1300);
  const before = await upstreamCalls();
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'miss');
  assert.equal(await upstreamCalls(), before + 1);
});

test('errors and cut streams are never stored', async () => {
  const body = fresh();
  const e = await chat(body, { 'x-mock-status': '400' });
  assert.equal(e.status, 400);
  assert.equal((await chat(body, { 'x-mock-status': '500' })).status, 502);
  const cut = await chat({ ...body, stream: true }, { 'x-mock-drop-after': '2' });
  assert.equal(cut.status, 200);
  assert.notEqual(cut.events.at(-1)?.data, '[DONE]');
  const ok = await chat(body);
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['x-aigw-cache'], 'miss', 'nothing was stored before');
});

test('when: deterministic caches only temperature 0 or a seed', async () => {
  const warm = fresh({ model: 'det', temperature: 0.7 });
  await chat(warm);
  assert.equal((await chat(warm)).headers['x-aigw-cache'], undefined);
  const cold = fresh({ model: 'det', temperature: 0 });
  assert.equal((await chat(cold)).headers['x-aigw-cache'], 'miss');
  assert.equal((await chat(cold)).headers['x-aigw-cache'], 'hit');
  const seeded = fresh({ model: 'det', seed: 42 });
  await chat(seeded);
  assert.equal((await chat(seeded)).headers['x-aigw-cache'], 'hit');
});

test('embeddings are cached too, apart from chat', async () => {
  const body = { model: 'emb', input: `embed me ${process.pid}` };
  const a = await ctx.gw.post('/v1/embeddings', ctx.key, body);
  assert.equal(a.headers['x-aigw-cache'], 'miss');
  const b = await ctx.gw.post('/v1/embeddings', ctx.key, body);
  assert.equal(b.headers['x-aigw-cache'], 'hit');
  assert.deepEqual(b.json(), a.json());
});

test('a hit counts as a request with zero upstream tokens, marked cached', async () => {
  const body = fresh();
  const miss = await chat(body);
  const u0 = await eventually(async () => {
    const u = await ctx.gw.ctlJson(['usage']);
    return u.requests > 0 ? u : null;
  });
  await sleep(700); // the master drains the ring every 500 ms
  const before = await ctx.gw.ctlJson(['usage']);
  const hit = await chat(body, { 'x-request-id': `cache-hit-${process.pid}` });
  assert.equal(hit.headers['x-aigw-cache'], 'hit');
  assert.ok(miss.json().usage.prompt_tokens > 0 && u0);
  await eventually(async () => (await ctx.gw.ctlJson(['usage'])).requests === before.requests + 1,
    { what: 'the hit is counted' });
  const after = await ctx.gw.ctlJson(['usage']);
  assert.equal(after.input_tokens, before.input_tokens);
  assert.equal(after.output_tokens, before.output_tokens);
  const rec = await ctx.gw.accessRecord(`cache-hit-${process.pid}`);
  const line = JSON.parse(rec.line.slice(rec.line.indexOf('{')));
  assert.equal(line.cached, true);
  assert.equal(line.input_tokens, 0);
  assert.equal(line.target, null);
});

test('aigwctl cache stats and purge, by model and all; /metrics counts', async () => {
  await chat(fresh({ model: 'cached2' }));
  const st = await ctx.gw.ctlJson(['cache', 'stats']);
  assert.equal(st.enabled, true);
  assert.equal(st.max_size, 64 * 1024 * 1024);
  assert.ok(st.entries > 0 && st.bytes > 0 && st.hits > 0 && st.misses > 0 && st.stores > 0);
  const byModel = Object.fromEntries(st.models.map((m) => [m.model, m]));
  assert.ok(byModel.cached.entries > 0 && byModel.cached.hits > 0);
  assert.equal(byModel.cached.ttl_ms, 600000);
  assert.ok(byModel.cached2.entries >= 1);
  assert.equal(st.entries, st.models.reduce((s, m) => s + m.entries, 0));

  const text = await ctx.gw.ctl(['cache', 'stats']);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^MODEL\s+ENTRIES\s+BYTES\s+HITS\s+MISSES/m);

  const m = await request(metricsPort, { method: 'GET', path: '/metrics' });
  assert.match(m.text, /^aigw_cache_hits_total\{model="cached"\} [1-9]\d*$/m);
  assert.match(m.text, /^aigw_cache_misses_total\{model="cached"\} [1-9]\d*$/m);
  assert.match(m.text, /^aigw_cache_stores_total\{model="cached"\} [1-9]\d*$/m);
  assert.match(m.text, /^aigw_cache_evictions_total\{model="cached",reason="size"\} \d+$/m);

  const p = await ctx.gw.ctlJson(['cache', 'purge', '--model', 'cached2']);
  assert.equal(p.removed, byModel.cached2.entries);
  const st2 = await ctx.gw.ctlJson(['cache', 'stats']);
  assert.equal(st2.models.find((x) => x.model === 'cached2').entries, 0);
  assert.equal(st2.models.find((x) => x.model === 'cached').entries, byModel.cached.entries);

  const all = await ctx.gw.ctlJson(['cache', 'purge']);
  assert.ok(all.removed >= byModel.cached.entries);
  assert.equal((await ctx.gw.ctlJson(['cache', 'stats'])).entries, 0);
  const body = fresh();
  await chat(body);
  assert.equal((await chat(body)).headers['x-aigw-cache'], 'hit', 'the cache works after a purge');
});

test('a key or tenant in cache.bypass is never answered from the cache, nor stored', async () => {
  const { gw } = ctx;
  const trusted = await gw.createKey();
  gw.rewriteConfig({ cache: { max_size: '64m', bypass: { keys: [trusted.id], tenants: ['nobody'] } } });
  assert.equal((await gw.ctl(['reload'])).code, 0);
  try {
    const body = fresh();
    const before = await upstreamCalls();
    for (let i = 0; i < 2; i++) {
      const r = await gw.post('/v1/chat/completions', trusted.key, body);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-aigw-cache'], 'bypass');
    }
    assert.equal(await upstreamCalls(), before + 2, 'both went upstream');
    // Nothing was stored for it: another key misses, then hits.
    assert.equal((await chat(body)).headers['x-aigw-cache'], 'miss');
    assert.equal((await chat(body)).headers['x-aigw-cache'], 'hit');
  } finally {
    gw.rewriteConfig({ cache: { max_size: '64m' } });
    assert.equal((await gw.ctl(['reload'])).code, 0);
  }
});
