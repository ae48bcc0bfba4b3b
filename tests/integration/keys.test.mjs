// keys.test.mjs - API keys through aigwctl: create, list, show, disable,
// enable, delete; model restrictions; changes seen by every worker at
// once; secrets kept out of the state directory and the log; aigwctl's
// exit statuses and socket selection.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { AIGWCTL, assertError, run, startGateway, startMock, test, useGateway } from './lib/harness.mjs';

const WORKERS = 4;
const ctx = useGateway({ workers: WORKERS });

const auth = (key) => ({ Authorization: `Bearer ${key}` });

// One keep-alive connection per worker: a worker serves one connection at
// a time, so WORKERS connections that each got an answer are held by
// WORKERS different workers.  Returns the open connections.
async function holdEveryWorker(gw, key) {
  const conns = [];
  for (let i = 0; i < gw.workers; i++) {
    const c = await gw.conn();
    conns.push(c);
    await c.send({ method: 'GET', path: '/v1/models', headers: auth(key) });
  }
  for (const c of conns) {
    const res = await c.readResponse();
    assert.equal(res.status, 200, res.text);
  }
  return conns;
}

// The next answer on each held connection to a chat request with key.
async function askEach(conns, key) {
  const out = [];
  for (const c of conns) {
    await c.send({ method: 'POST', path: '/v1/chat/completions', headers: auth(key), body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] } });
    out.push(await c.readResponse());
  }
  return out;
}

// count requests on fresh connections, `parallel` at a time.
async function spray(gw, key, count = 24, parallel = 8) {
  const results = [];
  for (let i = 0; i < count; i += parallel) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + parallel); j++) batch.push(gw.chat(key, {}));
    results.push(...(await Promise.all(batch)));
  }
  return results;
}

function filesUnder(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

test('key create --json prints the id, the secret key and the name', async () => {
  const k = await ctx.gw.createKey({ name: 'alice' });
  assert.match(k.id, /^key_[0-9a-f]+$/);
  assert.match(k.key, /^sk-aigw-[A-Za-z0-9_-]{32,}$/);
  assert.equal(k.name, 'alice');
});

test('key create without --json shows the key once, with a warning', async () => {
  const r = await ctx.gw.ctl(['key', 'create', '--name', 'bob']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /sk-aigw-[A-Za-z0-9_-]{32,}/);
  assert.match(r.stdout, /only time/);
});

test('two keys never share a secret or an id', async () => {
  const a = await ctx.gw.createKey();
  const b = await ctx.gw.createKey();
  assert.notEqual(a.key, b.key);
  assert.notEqual(a.id, b.id);
});

test('a new key is accepted at once', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  const res = await gw.chat(k.key, {});
  assert.equal(res.status, 200, res.text);
});

test('key list --json lists every key without its secret', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ name: 'listed' });
  const r = await gw.ctl(['key', 'list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(k.key), 'the secret is not listed');
  const list = JSON.parse(r.stdout);
  assert.ok(Array.isArray(list));
  const row = list.find((x) => x.id === k.id);
  assert.ok(row, `${k.id} is listed`);
  assert.equal(row.name, 'listed');
  assert.deepEqual(row.models, []);
  assert.equal(row.disabled, false);
  assert.ok(Math.abs(row.created - Date.now() / 1000) < 120, `created ${row.created} is now`);
  assert.equal(typeof row.prefix, 'string');
  assert.ok(k.key.startsWith(row.prefix.replace(/\.+$/, '')), `prefix ${row.prefix} begins the key`);
  assert.ok(row.prefix.replace(/\.+$/, '').length < k.key.length / 2, 'the prefix is far too short to use');
  for (const field of ['id', 'name', 'prefix', 'models', 'disabled', 'created']) assert.ok(field in row, field);
  assert.ok(!('key' in row) && !('secret' in row) && !('hash' in row));
});

test('key list prints a table for people', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ name: 'tabled' });
  const r = await gw.ctl(['key', 'list']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^ID\s+NAME\s+PREFIX\s+STATUS/);
  assert.match(r.stdout, new RegExp(`${k.id}\\s+tabled\\s+\\S+\\s+active`));
  assert.ok(!r.stdout.includes(k.key));
});

test('key show --json shows one key without its secret', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ name: 'shown', models: ['demo'] });
  const r = await gw.ctl(['key', 'show', k.id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(k.key));
  const row = JSON.parse(r.stdout);
  assert.equal(row.id, k.id);
  assert.equal(row.name, 'shown');
  assert.deepEqual(row.models, ['demo']);
  assert.equal(row.disabled, false);
});

test('a disabled key is refused by every worker at once', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  const conns = await holdEveryWorker(gw, k.key);
  try {
    const r = await gw.ctl(['key', 'disable', k.id]);
    assert.equal(r.code, 0, r.stderr);
    for (const res of await askEach(conns, k.key)) assertError(assert, res, 401, 'api_key_disabled');
  } finally {
    for (const c of conns) c.close();
  }
  for (const res of await spray(gw, k.key)) assertError(assert, res, 401, 'api_key_disabled');
  const shown = await gw.ctlJson(['key', 'show', k.id]);
  assert.equal(shown.disabled, true);
  const table = await gw.ctl(['key', 'list']);
  assert.match(table.stdout, new RegExp(`${k.id}\\s+\\S+\\s+\\S+\\s+disabled`));
});

test('a re-enabled key is accepted by every worker at once', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  assert.equal((await gw.ctl(['key', 'disable', k.id])).code, 0);
  const other = await gw.createKey(); // holds the workers while k is disabled
  const conns = await holdEveryWorker(gw, other.key);
  try {
    for (const res of await askEach(conns, k.key)) assertError(assert, res, 401, 'api_key_disabled');
    const r = await gw.ctl(['key', 'enable', k.id]);
    assert.equal(r.code, 0, r.stderr);
    for (const res of await askEach(conns, k.key)) assert.equal(res.status, 200, res.text);
  } finally {
    for (const c of conns) c.close();
  }
  for (const res of await spray(gw, k.key)) assert.equal(res.status, 200, res.text);
  assert.equal((await gw.ctlJson(['key', 'show', k.id])).disabled, false);
});

test('a deleted key is refused by every worker at once and is gone from the list', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  const conns = await holdEveryWorker(gw, k.key);
  try {
    const r = await gw.ctl(['key', 'delete', k.id]);
    assert.equal(r.code, 0, r.stderr);
    for (const res of await askEach(conns, k.key)) assertError(assert, res, 401, 'invalid_api_key');
  } finally {
    for (const c of conns) c.close();
  }
  for (const res of await spray(gw, k.key)) assertError(assert, res, 401, 'invalid_api_key');
  const list = await gw.ctlJson(['key', 'list']);
  assert.ok(!list.some((x) => x.id === k.id));
  const shown = await gw.ctl(['key', 'show', k.id]);
  assert.equal(shown.code, 1);
  assert.match(shown.stderr, /no key/);
});

test('a key restricted with --models gets 403 for any other model', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ models: ['demo'] });
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  const res = await gw.chat(k.key, { model: 'other' });
  assertError(assert, res, 403, 'model_not_allowed', { param: 'model' });
  const emb = await gw.post('/v1/embeddings', k.key, { model: 'demo-embed', input: 'x' });
  assertError(assert, emb, 403, 'model_not_allowed');
});

test('keys that change from request to request on one connection are each checked as themselves', async () => {
  // A worker remembers the last key a connection presented (and its hash):
  // another key, a wrong one, or the first one again must each be taken
  // for what it is.
  const { gw } = ctx;
  const open = await gw.createKey();
  const narrow = await gw.createKey({ models: ['demo'] });
  const c = await gw.conn();
  const ask = async (key, model) => {
    await c.send({ method: 'POST', path: '/v1/chat/completions', headers: auth(key), body: { model, messages: [{ role: 'user', content: 'hi' }] } });
    return c.readResponse();
  };
  try {
    assert.equal((await ask(open.key, 'other')).status, 200);
    assertError(assert, await ask(narrow.key, 'other'), 403, 'model_not_allowed');
    assertError(assert, await ask(open.key.slice(0, -1) + (open.key.endsWith('x') ? 'y' : 'x'), 'other'), 401, 'invalid_api_key');
    assert.equal((await ask(open.key, 'other')).status, 200);
    assertError(assert, await ask(narrow.key, 'other'), 403, 'model_not_allowed');
    assert.equal((await ask(narrow.key, 'demo')).status, 200);
  } finally {
    c.close();
  }
});

test('a key restricted to several models may use each of them', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ models: ['demo', 'demo-embed'] });
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  assert.equal((await gw.post('/v1/embeddings', k.key, { model: 'demo-embed', input: 'x' })).status, 200);
  assertError(assert, await gw.chat(k.key, { model: 'other' }), 403, 'model_not_allowed');
});

test('a restricted key sees only its models in /v1/models', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ models: ['demo'] });
  const res = await gw.get('/v1/models', k.key);
  assert.equal(res.status, 200);
  const list = res.json();
  assert.equal(list.object, 'list');
  assert.deepEqual(list.data.map((m) => m.id), ['demo']);
  assert.equal((await gw.get('/v1/models/demo', k.key)).json().id, 'demo');
  assertError(assert, await gw.get('/v1/models/other', k.key), 404, 'model_not_found');
});

test('an unrestricted key sees every model in /v1/models', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  const list = (await gw.get('/v1/models', k.key)).json();
  assert.deepEqual(list.data.map((m) => m.id).sort(), ['demo', 'demo-embed', 'other']);
  for (const m of list.data) assert.equal(m.object, 'model');
});

test('--models naming an unknown model is refused and creates no key', async () => {
  const { gw } = ctx;
  const before = await gw.ctlJson(['key', 'list']);
  const r = await gw.ctl(['key', 'create', '--name', 'typo', '--models', 'demo,no-such-model']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no-such-model/);
  assert.equal(r.stdout.includes('sk-aigw-'), false);
  const after = await gw.ctlJson(['key', 'list']);
  assert.equal(after.length, before.length);
});

test('key create refuses an empty name', async () => {
  const r = await ctx.gw.ctl(['key', 'create', '--name', '']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /name/);
});

// A key's name is printed on administrators' terminals (key list): no
// control character, C1 included, which a terminal may take for CSI.
test('key create refuses a name with a control character, and takes other UTF-8', async () => {
  for (const name of ['a\x1b[2Jb', 'tab\there', 'del\x7f', 'csi\u009b1m']) {
    const r = await ctx.gw.ctl(['key', 'create', '--name', name]);
    assert.equal(r.code, 1, JSON.stringify(name));
    assert.match(r.stderr, /key name contains a control character/);
  }
  const k = await ctx.gw.ctlJson(['key', 'create', '--name', 'équipe ¡ü']);
  assert.equal(k.name, 'équipe ¡ü');
});

test('the plain key is stored nowhere under state_dir', async () => {
  const { gw } = ctx;
  const keys = [await gw.createKey(), await gw.createKey({ models: ['demo'] })];
  for (const k of keys) assert.equal((await gw.chat(k.key, {})).status, 200);
  await gw.ctl(['key', 'disable', keys[0].id]);
  const files = filesUnder(gw.stateDir);
  assert.ok(files.some((f) => f.endsWith('data.mdb')), `LMDB is in state_dir: ${files}`);
  for (const f of files) {
    const data = fs.readFileSync(f);
    for (const k of keys) {
      const random = k.key.slice('sk-aigw-'.length);
      assert.equal(data.includes(k.key), false, `${f} holds the key`);
      assert.equal(data.includes(random), false, `${f} holds the key's random part`);
      assert.equal(data.includes(random.slice(8, 28)), false, `${f} holds a piece of the key`);
    }
  }
});

test('the plain key never appears in the log, even when refused', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ models: ['demo'] });
  await gw.chat(k.key, {});
  await gw.chat(k.key, { model: 'other' });
  await gw.chat(k.key, {}, { 'x-mock-status': '500' });
  await gw.ctl(['key', 'disable', k.id]);
  await gw.chat(k.key, {});
  const bogus = 'sk-aigw-this-key-does-not-exist-0000000000000';
  await gw.chat(bogus, {});
  const res = await gw.chat(k.key, {}, { 'x-request-id': 'keys-log-check' });
  await gw.accessRecord('keys-log-check');
  assertError(assert, res, 401, 'api_key_disabled');
  const log = gw.log();
  assert.ok(log.includes(k.id), 'the log names keys by id');
  const random = k.key.slice('sk-aigw-'.length);
  assert.equal(log.includes(random.slice(4, 24)), false, 'no piece of the key is logged');
  assert.equal(log.includes(bogus), false, 'a refused key is not logged');
});

test('a key whose secret differs by one character is refused', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  const last = k.key.at(-1) === 'A' ? 'B' : 'A';
  assertError(assert, await gw.chat(k.key.slice(0, -1) + last, {}), 401, 'invalid_api_key');
  assertError(assert, await gw.chat(k.key.slice(0, -1), {}), 401, 'invalid_api_key');
  assertError(assert, await gw.chat(`${k.key}x`, {}), 401, 'invalid_api_key');
});

test('keys survive a restart of aigwd', async () => {
  const mock = await startMock();
  let gw = await startGateway({ mock });
  try {
    const k = await gw.createKey({ models: ['demo'] });
    const gone = await gw.createKey();
    await gw.ctl(['key', 'delete', gone.id]);
    const { dir, port } = gw;
    assert.equal((await gw.stop({ keepDir: true })).code, 0);
    gw = await startGateway({ mock, dir, port });
    assert.equal((await gw.chat(k.key, {})).status, 200);
    assertError(assert, await gw.chat(k.key, { model: 'other' }), 403, 'model_not_allowed');
    assertError(assert, await gw.chat(gone.key, {}), 401, 'invalid_api_key');
  } finally {
    await gw.stop();
    await mock.stop();
  }
});

// ------------------------------------------------------------- aigwctl

test('aigwctl exits 0 on success', async () => {
  const r = await ctx.gw.ctl(['status']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /\bworkers\b/);
  assert.ok(r.stdout.includes(String(ctx.gw.pid)), 'names the master pid');
});

test('aigwctl exits 1 when the master refuses the command', async () => {
  for (const args of [['key', 'show', 'key_000000000000'], ['key', 'disable', 'key_000000000000'],
    ['key', 'enable', 'key_000000000000'], ['key', 'delete', 'key_000000000000']]) {
    const r = await ctx.gw.ctl(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /key_000000000000/);
  }
});

test('aigwctl exits 2 on a usage error', async () => {
  for (const args of [[], ['frobnicate'], ['key'], ['key', 'frobnicate'], ['key', 'create'],
    ['key', 'show'], ['status', '--bogus'], ['--bogus', 'status']]) {
    const r = await ctx.gw.ctl(args);
    assert.equal(r.code, 2, `aigwctl ${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.match(r.stderr, /usage/);
  }
  // Commands of one operand name what is missing, or what is extra.
  for (const [args, re] of [
    [['key', 'rotate'], /key rotate: which key\? give its ID/],
    [['key', 'show', 'a', 'b'], /key show: unexpected argument b/],
    [['breaker', 'reset', '--bad'], /breaker reset: unexpected argument --bad/],
    [['provider', 'test'], /provider test: which credential\? give its NAME/],
  ]) {
    const r = await ctx.gw.ctl(args);
    assert.equal(r.code, 2, `aigwctl ${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});

test('aigwctl exits 3 when the master cannot be reached', async () => {
  const r = await ctx.gw.ctl(['status'], { socket: path.join(ctx.gw.dir, 'nobody-here.sock') });
  assert.equal(r.code, 3);
  assert.match(r.stderr, /nobody-here\.sock/);
});

test('aigwctl help and -h print the usage and exit 0', async () => {
  for (const args of [['help'], ['-h']]) {
    const r = await run(AIGWCTL, args);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^usage: aigwctl/);
    assert.match(r.stdout, /key create/);
  }
});

test('aigwctl finds the socket through AIGW_SOCKET', async () => {
  const { gw } = ctx;
  const r = await gw.ctl(['status', '--json'], { socket: null, env: { AIGW_SOCKET: gw.socket } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).pid, gw.pid);
});

test('aigwctl -s takes precedence over AIGW_SOCKET', async () => {
  const { gw } = ctx;
  const bogus = path.join(gw.dir, 'bogus.sock');
  const ok = await gw.ctl(['status'], { env: { AIGW_SOCKET: bogus } });
  assert.equal(ok.code, 0, ok.stderr);
  const bad = await gw.ctl(['status'], { socket: bogus, env: { AIGW_SOCKET: gw.socket } });
  assert.equal(bad.code, 3);
});

test('a key made with --expires works until then, and is refused with api_key_expired after', async () => {
  const { gw } = ctx;
  const k = await gw.ctlJson(['key', 'create', '--name', 'short-lived', '--expires', '2s']);
  const shown = await gw.ctlJson(['key', 'show', k.id]);
  const now = Date.now() / 1000;
  assert.ok(shown.expires > now && shown.expires <= now + 3, `expires ${shown.expires}`);
  assert.equal((await gw.chat(k.key, {})).status, 200);
  await new Promise((r) => setTimeout(r, 2200));
  const r = await gw.chat(k.key, {});
  const err = assertError(assert, r, 401, 'api_key_expired');
  assert.match(err.message, new RegExp(`This API key \\(${k.id}\\) expired at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ`));
  const list = await gw.ctl(['key', 'list']);
  assert.match(list.stdout, new RegExp(`${k.id}\\s+short-lived\\s+\\S+\\s+expired`));
  // A date: accepted when in the future, refused in the past or malformed.
  const later = await gw.ctlJson(['key', 'create', '--name', 'dated', '--expires', '2999-01-01']);
  assert.equal((await gw.ctlJson(['key', 'show', later.id])).expires, 32472144000);
  for (const bad of ['2001-01-01', 'soon', '0d']) {
    const res = await gw.ctl(['key', 'create', '--name', 'x', '--expires', bad]);
    assert.equal(res.code, 1, bad);
    assert.match(res.stderr, /--expires .*: expected a date .* in the future/);
  }
});
