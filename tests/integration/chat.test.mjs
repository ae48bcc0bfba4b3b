// chat.test.mjs - POST /v1/chat/completions through the gateway: what the
// client gets back, streamed and not, and (through the mock's x-mock-echo)
// exactly what the gateway sent upstream: the target's model name, the
// provider's credential, no hop-by-hop headers, a request for usage.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';

import {
  HttpConn, UPSTREAM_KEY, assertError, startGateway, startMock, tempDir, test,
} from './lib/harness.mjs';

const FILE_KEY = 'sk-provider-from-a-file-0123456789';
let gw; let key; let keyId; let other; let keyDir;

before(async () => {
  // The mock behind "local" refuses anything but the provider credential.
  other = await startMock();
  keyDir = tempDir('aigw-chat-');
  const keyFile = path.join(keyDir, 'provider.key');
  fs.writeFileSync(keyFile, `${FILE_KEY}\n`, { mode: 0o600 });
  gw = await startGateway({
    workers: 2,
    requireKey: UPSTREAM_KEY,
    providers: [
      { name: 'filed', base_url: other.base, api_key_file: keyFile },
      { name: 'keyless', base_url: other.base, api_key_env: 'AIGW_TEST_SURELY_UNSET' },
    ],
    models: [
      { name: 'filed', targets: [{ provider: 'filed', model: 'mock-file' }] },
      { name: 'keyless', targets: [{ provider: 'keyless', model: 'mock-keyless' }] },
    ],
  });
  ({ key, id: keyId } = await gw.createKey({ name: 'chat' }));
});
after(async () => {
  await gw?.stop();
  await other?.stop();
  fs.rmSync(keyDir, { recursive: true, force: true });
});

const user = (content) => ({ role: 'user', content });

// What the mock received, from an echoed non-streamed answer.
async function echo(body, headers = {}) {
  const res = await gw.chat(key, body, { 'x-mock-echo': '1', ...headers });
  assert.equal(res.status, 200, res.text);
  return { res, seen: JSON.parse(res.json().choices[0].message.content) };
}

const contentOf = (events) => events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');
const contentEvents = (events) => events.filter((e) => e.json?.choices?.[0]?.delta?.content);
const pick = ({ method, path, status, key: k, model, target, stream, in: i, out }) =>
  ({ method, path, status, key: k, model, target, stream, in: i, out });
const usageEvents = (events) => events.filter((e) => e.json && e.json.usage && typeof e.json.usage === 'object');

// ------------------------------------------------------------ non-stream

test('a chat completion returns the upstream content and usage', async () => {
  const res = await gw.chat(key, { messages: [{ role: 'system', content: 'be brief' }, user('one two three')] });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'], /application\/json/);
  const body = res.json();
  assert.equal(body.object, 'chat.completion');
  assert.equal(body.choices[0].message.role, 'assistant');
  assert.equal(body.choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(body.choices[0].finish_reason, 'stop');
  assert.deepEqual(body.usage, { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 });
});

test('fields of the upstream answer the gateway does not know reach the client unchanged', async () => {
  // The mock's x-mock-stamp (what the bench measures with): when it read
  // the request and wrote the answer, in the answer's JSON.
  const res = await gw.chat(key, { messages: [user('hi')] }, { 'x-mock-stamp': '1' });
  assert.equal(res.status, 200, res.text);
  const [read, wrote] = res.json().x_mock_us;
  assert.ok(Number.isInteger(read) && Number.isInteger(wrote) && wrote >= read, res.text);
  assert.equal(res.json().choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
  // A stamp asked for with a value out of range is the mock's 400, passed on.
  assert.equal((await gw.chat(key, { messages: [user('hi')] }, { 'x-mock-stamp': '2' })).status, 400);
});

test('the upstream receives the target model name, not the client one', async () => {
  assert.equal((await echo({ model: 'demo' })).seen.body.model, 'mock-small');
  assert.equal((await echo({ model: 'other' })).seen.body.model, 'mock-large');
});

test('the upstream receives the request body otherwise unchanged', async () => {
  const body = {
    model: 'demo', messages: [user('a b'), { role: 'assistant', content: 'c' }, user('d "quoted" / é ✓')],
    temperature: 0.25, max_tokens: 17, user: 'end-user-1', metadata: { k: 'v' },
  };
  const { seen } = await echo(body);
  assert.equal(seen.method, 'POST');
  assert.equal(seen.path, '/v1/chat/completions');
  assert.deepEqual(seen.body, { ...body, model: 'mock-small' });
});

test('long prompts reach the upstream unchanged, wherever their escapes fall', async () => {
  // The body checks walk 16 and 8 bytes at a time: a quote, a backslash or
  // an escaped control character at every offset of such a step.
  const messages = [];
  for (let i = 0; i < 40; i++) {
    messages.push(user(`${'x'.repeat(i)}"\\\n\t\u0001é✓/${'y'.repeat(40 - i)}`));
  }
  for (const stream of [false, true]) {
    const body = { model: 'demo', messages, temperature: 0.5, stream };
    const res = await gw.chat(key, body, { 'x-mock-echo': '1' });
    assert.equal(res.status, 200, res.text);
    const reply = stream ? res.events[0].json.choices[0].delta : res.json().choices[0].message;
    const seen = JSON.parse(reply.content);
    assert.deepEqual(seen.body.messages, messages);
    assert.equal(seen.body.model, 'mock-small');
    if (stream) assert.equal(seen.body.stream_options?.include_usage, true);
  }
});

test('the upstream never reads the client\'s model name or unchecked messages out of an unusual body', async () => {
  // Bodies json-c takes but that a copy around the model's value would
  // send on meaning something else: the model named twice (a reader that
  // keeps the first would see the client's "other"), named once more with
  // an escape (json-c's last is "other": the upstream must get other's
  // target, not the client's word), a trailing comma next to the
  // stream_options the gateway adds, and the messages named twice (a
  // reader that keeps the first would see messages the gateway never
  // checked).
  const hi = '[{"role":"user","content":"hi"}]';
  const cases = [
    { body: `{"model":"other","messages":${hi},"model":"demo"}`, model: 'mock-small' },
    { body: `{"model":"demo","messages":${hi},"mod\\u0065l":"other"}`, model: 'mock-large' },
    { body: `{"model":"demo","messages":${hi},"stream":true,}`, model: 'mock-small', stream: true },
    { body: `{"messages":[{"role":"user","content":"other"}],"model":"demo","messages":${hi}}`, model: 'mock-small' },
  ];
  for (const { body, model, stream } of cases) {
    const res = await gw.post('/v1/chat/completions', key, body, { 'x-mock-echo': '1' });
    assert.equal(res.status, 200, `${body}: ${res.text}`);
    const reply = stream ? res.events[0].json.choices[0].delta : res.json().choices[0].message;
    const { raw } = JSON.parse(reply.content);
    const sent = JSON.parse(raw); // strict JSON, whatever json-c let through
    assert.equal(sent.model, model, raw);
    assert.equal(raw.split('"model"').length, 2, `one "model" member: ${raw}`);
    assert.equal(raw.split('"messages"').length, 2, `one "messages" member: ${raw}`);
    assert.doesNotMatch(raw, /other|\\u0065/, raw);
    if (stream) assert.equal(sent.stream_options.include_usage, true);
  }
});

test('the provider credential replaces the client key upstream', async () => {
  const { seen, res } = await echo({});
  assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  assert.equal(res.text.includes(key), false, 'the client key is not forwarded anywhere');
});

test('a provider credential can come from api_key_file', async () => {
  const { seen, res } = await echo({ model: 'filed' });
  assert.equal(seen.headers.authorization, `Bearer ${FILE_KEY}`);
  assert.equal(seen.body.model, 'mock-file');
  assert.equal(res.text.includes(key), false);
});

test('a provider without a credential gets no Authorization at all', async () => {
  const { seen, res } = await echo({ model: 'keyless' });
  assert.equal(seen.headers.authorization, undefined);
  assert.equal(res.text.includes(key), false, 'the client key is not forwarded');
});

test('hop-by-hop and credential headers are not forwarded upstream', async () => {
  const dropped = {
    Connection: 'keep-alive, x-named-in-connection',
    'Keep-Alive': 'timeout=5',
    'X-Named-In-Connection': 'drop me',
    TE: 'trailers',
    Trailer: 'x-trailer',
    Upgrade: 'websocket',
    'Proxy-Authorization': 'Basic dXNlcjpwYXNz',
    'Proxy-Authenticate': 'Basic',
    'Proxy-Connection': 'keep-alive',
    'Accept-Encoding': 'gzip, br',
    'X-Api-Key': 'sk-client-side-secret',
    'Api-Key': 'sk-client-side-secret',
    Cookie: 'session=abc',
    'X-Aigw-Debug': '1',
  };
  const { seen } = await echo({}, dropped);
  for (const name of Object.keys(dropped)) {
    assert.equal(seen.headers[name.toLowerCase()], undefined, `${name} was forwarded: ${seen.headers[name.toLowerCase()]}`);
  }
  assert.equal(JSON.stringify(seen).includes('sk-client-side-secret'), false);
});

test('end-to-end headers are forwarded upstream', async () => {
  const { seen } = await echo({}, { 'X-Trace-Tag': 'trace-42', 'OpenAI-Organization': 'org-1' });
  assert.equal(seen.headers['x-trace-tag'], 'trace-42');
  assert.equal(seen.headers['openai-organization'], 'org-1');
  assert.match(seen.headers['content-type'], /application\/json/);
});

test('a plain client x-request-id is reused in the answer and upstream', async () => {
  const { res, seen } = await echo({}, { 'x-request-id': 'client-req-0042' });
  assert.equal(res.headers['x-request-id'], 'client-req-0042');
  assert.equal(seen.headers['x-request-id'], 'client-req-0042');
});

test('a generated x-request-id is sent upstream and differs per request', async () => {
  const a = await echo({});
  const b = await echo({});
  assert.ok(a.res.headers['x-request-id']);
  assert.equal(a.seen.headers['x-request-id'], a.res.headers['x-request-id']);
  assert.notEqual(a.res.headers['x-request-id'], b.res.headers['x-request-id']);
});

test('an x-request-id that is not plain is replaced', async () => {
  const res = await gw.chat(key, {}, { 'x-request-id': 'has spaces; and "quotes"' });
  assert.equal(res.status, 200);
  assert.notEqual(res.headers['x-request-id'], 'has spaces; and "quotes"');
  assert.match(res.headers['x-request-id'], /^[A-Za-z0-9._:-]+$/);
  const long = 'x'.repeat(300);
  const res2 = await gw.chat(key, {}, { 'x-request-id': long });
  assert.notEqual(res2.headers['x-request-id'], long);
});

test('the access log escapes what a client put in a model name', async () => {
  const model = 'we"ird\\mo\u0001del\u001f\u00e9';
  const res = await gw.chat(key, { model }, { 'x-request-id': 'chat-log-escape' });
  assert.equal(res.status, 404, res.text);
  const rec = await gw.accessRecord('chat-log-escape');
  assert.equal(rec.model, model, rec.line);
  assert.ok(rec.line.includes('we\\"ird\\\\mo\\u0001del\\u001f\u00e9'), rec.line);
});

test('a client x-request-id of 64 characters is kept, one of 65 is not', async () => {
  const id64 = `a-${'0123456789'.repeat(6)}:.`;
  assert.equal(id64.length, 64);
  const res = await gw.chat(key, {}, { 'x-request-id': id64 });
  assert.equal(res.headers['x-request-id'], id64);
  const res65 = await gw.chat(key, {}, { 'x-request-id': `${id64}b` });
  assert.notEqual(res65.headers['x-request-id'], `${id64}b`);
});

test('the access log records a completion with its usage', async () => {
  await gw.chat(key, { messages: [user('one two three four')] }, { 'x-request-id': 'chat-log-1', 'x-mock-chunks': '3' });
  const rec = await gw.accessRecord('chat-log-1');
  assert.deepEqual(pick(rec), {
    method: 'POST', path: '/v1/chat/completions', status: 200, key: keyId, model: 'demo',
    target: 'local/mock-small', stream: 0, in: 4, out: 3,
  }, rec.line);
  assert.ok(Number.isInteger(rec.ttfb_ms) && Number.isInteger(rec.ms) && rec.ttfb_ms <= rec.ms, rec.line);
});

// ---------------------------------------------------------------- stream

test('a stream relays every chunk, the finish chunk and [DONE]', async () => {
  const res = await gw.chat(key, { stream: true });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/event-stream/);
  assert.equal(res.headers['transfer-encoding'], 'chunked');
  const ev = res.events;
  assert.equal(contentOf(ev), 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(contentEvents(ev).length, 5);
  assert.equal(contentEvents(ev)[0].json.choices[0].delta.role, 'assistant');
  for (const e of ev.slice(0, -1)) assert.equal(e.json.object, 'chat.completion.chunk');
  assert.equal(ev.at(-2).json.choices[0].finish_reason, 'stop');
  assert.equal(ev.at(-1).data, '[DONE]');
});

test('stream chunks reach the client as the upstream sends them', async () => {
  const res = await gw.chat(key, { stream: true }, { 'x-mock-chunk-delay-ms': '200', 'x-mock-chunks': '5' });
  assert.equal(res.status, 200);
  const chunks = contentEvents(res.events);
  assert.equal(chunks.length, 5);
  const spread = chunks.at(-1).t - chunks[0].t;
  // The mock spaces its five chunks 200 ms apart: 800 ms first to last.
  assert.ok(spread > 500, `first chunk only ${spread.toFixed(0)} ms before the last: the stream was buffered`);
  for (let i = 1; i < chunks.length; i++) {
    const gap = chunks[i].t - chunks[i - 1].t;
    assert.ok(gap > 100, `chunk ${i} came ${gap.toFixed(0)} ms after chunk ${i - 1}`);
  }
});

test('the first stream chunk arrives before the upstream has finished', async () => {
  const conn = await HttpConn.open(gw.port);
  try {
    await conn.send({ method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${key}`, 'x-mock-chunk-delay-ms': '250', 'x-mock-chunks': '4', Connection: 'close' }, body: { model: 'demo', stream: true, messages: [user('hi')] } });
    const t0 = performance.now();
    await conn.waitFor(() => conn.pending.includes('tok0'), 1000, 'the first chunk');
    const first = performance.now() - t0;
    const res = await conn.readResponse({ timeoutMs: 10000 });
    const total = performance.now() - t0;
    assert.equal(contentOf(res.events), 'tok0 tok1 tok2 tok3 ');
    assert.ok(total - first > 600, `first chunk at ${first.toFixed(0)} ms, end at ${total.toFixed(0)} ms`);
  } finally {
    conn.close();
  }
});

test('a stream carries no usage chunk unless the client asks for one', async () => {
  const res = await gw.chat(key, { stream: true });
  assert.equal(usageEvents(res.events).length, 0, res.text);
  assert.equal(res.events.filter((e) => Array.isArray(e.json?.choices) && e.json.choices.length === 0).length, 0);
  const res2 = await gw.chat(key, { stream: true, stream_options: { include_usage: false } });
  assert.equal(usageEvents(res2.events).length, 0, res2.text);
});

test('a stream ends with the usage chunk when the client asks for it', async () => {
  const res = await gw.chat(key, { stream: true, stream_options: { include_usage: true }, messages: [user('a b c')] });
  const ev = res.events;
  const usage = usageEvents(ev);
  assert.equal(usage.length, 1, res.text);
  assert.deepEqual(usage[0].json.choices, []);
  assert.deepEqual(usage[0].json.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  assert.equal(ev.at(-2), usage[0], 'the usage chunk comes just before [DONE]');
  assert.equal(ev.at(-1).data, '[DONE]');
  assert.equal(contentOf(ev), 'tok0 tok1 tok2 tok3 tok4 ');
});

test('the gateway asks the upstream for stream usage', async () => {
  for (const body of [{ stream: true }, { stream: true, stream_options: { include_usage: false } }]) {
    const res = await gw.chat(key, body, { 'x-mock-echo': '1' });
    assert.equal(res.status, 200);
    const seen = JSON.parse(res.events[0].json.choices[0].delta.content);
    assert.equal(seen.body.stream, true);
    assert.equal(seen.body.stream_options?.include_usage, true, JSON.stringify(seen.body));
    assert.equal(seen.body.model, 'mock-small');
    assert.equal(seen.headers.authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.equal(usageEvents(res.events).length, 0, 'and drops the usage chunk again');
  }
});

test('a non-streamed request is not turned into a stream upstream', async () => {
  const { seen } = await echo({});
  assert.equal(seen.body.stream, undefined);
  assert.equal(seen.body.stream_options, undefined);
});

test('the access log records a stream usage the client did not ask for', async () => {
  await gw.chat(key, { stream: true, messages: [user('five words in this prompt')] }, { 'x-request-id': 'chat-log-stream', 'x-mock-chunks': '7' });
  const rec = await gw.accessRecord('chat-log-stream');
  assert.deepEqual(pick(rec), {
    method: 'POST', path: '/v1/chat/completions', status: 200, key: keyId, model: 'demo',
    target: 'local/mock-small', stream: 1, in: 5, out: 7,
  }, rec.line);
});

test('a long stream arrives whole', async () => {
  const res = await gw.chat(key, { stream: true, stream_options: { include_usage: true } }, { 'x-mock-chunks': '2000' });
  assert.equal(res.status, 200);
  const chunks = contentEvents(res.events);
  assert.equal(chunks.length, 2000);
  assert.equal(chunks[1999].json.choices[0].delta.content, 'tok1999 ');
  assert.equal(usageEvents(res.events)[0].json.usage.completion_tokens, 2000);
  assert.equal(res.events.at(-1).data, '[DONE]');
});

test('the connection stays usable after a stream', async () => {
  const conn = await gw.conn();
  try {
    const req = (body) => conn.send({ method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${key}` }, body: { model: 'demo', messages: [user('hi')], ...body } });
    await req({ stream: true });
    const a = await conn.readResponse();
    assert.equal(a.events.at(-1).data, '[DONE]');
    await req({});
    const b = await conn.readResponse();
    assert.equal(b.status, 200);
    assert.equal(b.json().choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
    await req({ stream: true });
    assert.equal((await conn.readResponse()).events.at(-1).data, '[DONE]');
  } finally {
    conn.close();
  }
});

test('an upstream that refuses the provider credential is reported as the upstream said', async () => {
  // The "local" mock demands UPSTREAM_KEY; a model on a provider sending
  // another key gets the mock's 401 passed through, not the gateway's.
  const res = await gw.chat(key, { model: 'keyless' });
  assert.equal(res.status, 200, 'the second mock wants no key');
  const bad = await startGateway({ workers: 2, mock: gw.mock, env: { AIGW_TEST_UPSTREAM_KEY: 'sk-wrong' } });
  try {
    const k = await bad.createKey();
    const r = await bad.chat(k.key, {});
    assertError(assert, r, 401, 'invalid_api_key');
  } finally {
    await bad.stop();
  }
});
