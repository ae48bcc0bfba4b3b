// catalogue.test.mjs - the model catalogue: GET /v1/models in OpenAI's
// shape with aigw's own member (type, context length, prices, targets,
// status from breakers), read by the official openai client; aigwctl
// model list|show; and model example, whose curl and node output runs.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

import { run, test, useGateway } from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

let key;
const ctx = useGateway({
  http: { keepalive_timeout: '2s' },
  providers: [{ name: 'dead', base_url: 'http://127.0.0.1:1/v1' }],
  models: [
    { name: 'priced', context_length: 8192,
      targets: [{ provider: 'local', model: 'mock-small', price: { input: 0.5, output: 1.5 } }] },
    { name: 'vec', type: 'embeddings', targets: [{ provider: 'local', model: 'mock-embed-v1' }] },
    { name: 'broken', routing: { retries: 0, breaker: { failures: 1, cooldown: '10m' } },
      targets: [{ provider: 'dead', model: 'gone' }] },
  ],
}, async (gw) => {
  ({ key } = await gw.createKey({ name: 'catalogue' }));
});

const byId = (list) => Object.fromEntries(list.map((m) => [m.id, m]));

test('GET /v1/models keeps OpenAI\'s shape and adds type, context, prices, targets and status', async () => {
  const res = await ctx.gw.get('/v1/models', key);
  assert.equal(res.status, 200);
  const body = res.json();
  assert.equal(body.object, 'list');
  for (const m of body.data) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(m.owned_by, 'aigw');
    assert.ok(['ok', 'degraded', 'down'].includes(m.aigw.status));
  }
  const models = byId(body.data);
  assert.deepEqual(models.priced.aigw, {
    type: 'chat',
    context_length: 8192,
    pricing: { input: 0.5, output: 1.5, unit: 'per_million_tokens' },
    targets: [{
      provider: 'local', model: 'mock-small', weight: 1,
      pricing: { input: 0.5, output: 1.5, unit: 'per_million_tokens' },
      status: 'ok', breaker: 'closed', health: 'up',
    }],
    status: 'ok',
  });
  assert.equal(models.vec.aigw.type, 'embeddings');
  assert.equal(models.vec.aigw.context_length, null);
  assert.equal(models.vec.aigw.pricing, null);
  assert.equal(models.demo.aigw.type, 'chat');
});

test('a model whose only target\'s breaker is open is down', async () => {
  const res = await ctx.gw.chat(key, { model: 'broken' });
  assert.equal(res.status, 502, res.text);
  const m = (await ctx.gw.get('/v1/models/broken', key)).json();
  assert.equal(m.id, 'broken');
  assert.equal(m.aigw.status, 'down');
  assert.equal(m.aigw.targets[0].status, 'down');
  assert.equal(m.aigw.targets[0].breaker, 'open');
});

test('the openai client lists and retrieves models, aigw member included', async () => {
  const client = new OpenAI({ apiKey: key, baseURL: `${ctx.gw.url}/v1`, maxRetries: 0, timeout: 15000 });
  const ids = [];
  for await (const m of client.models.list()) {
    ids.push(m.id);
    assert.equal(m.object, 'model');
  }
  for (const id of ['demo', 'priced', 'vec', 'broken']) assert.ok(ids.includes(id), `${id} in ${ids}`);
  const m = await client.models.retrieve('priced');
  assert.equal(m.id, 'priced');
  assert.equal(m.owned_by, 'aigw');
  assert.equal(m.aigw.context_length, 8192);
  assert.equal(m.aigw.pricing.output, 1.5);
});

test('aigwctl model list and show say what /v1/models says', async () => {
  const list = await ctx.gw.ctlJson(['model', 'list']);
  const api = byId((await ctx.gw.get('/v1/models', key)).json().data);
  assert.deepEqual(list.map((m) => m.id).sort(), Object.keys(api).sort());
  assert.deepEqual(byId(list).priced.aigw, api.priced.aigw);

  const table = await ctx.gw.ctl(['model', 'list']);
  assert.equal(table.code, 0);
  assert.match(table.stdout, /^MODEL\s+TYPE\s+STATUS\s+CONTEXT\s+PRICE_IN\/OUT\s+TARGETS/);
  assert.match(table.stdout, /\npriced\s+chat\s+ok\s+8192\s+0\.5\/1\.5\s+local\/mock-small\(ok\)/);
  assert.match(table.stdout, /\nvec\s+embeddings\s+ok\s+-\s+-\s+local\/mock-embed-v1\(ok\)/);
  assert.match(table.stdout, /\nbroken\s+chat\s+down\s/);

  const show = await ctx.gw.ctlJson(['model', 'show', 'vec']);
  assert.equal(show.id, 'vec');
  assert.equal(show.aigw.type, 'embeddings');
  const text = await ctx.gw.ctl(['model', 'show', 'priced']);
  assert.match(text.stdout, /local\/mock-small\s+1\s+ok\s+closed\s+up\s+0\.5\/1\.5/);
  const none = await ctx.gw.ctl(['model', 'show', 'nope']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /unknown model "nope"/);
});

test('model example prints a call for the model\'s type that runs as printed', async () => {
  const url = ctx.gw.url;
  const curl = (await ctx.gw.ctl(['model', 'example', 'priced', '--lang', 'curl'])).stdout;
  assert.match(curl, new RegExp(`^curl ${url}/v1/chat/completions `));
  assert.match(curl, /Authorization: Bearer \$AIGW_API_KEY/);
  const ran = execFileSync('bash', ['-c', curl], { env: { ...process.env, AIGW_API_KEY: key }, encoding: 'utf8' });
  assert.equal(JSON.parse(ran).object, 'chat.completion');

  const vec = (await ctx.gw.ctl(['model', 'example', 'vec', '--lang', 'curl'])).stdout;
  assert.match(vec, /\/v1\/embeddings /);
  const emb = execFileSync('bash', ['-c', vec], { env: { ...process.env, AIGW_API_KEY: key }, encoding: 'utf8' });
  assert.equal(JSON.parse(emb).data[0].object, 'embedding');

  const py = (await ctx.gw.ctl(['model', 'example', 'vec', '--lang', 'python'])).stdout;
  assert.match(py, /from openai import OpenAI/);
  assert.match(py, new RegExp(`base_url="${url}/v1", api_key=os.environ\\["AIGW_API_KEY"\\]`));
  assert.match(py, /client\.embeddings\.create\(model="vec", input=/);

  // The node example, run with this directory's openai package.
  const node = (await ctx.gw.ctl(['model', 'example', 'priced', '--lang', 'node'])).stdout;
  assert.match(node, /client\.chat\.completions\.create\(\{ model: "priced"/);
  const file = path.join(here, `.example-${process.pid}.mjs`);
  fs.writeFileSync(file, node);
  try {
    const r = await run(process.execPath, [file], { env: { AIGW_API_KEY: key } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'tok0 tok1 tok2 tok3 tok4');
  } finally {
    fs.rmSync(file, { force: true });
  }

  const bad = await ctx.gw.ctl(['model', 'example', 'priced', '--lang', 'cobol']);
  assert.equal(bad.code, 2);
});
