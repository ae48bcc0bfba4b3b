// metrics.test.mjs - GET /metrics on a listener of its own, in the
// Prometheus text format, from the shared-memory counters of the whole
// gateway: requests, tokens by model and key, histograms, workers, reloads.

import assert from 'node:assert/strict';
import fs from 'node:fs';

import { eventually, freePort, request, test, useGateway } from './lib/harness.mjs';

const metricsPort = await freePort();
const ctx = useGateway({ workers: 2, metrics: `127.0.0.1:${metricsPort}` });

// Samples of a Prometheus text page: [{name, labels, value}].
function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// The value of the sample name{labels} (exactly those labels), or undefined.
function value(samples, name, labels = {}) {
  const want = JSON.stringify(Object.entries(labels).sort());
  return samples.find((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)?.value;
}

async function scrape() {
  const res = await request(metricsPort, { path: '/metrics' });
  assert.equal(res.status, 200, res.text);
  return { res, samples: parse(res.text) };
}

// What this file sends: {demo, other} usage sums and the ids of two keys.
const sent = { demo: { n: 0, in: 0, out: 0 }, other: { n: 0, in: 0, out: 0 }, keys: {} };

test('the metrics count the requests and tokens of each model and key', async () => {
  const { gw } = ctx;
  const a = await gw.createKey({ name: 'metrics-a' });
  const b = await gw.createKey({ name: 'metrics-b' });
  sent.keys = { [a.id]: { in: 0, out: 0 }, [b.id]: { in: 0, out: 0 } };
  const stream = { stream: true, stream_options: { include_usage: true } };
  const plans = [
    [a, 'demo', {}], [a, 'demo', {}], [a, 'demo', {}, { 'x-mock-chunks': '9' }],
    [a, 'demo', stream], [a, 'demo', stream, { 'x-mock-chunks': '2' }],
    [b, 'other', { messages: [{ role: 'user', content: 'a b c d e f' }] }],
    [b, 'demo', stream],
  ];
  for (const [k, model, extra, headers] of plans) {
    const res = await gw.chat(k.key, { model, ...extra }, headers);
    assert.equal(res.status, 200, res.text);
    const u = extra.stream ? res.events.find((e) => e.json?.usage).json.usage : res.json().usage;
    sent[model].n++;
    sent[model].in += u.prompt_tokens;
    sent[model].out += u.completion_tokens;
    sent.keys[k.id].in += u.prompt_tokens;
    sent.keys[k.id].out += u.completion_tokens;
  }
  let s;
  await eventually(async () => {
    ({ samples: s } = await scrape());
    return value(s, 'aigw_requests_total', { model: 'demo', status_class: '2xx' }) === sent.demo.n &&
      value(s, 'aigw_requests_total', { model: 'other', status_class: '2xx' }) === sent.other.n;
  }, { timeoutMs: 2000, what: () => `aigw_requests_total ${JSON.stringify(s?.filter((x) => x.name === 'aigw_requests_total'))}` });

  for (const m of ['demo', 'other']) {
    assert.equal(value(s, 'aigw_model_input_tokens_total', { model: m }), sent[m].in, `input tokens of ${m}`);
    assert.equal(value(s, 'aigw_model_output_tokens_total', { model: m }), sent[m].out, `output tokens of ${m}`);
  }
  for (const [id, t] of Object.entries(sent.keys)) {
    assert.equal(value(s, 'aigw_key_input_tokens_total', { key: id }), t.in, `input tokens of key ${id}`);
    assert.equal(value(s, 'aigw_key_output_tokens_total', { key: id }), t.out, `output tokens of key ${id}`);
  }
  assert.equal(value(s, 'aigw_upstream_requests_total', { target: 'local/mock-small', status_class: '2xx' }), sent.demo.n);
  assert.equal(value(s, 'aigw_upstream_requests_total', { target: 'local/mock-large', status_class: '2xx' }), sent.other.n);
  const keyLabels = s.filter((x) => x.name.startsWith('aigw_key_')).map((x) => x.labels.key);
  for (const k of keyLabels) assert.match(k, /^key_/, 'keys are named by id, never by secret');
});

test('the request duration and time-to-first-token histograms add up', async () => {
  const { samples: s } = await scrape();
  for (const h of ['aigw_request_duration_seconds', 'aigw_time_to_first_token_seconds']) {
    for (const m of ['demo', 'other']) {
      const buckets = s.filter((x) => x.name === `${h}_bucket` && x.labels.model === m);
      assert.ok(buckets.length >= 2, `${h} buckets of ${m}`);
      assert.equal(buckets.at(-1).labels.le, '+Inf');
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, `${h} is cumulative`);
      assert.equal(buckets.at(-1).value, sent[m].n, `${h}{le="+Inf"} of ${m}`);
      assert.equal(value(s, `${h}_count`, { model: m }), sent[m].n, `${h}_count of ${m}`);
      assert.ok(value(s, `${h}_sum`, { model: m }) >= 0);
    }
  }
});

test('the page is Prometheus text 0.0.4 with HELP and TYPE, workers by state and in flight', async () => {
  const { res, samples: s } = await scrape();
  assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const typed = new Set([...res.text.matchAll(/^# TYPE (\S+) (counter|gauge|histogram)$/gm)].map((m) => m[1]));
  for (const x of s) {
    const family = x.name.replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(x.name) || typed.has(family), `# TYPE for ${x.name}`);
    assert.ok(x.name.startsWith('aigw_'), x.name);
  }
  const states = Object.fromEntries(s.filter((x) => x.name === 'aigw_workers').map((x) => [x.labels.state, x.value]));
  assert.ok('idle' in states && 'busy' in states, JSON.stringify(states));
  assert.equal((states.idle ?? 0) + (states.busy ?? 0) + (states.keepalive ?? 0), 2, JSON.stringify(states));
  assert.ok(states.busy >= 1, 'the worker answering /metrics is busy');
  assert.ok(value(s, 'aigw_in_flight_requests') >= 1, 'the scrape itself is in flight');
  assert.ok(value(s, 'aigw_client_connections') >= 1, 'the scrape\'s own connection is open');
});

test('aigw_reloads_total counts reloads by result', async () => {
  const { gw } = ctx;
  let { samples: s } = await scrape();
  const ok0 = value(s, 'aigw_reloads_total', { result: 'ok' });
  const failed0 = value(s, 'aigw_reloads_total', { result: 'failed' });
  assert.equal(ok0, 0);
  assert.equal(failed0, 0);
  assert.equal((await gw.ctl(['reload'])).code, 0);
  ({ samples: s } = await scrape());
  assert.equal(value(s, 'aigw_reloads_total', { result: 'ok' }), 1);
  assert.equal(value(s, 'aigw_config_generation'), (await gw.status()).generation);

  const good = fs.readFileSync(gw.configPath, 'utf8');
  try {
    fs.writeFileSync(gw.configPath, `${good}no_such_key: 1\n`);
    assert.equal((await gw.ctl(['reload'])).code, 1);
  } finally {
    fs.writeFileSync(gw.configPath, good);
  }
  ({ samples: s } = await scrape());
  assert.equal(value(s, 'aigw_reloads_total', { result: 'ok' }), 1);
  assert.equal(value(s, 'aigw_reloads_total', { result: 'failed' }), 1);
});

test('/metrics is not on the client listener, and /v1 is not on the metrics listener', async () => {
  const { gw } = ctx;
  const [key] = Object.keys(sent.keys);
  assert.equal((await gw.get('/metrics')).status, 404);
  const v1 = await request(metricsPort, { path: '/v1/models', headers: { Authorization: `Bearer ${key}` } });
  assert.equal(v1.status, 404);
  const chat = await request(metricsPort, { method: 'POST', path: '/v1/chat/completions', body: { model: 'demo', messages: [] } });
  assert.equal(chat.status, 404);
});
