// textapi.test.mjs - the text endpoints besides chat: /v1/completions,
// /v1/moderations and /v1/responses through the unmodified openai SDK;
// Anthropic's /v1/messages spoken by a client (raw HTTP: no Anthropic SDK
// here) and routed to an openai-type and to an anthropic-type target,
// plain, streamed, with a tool round trip, errors in Anthropic's shape;
// and "aigwctl endpoint test" / "provider test" in each provider's own
// format (Azure, Anthropic, Gemini, Bedrock with SigV4).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';
import OpenAI from 'openai';

import {
  UPSTREAM_KEY, UPSTREAM_KEY_ENV, startGateway, startMock, tempDir, test,
} from './lib/harness.mjs';

const AWS_KEY = 'AKIDMOCKEXAMPLE:mock/secret+key/EXAMPLE';
const AWS_KEY_ENV = 'AIGW_TEST_AWS_KEY';

let mock; let gw; let client; let key; let dir;

before(async () => {
  mock = await startMock({ requireKey: UPSTREAM_KEY, awsKey: AWS_KEY });
  const host = `http://127.0.0.1:${mock.port}`;
  gw = await startGateway({
    mock,
    env: { [AWS_KEY_ENV]: AWS_KEY },
    providers: [
      { name: 'anth', type: 'anthropic', base_url: `${host}/v1`, api_key_env: UPSTREAM_KEY_ENV },
      { name: 'gem', type: 'gemini', base_url: `${host}/v1beta`, api_key_env: UPSTREAM_KEY_ENV },
      { name: 'az', type: 'azure', base_url: host, api_key_env: UPSTREAM_KEY_ENV, api_version: '2024-10-21' },
      { name: 'aws', type: 'bedrock', base_url: host, region: 'eu-west-3', api_key_env: AWS_KEY_ENV },
    ],
    models: [
      { name: 'instruct', type: 'completions', targets: [{ provider: 'local', model: 'mock-instruct' }] },
      { name: 'mod', type: 'moderations', targets: [{ provider: 'local', model: 'omni-moderation-latest' }] },
      { name: 'resp', type: 'responses', targets: [{ provider: 'local', model: 'mock-small' }] },
      { name: 'claude', targets: [{ provider: 'anth', model: 'claude-haiku-4-5' }] },
      { name: 'gemini', targets: [{ provider: 'gem', model: 'gemini-2.5-flash' }] },
      { name: 'azure', targets: [{ provider: 'az', model: 'gpt-4o-mini', deployment: 'my-deploy' }] },
      { name: 'bedrock', targets: [{ provider: 'aws', model: 'anthropic.claude-3-haiku-20240307-v1:0' }] },
    ],
  });
  ({ key } = await gw.createKey({ name: 'textapi' }));
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 15000 });
  dir = tempDir('aigw-textapi-');
});

after(async () => {
  if (gw) await gw.stop();
  if (mock) await mock.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------ completions

test('completions: a text completion with its usage, through the openai SDK', async () => {
  const c = await client.completions.create({ model: 'instruct', prompt: 'once upon a time' });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0].text, 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(c.choices[0].finish_reason, 'stop');
  assert.deepEqual(c.usage, { prompt_tokens: 4, completion_tokens: 5, total_tokens: 9 });
});

test('completions: streamed, usage only when asked, and accounted either way', async () => {
  let text = ''; let usage = null; let finish = null;
  const s = await client.completions.create({ model: 'instruct', prompt: 'one two', stream: true },
    { headers: { 'x-mock-chunks': '3', 'x-request-id': 'textapi-cmpl-stream' } });
  for await (const chunk of s) {
    if (chunk.usage) usage = chunk.usage;
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, 'tok0 tok1 tok2 ');
  assert.equal(finish, 'stop');
  assert.equal(usage, null);
  const rec = await gw.accessRecord('textapi-cmpl-stream');
  assert.equal(rec.in, 2);
  assert.equal(rec.out, 3);

  const withUsage = await client.completions.create(
    { model: 'instruct', prompt: 'one two', stream: true, stream_options: { include_usage: true } });
  for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
  assert.deepEqual(usage, { prompt_tokens: 2, completion_tokens: 5, total_tokens: 7 });
});

test('completions: a missing prompt is a 400 in OpenAI\'s shape; another provider type has none', async () => {
  const r = await gw.post('/v1/completions', key, { model: 'instruct' });
  assert.equal(r.status, 400);
  assert.equal(r.json().error.code, 'missing_required_parameter');
  assert.equal(r.json().error.param, 'prompt');
  await assert.rejects(client.completions.create({ model: 'claude', prompt: 'hi' }), (err) => {
    assert.equal(err.status, 400);
    assert.equal(err.code, 'unsupported_endpoint');
    return true;
  });
});

// ------------------------------------------------------------ moderations

test('moderations: the model defaults to the first of type moderations; flagged categories', async () => {
  const m = await client.moderations.create({ input: 'I will hurt you' });
  assert.equal(m.results.length, 1);
  assert.equal(m.results[0].flagged, true);
  assert.equal(m.results[0].categories.violence, true);
  assert.equal(m.results[0].categories.hate, false);
  const two = await client.moderations.create({ model: 'mod', input: ['I hate this', 'a nice day'] },
    { headers: { 'x-request-id': 'textapi-mod' } });
  assert.deepEqual(two.results.map((r) => r.flagged), [true, false]);
  assert.equal(two.results[0].categories.hate, true);
  const rec = await gw.accessRecord('textapi-mod');
  assert.equal(rec.model, 'mod');
  assert.ok(rec.in > 0, 'the input is counted');
});

test('moderations: an input is required', async () => {
  const r = await gw.post('/v1/moderations', key, { model: 'mod' });
  assert.equal(r.status, 400);
  assert.equal(r.json().error.param, 'input');
});

// -------------------------------------------------------------- responses

test('responses: an answer with output_text and input/output token usage', async () => {
  const r = await client.responses.create({ model: 'resp', input: 'hello there', instructions: 'be brief' },
    { headers: { 'x-request-id': 'textapi-resp' } });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(r.output_text, 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(r.usage.input_tokens, 4);
  assert.equal(r.usage.output_tokens, 5);
  const rec = await gw.accessRecord('textapi-resp');
  assert.equal(rec.in, 4);
  assert.equal(rec.out, 5);
});

test('responses: streamed events relayed with their names; usage from response.completed', async () => {
  const s = await client.responses.create({ model: 'resp', input: 'a b c', stream: true },
    { headers: { 'x-mock-chunks': '3', 'x-request-id': 'textapi-resp-stream' } });
  const types = []; let text = ''; let done = null;
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') done = ev.response;
  }
  assert.deepEqual(types, [
    'response.created', 'response.in_progress', 'response.output_item.added',
    'response.content_part.added', 'response.output_text.delta', 'response.output_text.delta',
    'response.output_text.delta', 'response.output_text.done', 'response.content_part.done',
    'response.output_item.done', 'response.completed',
  ]);
  assert.equal(text, 'tok0 tok1 tok2 ');
  assert.equal(done.usage.output_tokens, 3);
  // The raw stream names each event as the upstream did.
  const raw = await gw.post('/v1/responses', key, { model: 'resp', input: 'x', stream: true });
  assert.match(raw.text, /^event: response\.created\ndata: /m);
  assert.match(raw.text, /^event: response\.completed\ndata: /m);
  const rec = await gw.accessRecord('textapi-resp-stream');
  assert.equal(rec.in, 3);
  assert.equal(rec.out, 3);
});

// --------------------------------------------------- inbound /v1/messages

// Anthropic's events: [{event, data}] in order.
function anthropicEvents(text) {
  return text.split(/\n\n/).filter((b) => b.trim()).map((b) => {
    const ev = /^event: (.*)$/m.exec(b)?.[1];
    const data = b.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
    return { event: ev, data: JSON.parse(data) };
  });
}

const messages = (body, headers = {}, auth = { 'x-api-key': key }) => gw.request({
  method: 'POST',
  path: '/v1/messages',
  headers: { 'anthropic-version': '2023-06-01', 'content-type': 'application/json', ...auth, ...headers },
  body,
});

const weatherTool = {
  name: 'get_weather',
  description: 'The weather of a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

for (const model of ['demo', 'claude']) {
  test(`messages → ${model}: an Anthropic message with text, stop_reason and usage`, async () => {
    const r = await messages({
      model, max_tokens: 64, system: 'be brief',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'say something nice' }] }],
    });
    assert.equal(r.status, 200, r.text);
    const m = r.json();
    assert.match(m.id, /^msg_/);
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.deepEqual(m.content, [{ type: 'text', text: 'tok0 tok1 tok2 tok3 tok4 ' }]);
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.stop_sequence, null);
    assert.deepEqual(m.usage, { input_tokens: 5, output_tokens: 5 });
  });

  test(`messages → ${model}: streamed as Anthropic's exact event sequence`, async () => {
    const r = await messages({
      model, max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'hello there' }],
    }, { 'x-mock-chunks': '3' });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /text\/event-stream/);
    const evs = anthropicEvents(r.text);
    assert.deepEqual(evs.map((e) => e.event), [
      'message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta',
      'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop',
    ]);
    for (const e of evs) assert.equal(e.data.type, e.event);
    assert.match(evs[0].data.message.id, /^msg_/);
    assert.deepEqual(evs[1].data, { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
    assert.equal(evs.filter((e) => e.event === 'content_block_delta').map((e) => e.data.delta.text).join(''),
      'tok0 tok1 tok2 ');
    assert.equal(evs[3].data.delta.type, 'text_delta');
    assert.equal(evs[7].data.delta.stop_reason, 'end_turn');
    assert.equal(evs[7].data.usage.output_tokens, 3);
    assert.equal(evs[7].data.usage.input_tokens, 2);
  });

  test(`messages → ${model}: a tool_use and its tool_result make the round trip`, async () => {
    const ask = [{ role: 'user', content: 'what is the weather in Paris' }];
    const r = await messages({ model, max_tokens: 64, tools: [weatherTool], tool_choice: { type: 'auto' }, messages: ask });
    assert.equal(r.status, 200, r.text);
    const m = r.json();
    assert.equal(m.stop_reason, 'tool_use');
    const use = m.content.find((b) => b.type === 'tool_use');
    assert.ok(use, r.text);
    assert.equal(use.name, 'get_weather');
    assert.deepEqual(use.input, { city: 'Paris' });
    assert.ok(use.id);

    const again = await messages({
      model, max_tokens: 64, tools: [weatherTool],
      messages: [...ask, { role: 'assistant', content: m.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] }],
    });
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.json().content, [{ type: 'text', text: 'got sunny' }]);
    assert.equal(again.json().stop_reason, 'end_turn');

    // Streamed: a tool_use block whose input comes as input_json_delta.
    const s = await messages({ model, max_tokens: 64, stream: true, tools: [weatherTool], messages: ask });
    const evs = anthropicEvents(s.text);
    const start = evs.find((e) => e.event === 'content_block_start' && e.data.content_block.type === 'tool_use');
    assert.ok(start, s.text);
    assert.equal(start.data.content_block.name, 'get_weather');
    assert.deepEqual(start.data.content_block.input, {});
    const json = evs.filter((e) => e.event === 'content_block_delta' && e.data.index === start.data.index)
      .map((e) => { assert.equal(e.data.delta.type, 'input_json_delta'); return e.data.delta.partial_json; }).join('');
    assert.deepEqual(JSON.parse(json), { city: 'Paris' });
    assert.equal(evs.find((e) => e.event === 'message_delta').data.delta.stop_reason, 'tool_use');
    assert.equal(evs.at(-1).event, 'message_stop');
  });
}

test('messages: Authorization: Bearer works as well as x-api-key', async () => {
  const r = await messages({ model: 'demo', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] },
    {}, { Authorization: `Bearer ${key}` });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json().type, 'message');
});

test('messages: errors come in Anthropic\'s shape with Anthropic\'s status codes', async () => {
  const shape = (r, status, type) => {
    assert.equal(r.status, status, r.text);
    const b = r.json();
    assert.equal(b.type, 'error');
    assert.equal(b.error.type, type);
    assert.equal(typeof b.error.message, 'string');
  };
  const body = { model: 'demo', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] };
  shape(await messages(body, {}, {}), 401, 'authentication_error');
  shape(await messages(body, {}, { 'x-api-key': 'sk-wrong' }), 401, 'authentication_error');
  shape(await messages({ ...body, model: 'no-such-model' }), 404, 'not_found_error');
  const noMax = await messages({ model: 'demo', messages: body.messages });
  shape(noMax, 400, 'invalid_request_error');
  assert.match(noMax.json().error.message, /max_tokens/);
  shape(await messages({ ...body, messages: [{ role: 'system', content: 'x' }] }), 400, 'invalid_request_error');
  const bad = await gw.request({ method: 'POST', path: '/v1/messages', headers: { 'x-api-key': key }, body: '{"model":' });
  shape(bad, 400, 'invalid_request_error');
  // An upstream failure after the retries: 5xx, api_error.
  shape(await messages(body, { 'x-mock-status': '500' }), 502, 'api_error');
  // The upstream's own 4xx, translated twice (Anthropic's, OpenAI's, Anthropic's).
  shape(await messages({ ...body, model: 'claude' }, { 'x-mock-status': '400' }), 400, 'invalid_request_error');
});

test('messages/count_tokens: an estimate of the input tokens, with Anthropic\'s errors', async () => {
  const count = (body, auth = { 'x-api-key': key }) => gw.request({
    method: 'POST',
    path: '/v1/messages/count_tokens',
    headers: { 'anthropic-version': '2023-06-01', 'content-type': 'application/json', ...auth },
    body,
  });
  const short = await count({ model: 'demo', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(short.status, 200, short.text);
  const a = short.json().input_tokens;
  assert.ok(Number.isInteger(a) && a > 0, `input_tokens ${a}`);
  // Four bytes a token: 4000 more bytes of text are about 1000 more tokens.
  const long = await count({ model: 'demo', system: 'be brief', messages: [{ role: 'user', content: `hi ${'x'.repeat(4000)}` }] });
  const b = long.json().input_tokens;
  assert.ok(b >= a + 1000 && b <= a + 1010, `${a} then ${b}`);
  const tools = await count({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], tools: [weatherTool] });
  assert.ok(tools.json().input_tokens > a, 'tool definitions count');
  let r = await count({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] });
  assert.equal(r.status, 404);
  assert.equal(r.json().type, 'error');
  assert.equal(r.json().error.type, 'not_found_error');
  r = await count({ model: 'demo', messages: [{ role: 'user', content: 'hi' }] }, {});
  assert.equal(r.status, 401);
  assert.equal(r.json().error.type, 'authentication_error');
  r = await count('{"model":');
  assert.equal(r.status, 400);
  assert.equal(r.json().error.type, 'invalid_request_error');
  r = await count({ model: 'demo' });
  assert.equal(r.status, 400, 'messages are required');
  assert.equal(r.json().error.type, 'invalid_request_error');
});

// ------------------------------------------- endpoint test, provider test

test('endpoint test speaks each provider type\'s own format, and each model type\'s endpoint', async () => {
  for (const model of ['claude', 'gemini', 'azure', 'bedrock', 'instruct', 'mod', 'resp', 'demo']) {
    const r = await gw.ctl(['endpoint', 'test', model, '--json']);
    assert.equal(r.code, 0, `${model}: ${r.stdout}${r.stderr}`);
    const out = JSON.parse(r.stdout);
    assert.equal(out.passed, true, r.stdout);
    assert.equal(out.targets[0].status, 200, r.stdout);
  }
});

test('provider test calls an anthropic-type provider with the tenant\'s own credential', async () => {
  const keyFile = path.join(dir, 'anth.key');
  fs.writeFileSync(keyFile, `${UPSTREAM_KEY}\n`, { mode: 0o600 });
  const badFile = path.join(dir, 'bad.key');
  fs.writeFileSync(badFile, 'sk-wrong\n', { mode: 0o600 });
  assert.equal((await gw.ctl(['tenant', 'add', 'acme'])).code, 0);
  assert.equal((await gw.ctl(['tenant', 'add', 'beta'])).code, 0);
  const add = (name, tenant, file) => gw.ctl(['provider', 'add', name, '--type', 'anthropic',
    '--tenant', tenant, '--for', 'anth', '--api-key-file', file]);
  assert.equal((await add('acme-anth', 'acme', keyFile)).code, 0);
  assert.equal((await add('beta-anth', 'beta', badFile)).code, 0);
  const ok = await gw.ctl(['provider', 'test', 'acme-anth', '--json']);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const r = JSON.parse(ok.stdout);
  assert.equal(r.passed, true);
  assert.equal(r.status, 200);
  assert.equal(r.target, 'anth/claude-haiku-4-5');
  const bad = await gw.ctl(['provider', 'test', 'beta-anth', '--json']);
  assert.equal(bad.code, 1);
  const b = JSON.parse(bad.stdout);
  assert.equal(b.status, 401);
  assert.equal(b.error, 'invalid x-api-key');
});
