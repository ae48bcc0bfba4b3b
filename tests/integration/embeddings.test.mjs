// embeddings.test.mjs - POST /v1/embeddings through the gateway: vectors as
// floats or base64, the target's model name upstream, usage, the body's
// checks and the access log.

import assert from 'node:assert/strict';

import { assertError, test, useGateway } from './lib/harness.mjs';

const ctx = useGateway({ workers: 2 });
let key; let keyId;

async function embed(body, headers) {
  if (!key) ({ key, id: keyId } = await ctx.gw.createKey({ name: 'embed' }));
  return ctx.gw.post('/v1/embeddings', key, { model: 'demo-embed', ...body }, headers);
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

function decodeBase64(s) {
  const bytes = Buffer.from(s, 'base64');
  const out = [];
  for (let i = 0; i < bytes.length; i += 4) out.push(bytes.readFloatLE(i));
  return out;
}

test('embeddings come back as one unit vector of floats per input', async () => {
  const res = await embed({ input: ['one two', 'three'], encoding_format: 'float' });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'], /application\/json/);
  const body = res.json();
  assert.equal(body.object, 'list');
  assert.equal(body.data.length, 2);
  body.data.forEach((d, i) => {
    assert.equal(d.object, 'embedding');
    assert.equal(d.index, i);
    assert.equal(d.embedding.length, 8);
    assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-5);
  });
  assert.notDeepEqual(body.data[0].embedding, body.data[1].embedding);
  assert.deepEqual(body.usage, { prompt_tokens: 3, total_tokens: 3 });
});

test('the upstream receives the target model name', async () => {
  const body = (await embed({ input: 'x' })).json();
  assert.equal(body.model, 'mock-embed-v1');
});

test('the same input gets the same vector every time', async () => {
  const a = (await embed({ input: 'stable input' })).json().data[0].embedding;
  const b = (await embed({ input: ['other', 'stable input'] })).json().data[1].embedding;
  assert.deepEqual(a, b);
});

test('base64 embeddings decode to the same float32 values', async () => {
  const floats = (await embed({ input: 'decode me', encoding_format: 'float' })).json().data[0].embedding;
  const res = await embed({ input: 'decode me', encoding_format: 'base64' });
  assert.equal(res.status, 200, res.text);
  const b64 = res.json().data[0].embedding;
  assert.equal(typeof b64, 'string');
  assert.deepEqual(decodeBase64(b64), floats.map(Math.fround));
});

test('dimensions reaches the upstream', async () => {
  const res = await embed({ input: 'x', dimensions: 24 });
  assert.equal(res.json().data[0].embedding.length, 24);
});

test('token ids are accepted as input', async () => {
  const res = await embed({ input: [101, 2023, 2003, 102] });
  assert.equal(res.status, 200, res.text);
  const body = res.json();
  assert.equal(body.data.length, 1);
  assert.equal(body.usage.prompt_tokens, 4);
});

test('a large batch comes back whole', async () => {
  const input = Array.from({ length: 200 }, (_, i) => `input number ${i}`);
  const res = await embed({ input, dimensions: 256, encoding_format: 'float' });
  assert.equal(res.status, 200);
  const body = res.json();
  assert.equal(body.data.length, 200);
  assert.ok(body.data.every((d, i) => d.index === i && d.embedding.length === 256));
  assert.equal(body.usage.prompt_tokens, 600);
});

test('an embeddings request without input is refused with 400', async () => {
  assertError(assert, await embed({}), 400, 'missing_required_parameter', { param: 'input' });
});

test('an embeddings request without model is refused with 400', async () => {
  if (!key) await embed({ input: 'warm up' });
  const res = await ctx.gw.post('/v1/embeddings', key, { input: 'x' });
  assertError(assert, res, 400, 'missing_required_parameter', { param: 'model' });
});

test('an upstream 4xx on embeddings is passed through', async () => {
  const res = await embed({ input: 'x', encoding_format: 'hex' });
  assert.equal(res.status, 400);
  assert.equal(res.json().error.code, 'invalid_encoding_format');
});

test('an upstream 5xx on embeddings becomes 502', async () => {
  assertError(assert, await embed({ input: 'x' }, { 'x-mock-status': '503' }), 502, 'upstream_error');
});

test('the access log records an embeddings request with its usage', async () => {
  await embed({ input: ['a b', 'c d e'] }, { 'x-request-id': 'embed-log-1' });
  const rec = await ctx.gw.accessRecord('embed-log-1');
  assert.deepEqual(
    [rec.method, rec.path, rec.status, rec.key, rec.model, rec.target, rec.stream, rec.in, rec.out],
    ['POST', '/v1/embeddings', 200, keyId, 'demo-embed', 'local/mock-embed-v1', 0, 5, 0], rec.line);
});
