// capture.test.mjs - request capture: one JSON line per captured request
// with the request, the whole answer (a stream put back together), usage,
// ids, timings and the cache flag; never a secret; per model, key and
// tenant; files by day or by size, reopened on SIGUSR1; aigwctl logs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

import {
  AIGWCTL, UPSTREAM_KEY, eventually, freePort, onSmallDisk, request, sleep, startGateway, tempDir, test, useGateway,
} from './lib/harness.mjs';

// The directories this file makes, removed once it is done.
const made = [];
const capTemp = (prefix) => {
  const d = tempDir(prefix);
  made.push(d);
  return d;
};

const dir = path.join(capTemp('aigw-capture-'), 'capture');
const ctx = useGateway({
  workers: 3,
  capture: { dir },
  cache: { max_size: '16m' },
  models: [
    { name: 'cap', capture: true, targets: [{ provider: 'local', model: 'mock-small' }] },
    { name: 'capcached', capture: true, cache: { ttl: '10m' }, targets: [{ provider: 'local', model: 'mock-small' }] },
  ],
}, async (gw, c) => {
  c.k = await gw.createKey();
  c.key = c.k.key;
});
after(() => { for (const d of made) fs.rmSync(d, { recursive: true, force: true }); });

const today = () => new Date().toISOString().slice(0, 10);

function files(d = dir) {
  return fs.existsSync(d) ? fs.readdirSync(d).filter((f) => /^capture-.*\.jsonl$/.test(f)).sort() : [];
}

function records(d = dir) {
  const out = [];
  for (const f of files(d)) {
    // Every line is one whole record.  What follows the last newline is a
    // record being written right now (one write(2), which a reader may see
    // half done): not a line yet.
    const lines = fs.readFileSync(path.join(d, f), 'utf8').split('\n').slice(0, -1);
    for (const line of lines) {
      if (line) out.push(JSON.parse(line));
    }
  }
  return out;
}

const recordOf = (id, d = dir) => eventually(() => records(d).find((r) => r.request_id === id),
  { what: `a capture record for ${id}` });

let n = 0;
const rid = (what) => `${what}-${process.pid}-${++n}`;

const chat = (body, headers = {}, key = ctx.key) =>
  ctx.gw.post('/v1/chat/completions', key, { model: 'cap', messages: [{ role: 'user', content: 'hello capture' }], ...body }, headers);

test('a non-streamed request is captured whole: request, response, usage, ids, timings', async () => {
  const id = rid('full');
  const tools = [{ type: 'function', function: { name: 'lookup', description: 'find', parameters: { type: 'object', properties: { q: { type: 'string' } } } } }];
  const body = {
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'what is\nnew?' }],
    temperature: 0.4, max_tokens: 50, tools, tool_choice: 'auto',
  };
  const res = await chat(body, { 'x-request-id': id, 'x-mock-chunks': '3' });
  assert.equal(res.status, 200);
  const r = await recordOf(id);
  assert.equal(files().length, 1);
  assert.equal(files()[0], `capture-${today()}.jsonl`);
  assert.match(r.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(r.key_id, ctx.k.id);
  assert.equal(r.tenant, null);
  assert.equal(r.model, 'cap');
  assert.equal(r.target, 'local/mock-small');
  assert.equal(r.endpoint, '/v1/chat/completions');
  assert.equal(r.stream, false);
  assert.equal(r.status, 200);
  assert.equal(r.upstream_status, 200);
  assert.equal(r.cache_hit, false);
  assert.equal(typeof r.duration_ms, 'number');
  assert.equal(typeof r.ttfb_ms, 'number');
  assert.deepEqual(r.request, { model: 'cap', ...body });
  assert.deepEqual(r.response, res.json());
  assert.equal(r.response_complete, true);
  assert.deepEqual(r.usage, res.json().usage);
  assert.deepEqual(r.safety, []);
});

test('a streamed answer is captured put back together, usage included', async () => {
  const id = rid('stream');
  const res = await chat({ stream: true }, { 'x-request-id': id, 'x-mock-chunks': '6' });
  const content = res.events.filter((e) => e.json).map((e) => e.json.choices?.[0]?.delta?.content ?? '').join('');
  assert.equal(content, 'tok0 tok1 tok2 tok3 tok4 tok5 ');
  const r = await recordOf(id);
  assert.equal(r.stream, true);
  assert.equal(r.request.stream, true);
  assert.equal(r.response.object, 'chat.completion');
  assert.equal(r.response.choices[0].message.role, 'assistant');
  assert.equal(r.response.choices[0].message.content, content);
  assert.equal(r.response.choices[0].finish_reason, 'stop');
  assert.equal(r.response.model, 'mock-small');
  assert.equal(r.response_complete, true);
  assert.equal(r.usage.completion_tokens, 6);
  assert.deepEqual(r.response.usage, r.usage);
});

test('a cut stream is captured as incomplete; an error with its status and no response', async () => {
  const id = rid('cut');
  await chat({ stream: true }, { 'x-request-id': id, 'x-mock-drop-after': '2' });
  const r = await recordOf(id);
  assert.equal(r.response_complete, false);
  assert.equal(r.response.choices[0].message.content, 'tok0 tok1 ');
  const eid = rid('err');
  assert.equal((await chat({}, { 'x-request-id': eid, 'x-mock-status': '500' })).status, 502);
  const e = await recordOf(eid);
  assert.equal(e.status, 502);
  assert.equal(e.response, null);
});

test('a cache hit is captured with cache_hit and the answer it got', async () => {
  const body = { model: 'capcached', messages: [{ role: 'user', content: `cached ${process.pid}` }] };
  const a = await chat(body, { 'x-request-id': rid('miss') });
  const id = rid('hit');
  const b = await chat({ ...body, stream: true }, { 'x-request-id': id });
  assert.equal(b.headers['x-aigw-cache'], 'hit');
  const r = await recordOf(id);
  assert.equal(r.cache_hit, true);
  assert.equal(r.target, null);
  assert.deepEqual(r.usage, { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
  assert.deepEqual(r.response, a.json());
});

test('a model without capture: true is not captured, unless its key or tenant is listed', async () => {
  const id = rid('plain');
  await chat({ model: 'demo' }, { 'x-request-id': id });
  await chat({}, { 'x-request-id': rid('after') }); // a captured one, written after it
  await recordOf(`after-${process.pid}-${n}`);
  assert.equal(records().find((r) => r.request_id === id), undefined);

  // capture.keys and capture.tenants take effect on reload
  const gw = ctx.gw;
  const other = await gw.createKey();
  assert.equal((await gw.ctl(['tenant', 'add', 'acme'])).code, 0);
  assert.equal((await gw.ctl(['user', 'add', 'ana', '--tenant', 'acme'])).code, 0);
  assert.equal((await gw.ctl(['grant', 'ana', 'endpoint-user', '--model', 'demo'])).code, 0);
  const ana = await gw.ctlJson(['key', 'create', '--name', 'ana-key', '--user', 'ana']);
  gw.rewriteConfig({ capture: { dir, keys: [other.id], tenants: ['acme'] } });
  assert.equal((await gw.ctl(['reload'])).code, 0);
  const byKey = rid('bykey');
  const byTenant = rid('bytenant');
  const notListed = rid('notlisted');
  assert.equal((await chat({ model: 'demo' }, { 'x-request-id': byKey }, other.key)).status, 200);
  assert.equal((await chat({ model: 'demo' }, { 'x-request-id': byTenant }, ana.key)).status, 200);
  await chat({ model: 'demo' }, { 'x-request-id': notListed });
  assert.equal((await recordOf(byKey)).key_id, other.id);
  const t = await recordOf(byTenant);
  assert.equal(t.tenant, 'acme');
  assert.equal(t.key_id, ana.id);
  await chat({}, { 'x-request-id': rid('after2') });
  await recordOf(`after2-${process.pid}-${n}`);
  assert.equal(records().find((r) => r.request_id === notListed), undefined);
});

test('no secret in any capture file: neither the client key nor the upstream key', async () => {
  await chat({ stream: true }, { 'x-request-id': rid('secret'), 'x-api-key': 'sk-other-secret-value' });
  await chat({}, { 'x-request-id': rid('secret2') });
  await recordOf(`secret2-${process.pid}-${n}`);
  const all = files().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
  assert.ok(all.length > 0);
  assert.ok(!all.includes(ctx.key), 'client key in a capture file');
  assert.ok(!all.includes(ctx.key.slice(8)), 'client key body in a capture file');
  assert.ok(!all.includes(UPSTREAM_KEY), 'upstream key in a capture file');
  assert.ok(!all.includes('sk-other-secret-value'));
  assert.ok(!/authorization/i.test(all), 'a header in a capture file');
});

test('many workers at once never interleave records', async () => {
  const ids = Array.from({ length: 60 }, () => rid('many'));
  await Promise.all(ids.map((id, i) => chat({ stream: i % 2 === 0 }, { 'x-request-id': id, 'x-mock-chunks': String(50 + i) })));
  await eventually(() => ids.every((id) => records().some((r) => r.request_id === id)), { what: 'all 60 records' });
  const text = files().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
  assert.ok(text.endsWith('\n'));
  for (const line of text.split('\n').filter(Boolean)) JSON.parse(line);
});

test('SIGUSR1 reopens the capture file by name (logrotate)', async () => {
  const first = await recordOf(`many-${process.pid}-${n}`);
  assert.ok(first);
  const name = path.join(dir, files().at(-1));
  const moved = `${name}.1`;
  fs.renameSync(name, moved);
  const before = fs.readFileSync(moved, 'utf8');
  ctx.gw.signal('SIGUSR1');
  await ctx.gw.waitLog(/SIGUSR1: reopening log files/);
  await sleep(300);
  // Every worker writes its next record to a new file of the same name.
  const ids = Array.from({ length: 9 }, () => rid('rotated'));
  for (const id of ids) await chat({}, { 'x-request-id': id });
  await eventually(() => fs.existsSync(name) && ids.every((id) => fs.readFileSync(name, 'utf8').includes(id)),
    { what: 'records in the reopened file' });
  assert.equal(fs.readFileSync(moved, 'utf8'), before, 'nothing more went to the moved file');
});

test('aigwctl logs: filters by key, model and time; --json; the summary', async () => {
  const gw = ctx.gw;
  const k2 = await gw.createKey();
  const id = rid('logs');
  await chat({ messages: [{ role: 'user', content: 'which logs?' }] }, { 'x-request-id': id, 'x-mock-chunks': '2' }, k2.key);
  await recordOf(id);
  let r = await gw.ctl(['logs', '--key', k2.id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.request_id), [id]);
  const cid = rid('logs-model');
  await chat({ model: 'capcached' }, { 'x-request-id': cid });
  await recordOf(cid);
  r = await gw.ctl(['logs', '--model', 'capcached', '--json']);
  const byModel = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(byModel.some((l) => l.request_id === cid));
  assert.ok(byModel.every((l) => l.model === 'capcached'));
  r = await gw.ctl(['logs', '--since', '2099-01-01', '--json']);
  assert.equal(r.stdout, '');
  r = await gw.ctl(['logs', '--since', '10m', '--key', k2.id]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, new RegExp(`${id}\\s+${k2.id}\\s+cap\\s+status=200 tokens=\\d+/2`));
  assert.match(r.stdout, /^ {2}> which logs\?$/m);
  assert.match(r.stdout, /^ {2}< tok0 tok1 $/m);
  r = await gw.ctl(['logs', '--since', 'yesterday']);
  assert.equal(r.code, 2);
  // --dir reads the files without asking the gateway
  r = await gw.ctl(['logs', '--dir', dir, '--key', k2.id, '--json'], { socket: null });
  assert.equal(r.stdout.trim().split('\n').length, 1);
});

// The summary shows a client's prompt: an escape sequence in it must not
// reach the administrator's terminal, and a long one is cut between
// characters, not inside one.
test('aigwctl logs: the control characters of a prompt are shown as ?, a long one cut between characters', async () => {
  const gw = ctx.gw;
  const k = await gw.createKey();
  const hostile = `\x1b[2J\x1b]0;owned\x07 \u009b1m ${'é'.repeat(60)}`;
  const id = rid('logs-escape');
  await chat({ messages: [{ role: 'user', content: hostile }] }, { 'x-request-id': id }, k.key);
  await recordOf(id);
  const r = await gw.ctl(['logs', '--key', k.id]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\ufffd]/, JSON.stringify(r.stdout));
  const prompt = r.stdout.split('\n').find((l) => l.startsWith('  > '));
  assert.match(prompt, /^ {2}> \?\[2J\?\]0;owned\? \?1m (é)+\.\.\.$/, prompt);
});

test('aigwctl logs --follow prints records as they are written', async () => {
  const gw = ctx.gw;
  const k3 = await gw.createKey();
  const p = spawn(AIGWCTL, ['-s', gw.socket, 'logs', '--follow', '--json', '--key', k3.id]);
  let out = '';
  p.stdout.on('data', (d) => { out += d; });
  try {
    await sleep(400);
    const id = rid('follow');
    await chat({}, { 'x-request-id': id }, k3.key);
    await eventually(() => out.includes(id), { what: 'the followed record', timeoutMs: 5000 });
    const id2 = rid('follow');
    await chat({ stream: true }, { 'x-request-id': id2 }, k3.key);
    await eventually(() => out.includes(id2), { what: 'the second followed record', timeoutMs: 5000 });
    assert.equal(out.trim().split('\n').length, 2);
  } finally {
    p.kill('SIGTERM');
  }
});

test('rotate: size starts a new file once one would pass max_size; every line whole', async () => {
  const d = path.join(capTemp('aigw-capture-size-'), 'cap');
  const gw = await startGateway({
    workers: 2,
    capture: { dir: d, rotate: 'size', max_size: '64k' },
    models: [{ name: 'cap', capture: true, targets: [{ provider: 'local', model: 'mock-small' }] }],
  });
  try {
    const { key } = await gw.createKey();
    const ids = [];
    for (let i = 0; i < 14; i++) {
      const id = rid('size');
      ids.push(id);
      await gw.post('/v1/chat/completions', key, { model: 'cap', messages: [{ role: 'user', content: 'big' }] },
        { 'x-request-id': id, 'x-mock-chunks': '1500' });
      if (i === 6) await sleep(1100); // a new file is named by the second it begins
    }
    await eventually(() => ids.every((id) => records(d).some((r) => r.request_id === id)), { what: 'all records' });
    const names = files(d);
    assert.ok(names.length >= 2, `files: ${names}`);
    for (const f of names) {
      assert.match(f, /^capture-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ\.jsonl$/);
      const size = fs.statSync(path.join(d, f)).size;
      const count = fs.readFileSync(path.join(d, f), 'utf8').split('\n').filter(Boolean).length;
      assert.ok(size <= 64 * 1024 || count === 1, `${f} is ${size} bytes with ${count} records`);
    }
  } finally {
    await gw.stop();
  }
});

test('capture: journal, dir and rotate are checked', async () => {
  const d = tempDir('aigw-capture-cfg-');
  const cfg = path.join(d, 'bad.yaml');
  const base = 'providers: [{ name: local, type: openai, base_url: "http://127.0.0.1:1/v1" }]\nmodels: [{ name: m, targets: [{ provider: local, model: x }] }]\n';
  const { run: runProc, AIGWD } = await import('./lib/harness.mjs');
  for (const [text, msg] of [
    ['capture: { dir: rel/dir }\n', /"capture.dir" must be an absolute path/],
    ['capture: { rotate: daily }\n', /"capture" needs dir/],
    ['capture: { dir: /tmp/x, journal: true }\n', /set dir \(files\) or journal: true \(journald\), not both/],
    ['capture: { dir: /tmp/x, rotate: hourly }\n', /"capture.rotate" must be daily or size/],
    ['capture: { dir: /tmp/x, bypass: { keys: key_1 } }\n', /bad\.yaml:1:\d+: "capture.bypass.keys" must be a list of names/],
    ['capture: { dir: /tmp/x, bypass: { users: [a] } }\n', /unknown key "users" in capture.bypass \(expected one of: keys, tenants\)/],
    ['cache: { bypass: { tenants: ["a b"] } }\n', /"cache.bypass.tenants\[0\]" must not contain blanks/],
  ]) {
    fs.writeFileSync(cfg, text + base);
    const r = await runProc(AIGWD, ['-t', '-c', cfg]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, msg);
  }
  fs.writeFileSync(cfg, `capture: { journal: true, keys: [key_1], tenants: [] }\n${base}`);
  assert.equal((await runProc(AIGWD, ['-t', '-c', cfg])).code, 0);
  fs.rmSync(d, { recursive: true, force: true });
});

test('safety verdicts are in the record, and a masked value never reaches a capture file', async () => {
  const capDir = path.join(capTemp('aigw-capture-safety-'), 'capture');
  const gw = await startGateway({
    workers: 2,
    capture: { dir: capDir },
    safety: {
      rules: [
        { name: 'email', type: 'pii', detector: 'email', on: ['input'], action: 'mask' },
        { name: 'watch', type: 'keywords', words: ['quarterly'], on: ['input'], action: 'flag' },
      ],
    },
    models: [{ name: 'capsafe', capture: true, targets: [{ provider: 'local', model: 'mock-small' }] }],
  });
  try {
    const k = await gw.createKey();
    const id = rid('safety');
    const r = await gw.post('/v1/chat/completions', k.key,
      { model: 'capsafe', messages: [{ role: 'user', content: 'mail the quarterly report to ana.lopez@example.com' }] },
      { 'x-request-id': id });
    assert.equal(r.status, 200);
    const rec = await recordOf(id, capDir);
    assert.deepEqual(rec.safety.map((v) => `${v.rule}/${v.direction}/${v.action}`).sort(),
      ['email/input/mask', 'watch/input/flag']);
    for (const f of files(capDir)) {
      const text = fs.readFileSync(path.join(capDir, f), 'utf8');
      assert.ok(!text.includes('ana.lopez@example.com'), `${f} holds the masked address`);
      assert.ok(!text.includes(k.key) && !text.includes(UPSTREAM_KEY), `${f} holds a secret`);
    }
    assert.match(JSON.stringify(rec.request), /\[EMAIL_1\]/);
  } finally {
    await gw.stop();
  }
});

test('capture.bypass: a trusted key or tenant is never captured, even on a capture: true model', async () => {
  const { gw } = ctx;
  const trusted = await gw.createKey();
  gw.rewriteConfig({ capture: { dir, bypass: { keys: [trusted.id], tenants: ['vip'] } } });
  assert.equal((await gw.ctl(['reload'])).code, 0);
  try {
    const skipped = rid('bypassed');
    assert.equal((await chat({}, { 'x-request-id': skipped }, trusted.key)).status, 200);
    const seen = rid('seen');
    await chat({}, { 'x-request-id': seen });
    await recordOf(seen); // written after the bypassed one would have been
    assert.equal(records().find((r) => r.request_id === skipped), undefined);
  } finally {
    gw.rewriteConfig({ capture: { dir } });
    assert.equal((await gw.ctl(['reload'])).code, 0);
  }
});

test('/metrics counts the capture records written', async () => {
  const capDir = path.join(capTemp('aigw-capture-metrics-'), 'capture');
  const metricsPort = await freePort();
  const gw = await startGateway({
    workers: 2,
    metrics: `127.0.0.1:${metricsPort}`,
    capture: { dir: capDir },
    models: [{ name: 'capm', capture: true, targets: [{ provider: 'local', model: 'mock-small' }] }],
  });
  try {
    const k = await gw.createKey();
    for (let i = 0; i < 3; i++) {
      assert.equal((await gw.post('/v1/chat/completions', k.key, { model: 'capm', messages: [{ role: 'user', content: 'm' }] })).status, 200);
    }
    await eventually(async () => {
      const m = await request(metricsPort, { method: 'GET', path: '/metrics' });
      return /aigw_capture_records_total\{result="written"\} 3\n/.test(m.text) &&
        /aigw_capture_records_total\{result="error"\} 0\n/.test(m.text);
    }, { what: 'three written capture records in /metrics' });
  } finally {
    await gw.stop();
  }
});

// The state directory (the response cache's database is in it) and the
// capture directory on a full tmpfs (skipped, with the reason, where
// mounting is not allowed): answers go out, cached ones included; each
// worker logs each failure once, not once a request; the capture file
// takes records again once there is room, whole lines but the cut one.
test('a full disk under the capture files and the cache: answers go out, failures are logged once a minute', { timeout: 60000 }, (t) =>
  onSmallDisk(t, '32m', async ({ root, dir: state, disk }) => {
    const metricsPort = await freePort();
    const capDir = path.join(state, 'capture');
    let gw;
    try {
      gw = await startGateway({
        dir: root,
        workers: 2,
        metrics: `127.0.0.1:${metricsPort}`,
        capture: { dir: capDir },
        cache: { max_size: '16m' },
        models: [{ name: 'cc', capture: true, cache: { ttl: '10m' }, targets: [{ provider: 'local', model: 'mock-small' }] }],
      });
      const { key } = await gw.createKey();
      const ask = (content, id) => gw.chat(key, { model: 'cc', messages: [{ role: 'user', content }] }, id ? { 'x-request-id': id } : {});
      assert.equal((await ask('stored before')).status, 200);

      disk.fill();
      for (let i = 0; i < 30; i++) assert.equal((await ask(`while full ${i}`)).status, 200);
      const hit = await ask('stored before');
      assert.equal(hit.status, 200);
      assert.equal(hit.headers['x-aigw-cache'], 'hit', 'the cache still answers what it holds');
      const errors = async () => {
        const res = await request(metricsPort, { path: '/metrics' });
        return Number(/^aigw_capture_records_total\{result="error"\} (\d+)$/m.exec(res.text)?.[1]);
      };
      // (The last pages the files had begun may still take a few lines.)
      assert.ok(await errors() >= 20, `capture errors counted: ${await errors()}`);
      const lines = (re) => gw.log().split('\n').filter((l) => re.test(l));
      const captureFailures = lines(/capture write to .*: No space left on device/);
      const cacheFailures = lines(/cache: store\(cc\): No space left on device/);
      // One line a worker (two serve the API, one the metrics listener).
      assert.ok(captureFailures.length >= 1 && captureFailures.length <= 2, captureFailures.join('\n'));
      assert.ok(cacheFailures.length >= 1 && cacheFailures.length <= 2, cacheFailures.join('\n'));

      disk.unfill();
      assert.equal((await ask('after', 'cap-after-full')).status, 200);
      const parsed = () => fs.readdirSync(capDir).flatMap((f) => fs.readFileSync(path.join(capDir, f), 'utf8')
        .split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return null; } }));
      await eventually(() => parsed().some((r) => r?.request_id === 'cap-after-full'), { what: 'the record after' });
      assert.ok(parsed().filter((r) => r === null).length <= 2, 'one cut line a worker at most');
    } finally {
      await gw?.stop({ keepDir: true });
    }
  }));
