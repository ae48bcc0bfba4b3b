// errors.test.mjs - every error the API answers, in OpenAI's shape
// {"error": {message, type, param, code}}, and that the gateway goes on
// serving after each: client mistakes (400, 401, 403, 404, 405), upstream
// failures (502, 504), upstream 4xx passed through, and a stream that
// breaks in the middle.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { assertError, freePort, sleep, startGateway, startMock, test } from './lib/harness.mjs';

let gw; let key; let goneMock;

before(async () => {
  goneMock = await startMock();
  const nobody = await freePort();
  gw = await startGateway({
    workers: 2,
    upstream: { max_response_size: '64k' },
    providers: [
      { name: 'gone', base_url: goneMock.base },
      { name: 'nobody', base_url: `http://127.0.0.1:${nobody}/v1` },
    ],
    models: [
      { name: 'gone', targets: [{ provider: 'gone', model: 'x' }] },
      { name: 'nobody', targets: [{ provider: 'nobody', model: 'x' }] },
      { name: 'slow', timeouts: { first_byte: '300ms' }, targets: [{ provider: 'local', model: 'mock-small' }] },
      { name: 'total', timeouts: { first_byte: '30s', idle: '30s', total: '700ms' }, targets: [{ provider: 'local', model: 'mock-small' }] },
      { name: 'idle', timeouts: { idle: '300ms' }, targets: [{ provider: 'local', model: 'mock-small' }] },
      idleTts,
    ],
  });
  ({ key } = await gw.createKey());
});
after(async () => {
  await gw?.stop();
  await goneMock?.stop();
});

const auth = (k = key) => ({ Authorization: `Bearer ${k}` });
const messages = [{ role: 'user', content: 'hi' }];

// The gateway still answers other connections.
async function stillServes() {
  assert.equal((await gw.get('/healthz')).status, 200);
  const res = await gw.chat(key, {});
  assert.equal(res.status, 200, `a normal request after the error: ${res.status} ${res.text}`);
}

function postRaw(path, body, headers = auth()) {
  return gw.request({ method: 'POST', path, headers: { 'Content-Type': 'application/json', ...headers }, body: Buffer.from(body) });
}

// ------------------------------------------------------------------ 400

test('malformed JSON is refused with 400 invalid_json', async () => {
  for (const body of ['{"model": "demo", "messages": [', 'not json', '{"model":"demo"} trailing', '']) {
    assertError(assert, await postRaw('/v1/chat/completions', body), 400, 'invalid_json', { type: 'invalid_request_error' });
  }
  await stillServes();
});

test('a JSON body that is not an object is refused with 400 invalid_json', async () => {
  for (const body of ['[]', '"demo"', '42', 'null']) {
    assertError(assert, await postRaw('/v1/chat/completions', body), 400, 'invalid_json');
  }
});

test('a chat request without model is refused with 400 and param model', async () => {
  assertError(assert, await gw.post('/v1/chat/completions', key, { messages }), 400, 'missing_required_parameter', { param: 'model' });
  assertError(assert, await gw.post('/v1/chat/completions', key, { model: 42, messages }), 400, 'missing_required_parameter', { param: 'model' });
  await stillServes();
});

test('a chat request without messages is refused with 400 and param messages', async () => {
  assertError(assert, await gw.post('/v1/chat/completions', key, { model: 'demo' }), 400, 'missing_required_parameter', { param: 'messages' });
  assertError(assert, await gw.post('/v1/chat/completions', key, { model: 'demo', messages: 'hi' }), 400, 'missing_required_parameter', { param: 'messages' });
});

test('a stream field that is not a boolean is refused with 400 invalid_type', async () => {
  assertError(assert, await gw.chat(key, { stream: 'yes' }), 400, 'invalid_type', { param: 'stream' });
  assert.equal((await gw.chat(key, { stream: null })).status, 200, 'null is allowed');
});

test('an embeddings request without input is refused with 400 and param input', async () => {
  assertError(assert, await gw.post('/v1/embeddings', key, { model: 'demo-embed' }), 400, 'missing_required_parameter', { param: 'input' });
});

// ------------------------------------------------------------------ 401

test('a request without a key is refused with 401 missing_api_key', async () => {
  const res = await gw.post('/v1/chat/completions', null, { model: 'demo', messages });
  assertError(assert, res, 401, 'missing_api_key');
  assertError(assert, await gw.get('/v1/models'), 401, 'missing_api_key');
  assertError(assert, await gw.get('/v1/models', null, { Authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }), 401, 'missing_api_key');
  await stillServes();
});

test('an unknown key is refused with 401 invalid_api_key', async () => {
  assertError(assert, await gw.chat('sk-aigw-not-a-real-key', {}), 401, 'invalid_api_key');
  assertError(assert, await gw.get('/v1/models', 'sk-aigw-not-a-real-key'), 401, 'invalid_api_key');
});

test('a disabled key is refused with 401 api_key_disabled', async () => {
  const k = await gw.createKey();
  await gw.ctl(['key', 'disable', k.id]);
  assertError(assert, await gw.chat(k.key, {}), 401, 'api_key_disabled');
  assertError(assert, await gw.get('/v1/models', k.key), 401, 'api_key_disabled');
});

test('the key is checked before the body', async () => {
  assertError(assert, await postRaw('/v1/chat/completions', 'not json', {}), 401, 'missing_api_key');
});

// ------------------------------------------------------------- 403 404 405

test('a model the key may not use is refused with 403 model_not_allowed', async () => {
  const k = await gw.createKey({ models: ['demo'] });
  assertError(assert, await gw.chat(k.key, { model: 'other' }), 403, 'model_not_allowed', { param: 'model' });
  await stillServes();
});

test('an unknown model is refused with 404 model_not_found', async () => {
  assertError(assert, await gw.chat(key, { model: 'no-such-model' }), 404, 'model_not_found', { param: 'model' });
  assertError(assert, await gw.post('/v1/embeddings', key, { model: 'no-such-model', input: 'x' }), 404, 'model_not_found');
  assertError(assert, await gw.get('/v1/models/no-such-model', key), 404, 'model_not_found');
  await stillServes();
});

// The message quotes the name, and a long one is cut: between
// characters, or the answer is invalid UTF-8, which JSON readers refuse.
test('an unknown model with a long non-ASCII name: the error is cut between characters', async () => {
  for (const model of ['x' + 'é'.repeat(600), '€'.repeat(400), 'xy' + '😀'.repeat(300)]) {
    const res = await gw.chat(key, { model });
    assertError(assert, res, 404, 'model_not_found');
    const text = new TextDecoder('utf-8', { fatal: true }).decode(res.body);
    const { message } = JSON.parse(text).error;
    assert.ok(message.length > 100 && !message.includes('\ufffd'), message);
  }
  await stillServes();
});

test('an unknown path is refused with 404 unknown_url', async () => {
  for (const [method, path] of [['GET', '/v1/nothing'], ['POST', '/v1/fine_tuning/jobs'], ['GET', '/'], ['GET', '/v1/chat/completions/extra']]) {
    const res = await gw.request({ method, path, headers: auth() });
    assertError(assert, res, 404, 'unknown_url');
  }
});

test('a wrong method is refused with 405 and an Allow header', async () => {
  const cases = [
    ['GET', '/v1/chat/completions', 'POST'],
    ['PUT', '/v1/embeddings', 'POST'],
    ['POST', '/v1/models', 'GET'],
    ['DELETE', '/v1/models/demo', 'GET'],
    ['POST', '/healthz', 'GET'],
  ];
  for (const [method, path, allow] of cases) {
    const res = await gw.request({ method, path, headers: auth() });
    assertError(assert, res, 405, 'method_not_allowed');
    assert.match(res.headers.allow ?? '', new RegExp(`\\b${allow}\\b`), `${method} ${path}: Allow ${res.headers.allow}`);
  }
  await stillServes();
});

test('/healthz answers without a key', async () => {
  const res = await gw.get('/healthz');
  assert.equal(res.status, 200);
  assert.deepEqual(res.json(), { status: 'ok' });
  assert.ok(res.headers['x-request-id']);
});

// ------------------------------------------------------------------ 502

test('an upstream nobody listens on gives 502 upstream_unreachable', async () => {
  const err = assertError(assert, await gw.chat(key, { model: 'nobody' }), 502, 'upstream_unreachable');
  assert.match(err.message, /nobody/, 'the message names the provider');
  assertError(assert, await gw.chat(key, { model: 'nobody', stream: true }), 502, 'upstream_unreachable');
  await stillServes();
});

test('a stopped upstream gives 502 upstream_unreachable', async () => {
  assert.equal((await gw.chat(key, { model: 'gone' })).status, 200, 'it answers while running');
  await goneMock.stop();
  assertError(assert, await gw.chat(key, { model: 'gone' }), 502, 'upstream_unreachable');
  assertError(assert, await gw.post('/v1/embeddings', key, { model: 'gone', input: 'x' }), 502, 'upstream_unreachable');
  await stillServes();
});

test('an upstream 5xx becomes 502 upstream_error', async () => {
  for (const status of ['500', '503']) {
    const err = assertError(assert, await gw.chat(key, {}, { 'x-mock-status': status }), 502, 'upstream_error');
    assert.match(err.message, /local/);
    assert.match(err.message, new RegExp(status));
  }
  assertError(assert, await gw.chat(key, { stream: true }, { 'x-mock-status': '500' }), 502, 'upstream_error');
  await stillServes();
});

test('an upstream 3xx becomes 502 upstream_error', async () => {
  assertError(assert, await gw.chat(key, {}, { 'x-mock-status': '302' }), 502, 'upstream_error');
});

test('an upstream that closes without answering gives 502', async () => {
  assertError(assert, await gw.chat(key, {}, { 'x-mock-drop-after': '0' }), 502);
  assertError(assert, await gw.chat(key, {}, { 'x-mock-drop-after': '40' }), 502);
  await stillServes();
});

test('an upstream answer over upstream.max_response_size gives 502', async () => {
  const input = Array.from({ length: 100 }, (_, i) => `input ${i}`);
  const res = await gw.post('/v1/embeddings', key, { model: 'demo-embed', input, dimensions: 256, encoding_format: 'float' });
  assertError(assert, res, 502);
  await stillServes();
});

// ------------------------------------------------------------------ 504

test('an upstream slower than timeouts.first_byte gives 504 upstream_timeout', async () => {
  const err = assertError(assert, await gw.chat(key, { model: 'slow' }, { 'x-mock-delay-ms': '3000' }), 504, 'upstream_timeout');
  assert.match(err.message, /first.byte/i, 'the message says which timeout');
  assert.equal((await gw.chat(key, { model: 'slow' }, { 'x-mock-delay-ms': '50' })).status, 200, 'a fast answer still passes');
  await stillServes();
});

test('a stream whose first byte is late gives 504 before any event', async () => {
  const res = await gw.chat(key, { model: 'slow', stream: true }, { 'x-mock-delay-ms': '3000' });
  assertError(assert, res, 504, 'upstream_timeout');
});

test('an upstream answer longer than timeouts.total gives 504 upstream_timeout', async () => {
  assertError(assert, await gw.chat(key, { model: 'total' }, { 'x-mock-delay-ms': '2500' }), 504, 'upstream_timeout');
  await stillServes();
});

test('a stream idle longer than timeouts.idle ends with an upstream_timeout event', async () => {
  const res = await gw.chat(key, { model: 'idle', stream: true }, { 'x-mock-chunk-delay-ms': '2500', 'x-mock-chunks': '3' });
  assert.equal(res.status, 200);
  const last = res.events.at(-1);
  assert.equal(last.json?.error?.code, 'upstream_timeout', res.text);
  assert.equal(res.events.filter((e) => e.data === '[DONE]').length, 0);
  await stillServes();
});

// A provider that keeps sending (8 KiB of audio a millisecond) to a
// client that stops reading for longer than timeouts.idle, several times:
// once the sockets between are full, the worker's writes wait for the
// client, and what the provider sends meanwhile waits in the upstream
// socket.  That is not the provider's silence: the answer arrives whole.
// Once through the worker's own HTTP/1.1 client and once through libcurl
// (any proxy variable in aigwd's environment sends every transfer there,
// worker/upstream.c).
const idleTts = { name: 'idle-tts', type: 'audio', timeouts: { idle: '300ms' }, targets: [{ provider: 'local', model: 'mock-tts' }] };
const SPEECH_BYTES = 8 * 1024 * 1024;

async function slowReader(g) {
  const k = (await g.createKey()).key;
  const conn = await g.conn();
  try {
    const body = JSON.stringify({ model: 'idle-tts', input: 'hi', voice: 'alloy' });
    await conn.send({ method: 'POST', path: '/v1/audio/speech', body: Buffer.from(body),
      headers: { ...auth(k), 'Content-Type': 'application/json', 'x-mock-speech-bytes': String(SPEECH_BYTES), 'x-mock-chunk-delay-ms': '1' } });
    for (let i = 0; i < 3; i++) {
      conn.sock.pause();
      await sleep(1000);
      conn.sock.resume();
      await sleep(50);
    }
    const res = await conn.readResponse({ timeoutMs: 20000 });
    assert.equal(res.status, 200);
    assert.equal(res.body.length, SPEECH_BYTES, 'the whole audio');
  } finally {
    conn.close();
  }
}

test('a client that stops reading for longer than timeouts.idle still gets the whole answer', async () => {
  await slowReader(gw);
  await stillServes();
});

test('the same through libcurl\'s transfers', async () => {
  const g = await startGateway({ env: { no_proxy: '127.0.0.1' }, models: [idleTts] });
  try {
    await slowReader(g);
  } finally {
    await g.stop();
  }
});

test('a stream longer than timeouts.total ends with an upstream_timeout event', async () => {
  const res = await gw.chat(key, { model: 'total', stream: true }, { 'x-mock-chunk-delay-ms': '250', 'x-mock-chunks': '10' });
  assert.equal(res.status, 200);
  assert.ok(res.events.some((e) => e.json?.choices?.[0]?.delta?.content), 'the stream began');
  assert.equal(res.events.at(-1).json?.error?.code, 'upstream_timeout', res.text);
  assert.equal(res.events.filter((e) => e.data === '[DONE]').length, 0);
  await stillServes();
});

// ------------------------------------------------------ passthrough 4xx

test('an upstream 4xx is passed through with its status and body', async () => {
  for (const status of [400, 404, 422, 429]) {
    const res = await gw.chat(key, {}, { 'x-mock-status': String(status) });
    assert.equal(res.status, status);
    const body = res.json();
    assert.equal(body.error.code, `mock_status_${status}`, 'the upstream body, not the gateway one');
    assert.equal(body.error.type, 'mock_error');
    assert.ok(res.headers['x-request-id']);
  }
  await stillServes();
});

test('an upstream 4xx to a stream request is passed through as JSON', async () => {
  const res = await gw.chat(key, { stream: true }, { 'x-mock-status': '429' });
  assert.equal(res.status, 429);
  assert.match(res.headers['content-type'], /application\/json/);
  assert.equal(res.json().error.code, 'mock_status_429');
});

// ------------------------------------------------------------ mid-stream

test('a stream the upstream drops ends with an upstream_disconnected event', async () => {
  const res = await gw.chat(key, { stream: true }, { 'x-mock-drop-after': '2' });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /text\/event-stream/);
  const ev = res.events;
  assert.equal(ev.filter((e) => e.json?.choices?.[0]?.delta?.content).length, 2);
  const last = ev.at(-1);
  assert.equal(last.json?.error?.code, 'upstream_disconnected', res.text);
  assert.equal(typeof last.json.error.message, 'string');
  assert.equal(typeof last.json.error.type, 'string');
  assert.equal(ev.filter((e) => e.data === '[DONE]').length, 0);
  await stillServes();
});

test('a stream the upstream drops before the first event gives 502', async () => {
  const res = await gw.chat(key, { stream: true }, { 'x-mock-drop-after': '0' });
  assertError(assert, res, 502);
  await stillServes();
});

// ------------------------------------------------------------- keep-alive

test('a connection stays open across API errors', async () => {
  const conn = await gw.conn();
  try {
    const body = { model: 'demo', messages };
    const steps = [
      [{ method: 'GET', path: '/v1/nothing' }, 404],
      [{ method: 'GET', path: '/v1/chat/completions' }, 405],
      [{ method: 'POST', path: '/v1/chat/completions', body }, 401],
      [{ method: 'POST', path: '/v1/chat/completions', headers: auth('sk-aigw-wrong'), body }, 401],
      [{ method: 'POST', path: '/v1/chat/completions', headers: auth(), body: { ...body, model: 'nope' } }, 404],
      [{ method: 'POST', path: '/v1/chat/completions', headers: auth(), body: { model: 'demo' } }, 400],
      [{ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-mock-status': '429' }, body }, 429],
      [{ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-mock-status': '500' }, body }, 502],
      [{ method: 'POST', path: '/v1/chat/completions', headers: auth(), body: { ...body, model: 'nobody' } }, 502],
      [{ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-mock-drop-after': '1' }, body: { ...body, stream: true } }, 200],
      [{ method: 'POST', path: '/v1/chat/completions', headers: auth(), body }, 200],
    ];
    for (const [req, status] of steps) {
      await conn.send(req);
      const res = await conn.readResponse();
      assert.equal(res.status, status, `${req.method} ${req.path} ${JSON.stringify(req.body ?? '')}: ${res.text}`);
      assert.notEqual(res.headers.connection, 'close', `${req.method} ${req.path} closed the connection`);
    }
    assert.equal(conn.ended, false);
  } finally {
    conn.close();
  }
});

test('an error is logged with its status in the access log', async () => {
  await gw.chat(key, { model: 'no-such-model' }, { 'x-request-id': 'err-log-404' });
  await gw.chat(key, {}, { 'x-request-id': 'err-log-502', 'x-mock-status': '503' });
  const a = await gw.accessRecord('err-log-404');
  assert.deepEqual([a.method, a.path, a.status, a.model], ['POST', '/v1/chat/completions', 404, 'no-such-model'], a.line);
  const b = await gw.accessRecord('err-log-502');
  assert.deepEqual([b.status, b.target], [502, 'local/mock-small'], `the status the client got: ${b.line}`);
});
