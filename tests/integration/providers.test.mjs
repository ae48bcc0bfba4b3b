// providers.test.mjs - the provider adapters end to end: the unmodified
// openai SDK talks to aigwd, which talks to aigw-mock in Anthropic's,
// Gemini's, Bedrock's and Azure OpenAI's own formats (each checking its
// own credential header, Bedrock its SigV4 signature), and back.  Chat
// plain and streamed, a tool call and its result round trip, usage
// recorded, errors mapped; an openai preset's quirks.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import OpenAI from 'openai';

import {
  UPSTREAM_KEY, UPSTREAM_KEY_ENV, eventually, startGateway, startMock, test,
} from './lib/harness.mjs';

const AWS_KEY = 'AKIDMOCKEXAMPLE:mock/secret+key/EXAMPLE';
const AWS_KEY_ENV = 'AIGW_TEST_AWS_KEY';

let mock; let client; let key;
const ctx = { gw: null };

// The mock first (the configuration names its port), then the gateway,
// in one hook: node:test may run two before() hooks side by side.
before(async () => {
  mock = await startMock({ requireKey: UPSTREAM_KEY, awsKey: AWS_KEY });
  const host = `http://127.0.0.1:${mock.port}`;
  ctx.gw = await startGateway({
    mock,
    workers: 3,
    http: { keepalive_timeout: '5s' },
    env: { [AWS_KEY_ENV]: AWS_KEY },
    providers: [
      { name: 'anth', type: 'anthropic', base_url: `${host}/v1`, api_key_env: UPSTREAM_KEY_ENV, max_tokens: 256 },
      { name: 'gem', type: 'gemini', base_url: `${host}/v1beta`, api_key_env: UPSTREAM_KEY_ENV },
      { name: 'az', type: 'azure', base_url: host, api_key_env: UPSTREAM_KEY_ENV, api_version: '2024-10-21' },
      { name: 'aws', type: 'bedrock', base_url: host, region: 'eu-west-3', api_key_env: AWS_KEY_ENV },
      { name: 'ds', type: 'openai', preset: 'deepseek', base_url: mock.base, api_key_env: UPSTREAM_KEY_ENV },
    ],
    models: [
      { name: 'claude', targets: [{ provider: 'anth', model: 'claude-haiku-4-5' }] },
      { name: 'gemini', targets: [{ provider: 'gem', model: 'gemini-2.5-flash' }] },
      { name: 'azure', targets: [{ provider: 'az', model: 'gpt-4o-mini', deployment: 'my-deploy' }] },
      { name: 'bedrock', targets: [{ provider: 'aws', model: 'anthropic.claude-3-haiku-20240307-v1:0' }] },
      { name: 'deepseek', targets: [{ provider: 'ds', model: 'deepseek-chat' }] },
    ],
  });
  ({ key } = await ctx.gw.createKey({ name: 'providers' }));
  client = new OpenAI({ apiKey: key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0, timeout: 15000 });
});

after(async () => {
  if (ctx.gw) await ctx.gw.stop();
  if (mock) await mock.stop();
});

const messages = [{ role: 'user', content: 'say something nice' }];
const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

async function collect(stream) {
  const out = { text: '', finish: null, usage: null, chunks: 0, tools: [], role: null };
  for await (const chunk of stream) {
    out.chunks++;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) out.usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta?.role) out.role = choice.delta.role;
    if (choice.delta?.content) out.text += choice.delta.content;
    for (const tc of choice.delta?.tool_calls ?? []) {
      out.tools[tc.index] ??= { id: '', name: '', arguments: '' };
      if (tc.id) out.tools[tc.index].id = tc.id;
      if (tc.function?.name) out.tools[tc.index].name += tc.function.name;
      if (tc.function?.arguments) out.tools[tc.index].arguments += tc.function.arguments;
    }
    if (choice.finish_reason) out.finish = choice.finish_reason;
  }
  return out;
}

for (const model of ['claude', 'gemini', 'bedrock', 'azure']) {
  test(`${model}: a chat completion comes back in OpenAI's shape with its usage`, async () => {
    const c = await client.chat.completions.create({ model, messages });
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.role, 'assistant');
    assert.equal(c.choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.equal(c.usage.prompt_tokens, 3);
    assert.equal(c.usage.completion_tokens, 5);
    assert.equal(c.usage.total_tokens, 8);
  });

  test(`${model}: a streamed completion arrives as chunks, usage only when asked`, async () => {
    const plain = await collect(await client.chat.completions.create(
      { model, messages, stream: true }, { headers: { 'x-mock-chunks': '4' } }));
    assert.equal(plain.role, 'assistant');
    assert.equal(plain.text, 'tok0 tok1 tok2 tok3 ');
    assert.equal(plain.finish, 'stop');
    assert.equal(plain.usage, null);
    const withUsage = await collect(await client.chat.completions.create(
      { model, messages, stream: true, stream_options: { include_usage: true } }));
    assert.equal(withUsage.text, 'tok0 tok1 tok2 tok3 tok4 ');
    assert.deepEqual(withUsage.usage, { prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
  });
}

for (const model of ['claude', 'gemini', 'bedrock']) {
  test(`${model}: a tool call and its result make the round trip`, async () => {
    const ask = [{ role: 'user', content: 'what is the weather in Paris' }];
    const first = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: 'auto' });
    const choice = first.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls.length, 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
    assert.ok(call.id);

    const second = await client.chat.completions.create({
      model,
      tools,
      messages: [
        ...ask,
        choice.message,
        { role: 'tool', tool_call_id: call.id, content: '{"temp_c":18}' },
      ],
    });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.equal(second.choices[0].message.content, 'got {"temp_c":18}');
  });

  test(`${model}: a streamed tool call arrives as tool_call deltas`, async () => {
    const out = await collect(await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'weather?' }], tools, stream: true,
      stream_options: { include_usage: true },
    }));
    assert.equal(out.finish, 'tool_calls');
    assert.equal(out.tools.length, 1);
    assert.equal(out.tools[0].name, 'get_weather');
    assert.ok(out.tools[0].id);
    assert.deepEqual(JSON.parse(out.tools[0].arguments), { city: 'Paris' });
    assert.equal(out.usage.completion_tokens, 5);
  });

  test(`${model}: the provider's own errors come back in OpenAI's shape`, async () => {
    await assert.rejects(
      client.chat.completions.create({ model, messages }, { headers: { 'x-mock-status': '400' } }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, String(err));
        assert.equal(err.status, 400);
        assert.equal(err.type, 'invalid_request_error');
        assert.match(err.message, /mock injected status 400/);
        return true;
      });
    await assert.rejects(
      client.chat.completions.create({ model, messages }, { headers: { 'x-mock-status': '429' } }),
      (err) => {
        assert.ok(err instanceof OpenAI.RateLimitError, String(err));
        assert.equal(err.type, 'rate_limit_error');
        return true;
      });
  });
}

test('claude: an overloaded Anthropic (529) is an upstream error saying so', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'claude', messages }, { headers: { 'x-mock-status': '529' } }),
    (err) => {
      assert.ok(err instanceof OpenAI.APIError, String(err));
      assert.equal(err.status, 502);
      assert.equal(err.code, 'upstream_error');
      assert.match(err.message, /529: Overloaded/);
      return true;
    });
});

test('claude: the request reaches Anthropic translated (system, max_tokens default)', async () => {
  const c = await client.chat.completions.create({
    model: 'claude',
    messages: [{ role: 'system', content: 'be brief' }, ...messages],
    stop: 'END',
  }, { headers: { 'x-mock-echo': '1' } });
  const sent = JSON.parse(c.choices[0].message.content);
  assert.equal(sent.model, 'claude-haiku-4-5');
  assert.equal(sent.system, 'be brief');
  assert.equal(sent.max_tokens, 256, 'the provider\'s max_tokens');
  assert.deepEqual(sent.stop_sequences, ['END']);
  assert.deepEqual(sent.messages, [{ role: 'user', content: [{ type: 'text', text: 'say something nice' }] }]);
});

test('an answer in a shape of its own is a 502, and no worker dies of it', async () => {
  // The mock puts a string where Anthropic's content, Gemini's parts and
  // Bedrock's content list go.  Before, json-c's assertion on the string
  // took the worker down, and the client got a reset connection.
  const pids = ctx.gw.workerPids();
  for (const model of ['claude', 'gemini', 'bedrock']) {
    const res = await ctx.gw.chat(key, { model, messages }, { 'x-mock-bad-shape': '1' });
    assert.equal(res.status, 502, `${model}: ${res.text}`);
    assert.equal(res.json().error.code, 'upstream_bad_response', res.text);
  }
  assert.deepEqual(ctx.gw.workerPids(), pids);
});

// The 502 quotes the provider's message, its first 300 bytes: cut
// between characters, or the answer is not UTF-8 and a strict JSON
// reader refuses it.
test('a provider error message that is long and not ASCII is quoted whole characters only', async () => {
  for (const model of ['claude', 'gemini', 'bedrock']) {
    const res = await ctx.gw.chat(key, { model, messages }, { 'x-mock-status': '500', 'x-mock-error-text': '400' });
    assert.equal(res.status, 502, `${model}: ${res.text}`);
    const { message } = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(res.body)).error;
    assert.match(message, /answered HTTP 500: xé{149}$/, message);
  }
});

test('a client message in a shape of its own does not take a worker down', async () => {
  // tool_calls, content and tools that are no arrays, on their way to
  // each adapter that translates them.
  const pids = ctx.gw.workerPids();
  const odd = [
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: { text: 'x' }, tool_calls: 'get_weather' },
    { role: 'tool', tool_call_id: 7, content: 3 },
    { role: 'user', content: [1, 'two', { type: 'image_url', image_url: 5 }] },
  ];
  for (const model of ['claude', 'gemini', 'bedrock']) {
    const res = await ctx.gw.chat(key, { model, messages: odd, tools: 'none', stop: 5 });
    assert.ok([200, 400].includes(res.status), `${model}: ${res.status} ${res.text}`);
  }
  assert.deepEqual(ctx.gw.workerPids(), pids);
});

test('a stream the provider breaks makes the SDK throw', async () => {
  for (const model of ['claude', 'gemini', 'bedrock']) {
    const stream = await client.chat.completions.create(
      { model, messages, stream: true }, { headers: { 'x-mock-drop-after': '2' } });
    await assert.rejects(collect(stream), (err) => {
      assert.ok(err instanceof OpenAI.APIError, `${model}: ${err}`);
      assert.equal(err.code, 'upstream_disconnected', model);
      return true;
    });
  }
});

test('deepseek preset: max_completion_tokens is sent as max_tokens', async () => {
  const c = await client.chat.completions.create(
    { model: 'deepseek', messages, max_completion_tokens: 7 }, { headers: { 'x-mock-echo': '1' } });
  const echo = JSON.parse(c.choices[0].message.content);
  assert.equal(echo.path, '/v1/chat/completions');
  assert.equal(echo.body.model, 'deepseek-chat');
  assert.equal(echo.body.max_tokens, 7);
  assert.equal(echo.body.max_completion_tokens, undefined);
});

test('azure: the deployment URL and api-key header are used', async () => {
  const c = await client.chat.completions.create(
    { model: 'azure', messages }, { headers: { 'x-mock-echo': '1' } });
  const echo = JSON.parse(c.choices[0].message.content);
  assert.equal(echo.path, '/openai/deployments/my-deploy/chat/completions');
  assert.equal(echo.query, 'api-version=2024-10-21');
  assert.equal(echo.headers['api-key'], UPSTREAM_KEY);
  assert.equal(echo.headers.authorization, undefined);
});

test('usage through every adapter is recorded by model', async () => {
  const want = ['claude', 'gemini', 'bedrock', 'azure'];
  const rows = await eventually(async () => {
    const r = await ctx.gw.ctlJson(['usage', '--by', 'model']);
    const byModel = Object.fromEntries(r.rows.map((row) => [row.model, row]));
    return want.every((m) => byModel[m]?.output_tokens >= 10) ? byModel : null;
  }, { timeoutMs: 10000, what: 'usage rows for every adapter' });
  for (const m of want) {
    assert.ok(rows[m].input_tokens >= 6, `${m}: ${JSON.stringify(rows[m])}`);
  }
});

test('embeddings of a model whose provider has none are refused with 400', async () => {
  await assert.rejects(client.embeddings.create({ model: 'claude', input: 'x' }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.code, 'unsupported_endpoint');
    return true;
  });
});
