// sdk.test.mjs - the official openai npm client pointed at aigwd: what an
// application sees.  Completions plain and streamed, embeddings with the
// SDK's default base64 decoding, the model list, and the SDK's error
// classes for the gateway's errors.

import assert from 'node:assert/strict';
import OpenAI from 'openai';

import { test, useGateway } from './lib/harness.mjs';

let client; let key;
const ctx = useGateway({
  workers: 4,
  // The SDK's fetch keeps connections open; each holds a worker while idle.
  http: { keepalive_timeout: '5s' },
  models: [{ name: 'meta-llama/Llama-3-8B-Instruct', targets: [{ provider: 'local', model: 'llama-3-8b' }] }],
}, async (gw) => {
  ({ key } = await gw.createKey({ name: 'sdk' }));
  client = sdk(key);
});

function sdk(apiKey, opts = {}) {
  return new OpenAI({ apiKey, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0, timeout: 15000, ...opts });
}

const messages = [{ role: 'user', content: 'say something nice' }];

test('chat.completions.create returns the completion and its usage', async () => {
  const c = await client.chat.completions.create({ model: 'demo', messages });
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.choices[0].message.role, 'assistant');
  assert.equal(c.choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.deepEqual(c.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
});

test('the SDK sees the x-request-id of its request', async () => {
  const { data, response } = await client.chat.completions
    .create({ model: 'demo', messages }, { headers: { 'x-request-id': 'sdk-req-1' } })
    .withResponse();
  assert.equal(response.headers.get('x-request-id'), 'sdk-req-1');
  assert.equal(data.choices.length, 1);
  assert.equal((await ctx.gw.accessRecord('sdk-req-1')).status, 200);
});

test('a streamed completion arrives chunk by chunk through for await', async () => {
  const stream = await client.chat.completions.create({ model: 'demo', messages, stream: true }, { headers: { 'x-mock-chunks': '6' } });
  const deltas = [];
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.usage ?? null, null, 'no usage unless asked');
    const choice = chunk.choices[0];
    if (choice?.delta?.content) deltas.push(choice.delta.content);
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  assert.deepEqual(deltas, ['tok0 ', 'tok1 ', 'tok2 ', 'tok3 ', 'tok4 ', 'tok5 ']);
  assert.equal(finish, 'stop');
});

test('a streamed completion ends with usage when the SDK asks for it', async () => {
  const stream = await client.chat.completions.create({ model: 'demo', messages, stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  assert.equal(chunks.filter((c) => c.usage).length, 1);
});

test('a stream the upstream breaks makes the SDK throw', async () => {
  const stream = await client.chat.completions.create({ model: 'demo', messages, stream: true }, { headers: { 'x-mock-drop-after': '2' } });
  const deltas = [];
  await assert.rejects(async () => {
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) deltas.push(chunk.choices[0].delta.content);
  }, (err) => {
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.code, 'upstream_disconnected');
    return true;
  });
  assert.deepEqual(deltas, ['tok0 ', 'tok1 ']);
});

test('embeddings.create decodes the default base64 into the mock floats', async () => {
  const res = await client.embeddings.create({ model: 'demo-embed', input: ['first input', 'second'] });
  assert.equal(res.data.length, 2);
  const floats = await ctx.gw.post('/v1/embeddings', key, { model: 'demo-embed', input: ['first input', 'second'], encoding_format: 'float' });
  const expected = floats.json().data.map((d) => d.embedding.map(Math.fround));
  res.data.forEach((d, i) => {
    assert.ok(Array.isArray(d.embedding), 'decoded into an array');
    assert.equal(d.embedding.length, 8);
    assert.deepEqual(d.embedding, expected[i]);
  });
  assert.equal(res.model, 'mock-embed-v1');
  assert.deepEqual(res.usage, { prompt_tokens: 3, total_tokens: 3 });
});

test('embeddings.create with encoding_format float returns floats as sent', async () => {
  const res = await client.embeddings.create({ model: 'demo-embed', input: 'x', encoding_format: 'float', dimensions: 12 });
  assert.equal(res.data[0].embedding.length, 12);
  assert.ok(Math.abs(Math.hypot(...res.data[0].embedding) - 1) < 1e-5);
});

test('models.list lists the models the key may use', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['demo', 'demo-embed', 'meta-llama/Llama-3-8B-Instruct', 'other']);
  const restricted = sdk((await ctx.gw.createKey({ models: ['other'] })).key);
  const page = await restricted.models.list();
  assert.deepEqual(page.data.map((m) => m.id), ['other']);
});

test('models.retrieve returns one model', async () => {
  const m = await client.models.retrieve('demo');
  assert.equal(m.id, 'demo');
  assert.equal(m.object, 'model');
});

test('models.retrieve finds a model whose name holds a slash', async () => {
  // The SDK sends /v1/models/meta-llama%2FLlama-3-8B-Instruct.
  const m = await client.models.retrieve('meta-llama/Llama-3-8B-Instruct');
  assert.equal(m.id, 'meta-llama/Llama-3-8B-Instruct');
});

test('a model whose name holds a slash can be used for chat', async () => {
  const c = await client.chat.completions.create({ model: 'meta-llama/Llama-3-8B-Instruct', messages });
  assert.equal(c.model, 'llama-3-8b');
});

test('a bad key makes the SDK throw AuthenticationError with status 401', async () => {
  const bad = sdk('sk-aigw-definitely-not-a-key');
  await assert.rejects(bad.chat.completions.create({ model: 'demo', messages }), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `${err.constructor.name}: ${err.message}`);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.ok(err.headers.get('x-request-id'));
    return true;
  });
  await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
});

test('the gateway errors map to the SDK error classes', async () => {
  const restricted = sdk((await ctx.gw.createKey({ models: ['demo'] })).key);
  await assert.rejects(restricted.chat.completions.create({ model: 'other', messages }), (err) => {
    assert.ok(err instanceof OpenAI.PermissionDeniedError, String(err));
    assert.equal(err.code, 'model_not_allowed');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'demo' }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.param, 'messages');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'demo', messages }, { headers: { 'x-mock-status': '429' } }), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, String(err));
    assert.equal(err.status, 429);
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'demo', messages }, { headers: { 'x-mock-status': '500' } }), (err) => {
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 502);
    assert.equal(err.code, 'upstream_error');
    return true;
  });
});

test('the SDK keeps working across many requests on its kept-alive connection', async () => {
  for (let i = 1; i <= 8; i++) {
    const c = await client.chat.completions.create({ model: 'demo', messages }, { headers: { 'x-mock-chunks': String(i) } });
    assert.equal(c.usage.completion_tokens, i);
  }
});
