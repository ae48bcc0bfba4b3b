// safety.test.mjs - content safety through the real gateway: block, mask
// and flag on the input (the mask reaching the provider, seen through the
// mock's echo), restore of masked values in the answer, output blocked
// whole and streamed with the phrase split at every position, output
// masked in a stream, the allowlist by key and tenant, a model without
// rules, a reload with a bad regular expression refused with
// FILE:LINE:COLUMN, and the per-rule counters in /metrics.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import OpenAI from 'openai';

import { assertError, freePort, request, startGateway, test, useGateway } from './lib/harness.mjs';

const RULES = [
  { name: 'blocklist', type: 'keywords', words: ['secret plan'], whole_word: true, on: ['input', 'output'], action: 'block' },
  { name: 'email', type: 'pii', detector: 'email', on: ['input'], action: 'mask' },
  { name: 'phone', type: 'pii', detector: 'phone', on: ['input'], action: 'mask', restore: true },
  { name: 'card', type: 'pii', detector: 'credit_card', on: ['input'], action: 'flag' },
  { name: 'leak', type: 'regex', pattern: '(?i)internal\\s+use\\s+only', on: ['output'], action: 'block' },
  { name: 'ip', type: 'pii', detector: 'ipv4', on: ['output'], action: 'mask', mask: '<ip>' },
];

const metricsPort = await freePort();
let client;
const ctx = useGateway({
  workers: 2,
  metrics: `127.0.0.1:${metricsPort}`,
  http: { keepalive_timeout: '2s' },
  safety: { rules: RULES, allow: { tenants: ['trusted'] } },
  models: [{ name: 'free', safety: [], targets: [{ provider: 'local', model: 'mock-free' }] }],
}, async (gw, c) => {
  c.key = (await gw.createKey({ name: 'safety' })).key;
  client = new OpenAI({ apiKey: c.key, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 15000 });
});

const ask = (content) => ({ model: 'demo', messages: [{ role: 'user', content }] });

async function metric(rule, direction, action) {
  const res = await request(metricsPort, { path: '/metrics' });
  const re = new RegExp(`^aigw_safety_matches_total\\{rule="${rule}",direction="${direction}",action="${action}"\\} (\\d+)$`, 'm');
  const m = re.exec(res.text);
  return m ? Number(m[1]) : undefined;
}

function assertBlocked(res, rule) {
  assert.equal(res.status, 400, res.text);
  const e = res.json().error;
  assert.equal(e.code, 'content_blocked');
  assert.equal(e.type, 'invalid_request_error');
  assert.match(e.message, new RegExp(`"${rule}"`));
  return e;
}

test('input: a blocked phrase is refused with 400 content_blocked naming the rule, never the text', async () => {
  const before = await metric('blocklist', 'input', 'block');
  await assert.rejects(
    client.chat.completions.create(ask('What is the Secret Plan for tomorrow?')),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, String(err));
      assert.equal(err.code, 'content_blocked');
      assert.match(err.message, /"blocklist"/);
      assert.doesNotMatch(err.message, /secret plan/i);
      return true;
    },
  );
  // Tool call arguments and text parts are inspected too.
  const { gw, key } = ctx;
  assertBlocked(await gw.chat(key, {
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'hi' }, { type: 'text', text: 'the secret plan' }] },
    ],
  }), 'blocklist');
  assertBlocked(await gw.chat(key, {
    messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: '{"q":"secret plan"}' } }] }],
  }), 'blocklist');
  // Not the whole word: not blocked.
  assert.equal((await gw.chat(key, ask('the secret planet'))).status, 200);
  assert.equal(await metric('blocklist', 'input', 'block'), before + 3);
});

test('input: a masked value reaches the provider as a placeholder', async () => {
  const { gw, key } = ctx;
  const res = await gw.chat(key, ask('mail bob@example.com, then bob@example.com and al@example.org'), { 'x-mock-echo': '1' });
  assert.equal(res.status, 200, res.text);
  const echoed = JSON.parse(res.json().choices[0].message.content);
  assert.equal(echoed.body.messages[0].content, 'mail [EMAIL_1], then [EMAIL_1] and [EMAIL_2]');
  assert.doesNotMatch(res.text, /example\.(com|org)/);
});

test('input: restore puts the masked value back into the answer', async () => {
  const c = await client.chat.completions.create(ask('call me on +44 20 7946 0958'), {
    headers: { 'x-mock-content': 'I will call [PHONE_1] today.' },
  });
  assert.equal(c.choices[0].message.content, 'I will call +44 20 7946 0958 today.');
});

test('input: flag lets the request through, counts it and logs the rule, not the text', async () => {
  const { gw, key } = ctx;
  const before = (await metric('card', 'input', 'flag')) ?? 0;
  const res = await gw.chat(key, ask('my card is 4111 1111 1111 1111'), { 'x-request-id': 'flag-1' });
  assert.equal(res.status, 200, res.text);
  assert.equal(await metric('card', 'input', 'flag'), before + 1);
  const m = await gw.waitLog(/req=flag-1 safety rule "card" matched the input \(flag\)/);
  assert.ok(m);
  assert.doesNotMatch(gw.log(), /4111 1111/);
});

test('output: a blocked answer is replaced by 400 content_blocked', async () => {
  const { gw, key } = ctx;
  const res = await gw.chat(key, ask('hi'), { 'x-mock-content': 'This memo is for Internal Use Only.' });
  const e = assertBlocked(res, 'leak');
  assert.doesNotMatch(e.message, /internal use/i);
});

// The events of a streamed answer: {text, error, done}.
function streamed(res) {
  assert.equal(res.status, 200, res.text);
  let text = ''; let error = null; let done = false;
  for (const ev of res.events) {
    if (ev.data === '[DONE]') done = true;
    else if (ev.json?.error) error = ev.json.error;
    else text += ev.json?.choices?.[0]?.delta?.content ?? '';
  }
  return { text, error, done };
}

test('output: a stream is ended with an error event, the phrase split at every position', { timeout: 60000 }, async () => {
  const { gw, key } = ctx;
  const content = 'Note: this is INTERNAL USE ONLY, sorry.';
  for (let cut = 0; cut <= content.length; cut++) {
    const res = await gw.chat(key, { ...ask('hi'), stream: true }, { 'x-mock-content': content, 'x-mock-split': String(cut) });
    const s = streamed(res);
    assert.ok(s.error, `cut at ${cut}: an error event (${res.text})`);
    assert.equal(s.error.code, 'content_blocked');
    assert.match(s.error.message, /"leak"/);
    assert.equal(s.done, false, 'no [DONE] after the error');
    assert.doesNotMatch(s.text, /INTERNAL USE ONLY/, `cut at ${cut}`);
    assert.equal(res.events.at(-1).json?.error?.code, 'content_blocked', 'the error is the last event');
  }
  // The SDK raises it.
  const stream = await client.chat.completions.create({ ...ask('hi'), stream: true }, { headers: { 'x-mock-content': content, 'x-mock-split': '20' } });
  await assert.rejects(async () => { for await (const chunk of stream) void chunk; }, (err) => {
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.code, 'content_blocked');
    return true;
  });
});

test('output: a stream is masked whatever the split, and text without matches passes whole', { timeout: 60000 }, async () => {
  const { gw, key } = ctx;
  const content = 'server 10.1.2.3 is up';
  for (let cut = 0; cut <= content.length; cut++) {
    const s = streamed(await gw.chat(key, { ...ask('hi'), stream: true }, { 'x-mock-content': content, 'x-mock-split': String(cut) }));
    assert.equal(s.error, null);
    assert.equal(s.done, true);
    assert.equal(s.text, 'server <ip> is up', `cut at ${cut}`);
  }
  const plain = streamed(await gw.chat(key, { ...ask('hi'), stream: true }, { 'x-mock-chunks': '8' }));
  assert.equal(plain.text, 'tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ');
  assert.equal(plain.done, true);
});

test('allowlist: a tenant listed in safety.allow is not inspected; a model without rules neither', async () => {
  const { gw, key } = ctx;
  await gw.ctlJson(['tenant', 'add', 'trusted']);
  await gw.ctlJson(['user', 'add', 'tina', '--tenant', 'trusted']);
  await gw.ctlJson(['grant', 'tina', 'endpoint-user', '--model', 'demo']);
  const k = await gw.ctlJson(['key', 'create', '--name', 'trusted', '--user', 'tina']);
  assert.equal((await gw.chat(k.key, ask('the secret plan'))).status, 200);
  assert.equal((await gw.chat(k.key, ask('hi'), { 'x-mock-content': 'internal use only' })).status, 200);
  assertBlocked(await gw.chat(key, ask('the secret plan')), 'blocklist');
  assert.equal((await gw.chat(key, { ...ask('the secret plan'), model: 'free' })).status, 200);
});

test('allowlist by key takes effect on reload; a bad regex is refused with FILE:LINE:COLUMN', async () => {
  const { gw, key } = ctx;
  const k = await gw.createKey({ name: 'allowed' });
  const good = fs.readFileSync(gw.configPath, 'utf8');
  try {
    gw.rewriteConfig({ safety: { rules: RULES, allow: { tenants: ['trusted'], keys: [k.id] } } });
    let r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await gw.chat(k.key, ask('the secret plan'))).status, 200);
    assertBlocked(await gw.chat(key, ask('the secret plan')), 'blocklist');

    const st0 = await gw.status();
    const bad = [...RULES, { name: 'broken', type: 'regex', pattern: 'ab(c' }];
    gw.rewriteConfig({ safety: { rules: bad } });
    const text = fs.readFileSync(gw.configPath, 'utf8');
    const line = text.split('\n').findIndex((l) => l.includes('"ab(c"')) + 1;
    const column = text.split('\n')[line - 1].indexOf('"ab(c"') + 1 + 5;
    r = await gw.ctl(['reload']);
    assert.equal(r.code, 1, r.stdout);
    assert.ok(r.stderr.includes(`${gw.configPath}:${line}:${column}:`), r.stderr);
    assert.match(r.stderr, /invalid regular expression/);
    assert.equal((await gw.status()).generation, st0.generation, 'nothing changed');
    assert.equal((await gw.chat(k.key, ask('the secret plan'))).status, 200, 'the old rules still apply');
  } finally {
    fs.writeFileSync(gw.configPath, good);
  }
});

test('/metrics counts matches per rule, direction and action', async () => {
  assert.ok((await metric('blocklist', 'input', 'block')) >= 4);
  assert.ok((await metric('leak', 'output', 'block')) >= 1);
  assert.ok((await metric('ip', 'output', 'mask')) >= 1);
  assert.ok((await metric('email', 'input', 'mask')) >= 1);
  assert.equal(await metric('email', 'output', 'mask'), undefined, 'an input-only rule has no output counter');
});

test('output rules also read completions and Responses answers; their streams are refused, not let through', async () => {
  const gw = await startGateway({
    workers: 2,
    safety: { rules: [{ name: 'third', type: 'regex', pattern: 'tok3', on: ['output'], action: 'block' }] },
  });
  try {
    const k = (await gw.createKey()).key;
    const done = await gw.post('/v1/completions', k, { model: 'demo', prompt: 'say it', 'max_tokens': 2 }, { 'x-mock-chunks': '2' });
    assert.equal(done.status, 200, 'tok0 tok1: nothing to block');
    let r = await gw.post('/v1/completions', k, { model: 'demo', prompt: 'say it' });
    let err = assertError(assert, r, 400, 'content_blocked');
    assert.match(err.message, /The response was blocked by the content safety rule "third"/);
    r = await gw.post('/v1/responses', k, { model: 'demo', input: 'say it' });
    assertError(assert, r, 400, 'content_blocked');
    r = await gw.post('/v1/completions', k, { model: 'demo', prompt: 'say it', stream: true });
    err = assertError(assert, r, 400, 'stream_not_inspected');
    assert.match(err.message, /read only chat completion streams/);
  } finally {
    await gw.stop();
  }
});
