// stats.test.mjs - usage statistics: `aigwctl usage --by ...` groups the
// stored records by key, user, tenant, model, target, status class and
// calendar period, filters them, limits them to a time range, prices them,
// lists them one by one (--detail), and exports them as CSV and XLSX that
// add up to the same numbers; a caller who is not an admin sees only the
// usage of their own keys and of the models they hold a grant on.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';

import { AIGWCTL, eventually, onSmallDisk, run, startGateway, startMock, tempDir, test } from './lib/harness.mjs';

let mock, gw, k1, k2, k3, dir;
// What the clients saw, per key, user, tenant and model: requests,
// errors, tokens.
const want = { key: {}, user: {}, tenant: {}, model: {}, total: null };
// Every answer: request id, key, model, status, tokens.
const sent = [];
const PRICE = { input: 2, output: 10 }; // per million tokens, model "priced"

function zero() {
  return { requests: 0, errors: 0, input_tokens: 0, output_tokens: 0 };
}

function count(key, model, res) {
  const u = res.status !== 200 ? null : res.events ? usageOfStream(res) : res.json().usage;
  sent.push({ id: res.headers['x-request-id'], key: key.id, model, status: res.status,
    input_tokens: u?.prompt_tokens ?? 0, output_tokens: u?.completion_tokens ?? 0 });
  for (const [dim, v] of [['key', key.id], ['user', key.user ?? ''], ['tenant', key.tenant ?? ''], ['model', model]]) {
    const t = (want[dim][v] ??= zero());
    t.requests++;
    if (res.status >= 400) t.errors++;
    if (u) {
      t.input_tokens += u.prompt_tokens;
      t.output_tokens += u.completion_tokens;
    }
  }
  const t = (want.total ??= zero());
  t.requests++;
  if (res.status >= 400) t.errors++;
  if (u) {
    t.input_tokens += u.prompt_tokens;
    t.output_tokens += u.completion_tokens;
  }
}

function usageOfStream(res) {
  return res.events?.find((e) => e.json?.usage)?.json.usage ?? null;
}

const sum = (rows, col) => rows.reduce((s, r) => s + Number(r[col]), 0);
const pickSums = (rows) => ({
  requests: sum(rows, 'requests'), errors: sum(rows, 'errors'),
  input_tokens: sum(rows, 'input_tokens'), output_tokens: sum(rows, 'output_tokens'),
});

const pick = (row) => ({
  requests: row.requests, errors: row.errors, input_tokens: row.input_tokens, output_tokens: row.output_tokens,
});

const day = (d) => d.toISOString().slice(0, 10);

async function ok(args) {
  const r = await gw.ctl(args);
  assert.equal(r.code, 0, `aigwctl ${args.join(' ')}: ${r.stderr}`);
  return r;
}

before(async () => {
  mock = await startMock();
  gw = await startGateway({
    workers: 2, mock,
    models: [{ name: 'priced', targets: [{ provider: 'local', model: 'mock-small', price: PRICE }] }],
  });
  dir = tempDir('aigw-stats-');
  // ann (acme) owns k1, bob (beta) owns k2; k3 has no owner.
  await ok(['tenant', 'add', 'acme']);
  await ok(['tenant', 'add', 'beta']);
  await ok(['user', 'add', 'ann', '--tenant', 'acme']);
  await ok(['user', 'add', 'bob', '--tenant', 'beta']);
  for (const m of ['demo', 'other', 'priced']) await ok(['grant', 'ann', 'endpoint-user', '--model', m]);
  for (const m of ['demo', 'other']) await ok(['grant', 'bob', 'endpoint-user', '--model', m]);
  k1 = { ...(await gw.ctlJson(['key', 'create', '--name', 'k1', '--user', 'ann'])), user: 'ann', tenant: 'acme' };
  k2 = { ...(await gw.ctlJson(['key', 'create', '--name', 'k2', '--user', 'bob'])), user: 'bob', tenant: 'beta' };
  k3 = await gw.createKey({ name: 'k3' });
  const STREAM = { stream: true, stream_options: { include_usage: true } };
  const plans = [
    [k1, 'demo', {}], [k1, 'demo', { 'x-mock-chunks': '4' }], [k1, 'other', {}],
    [k1, 'demo', { 'x-mock-status': '400' }], [k1, 'priced', {}], [k1, 'priced', { 'x-mock-chunks': '5' }, STREAM],
    [k2, 'other', {}], [k2, 'other', { 'x-mock-chunks': '9' }], [k2, 'demo', { 'x-mock-status': '500' }],
    [k2, 'demo', { 'x-mock-chunks': '3' }, STREAM],
    [k3, 'other', {}],
  ];
  for (const [key, model, headers, body] of plans) {
    const res = await gw.chat(key.key, { model, ...(body ?? {}) }, headers);
    count(key, model, res);
  }
  // Unauthenticated: no one's usage, not recorded.
  assert.equal((await gw.chat('sk-not-a-key', {})).status, 401);
  await eventually(async () => (await gw.ctlJson(['usage'])).requests === want.total.requests,
    { timeoutMs: 3000, what: `usage counts the ${want.total.requests} requests` });
});

after(async () => {
  await gw?.stop();
  await mock?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('usage without --by still prints exactly the totals', async () => {
  const u = await gw.ctlJson(['usage']);
  assert.deepEqual(u, {
    requests: want.total.requests, input_tokens: want.total.input_tokens, output_tokens: want.total.output_tokens,
  });
});

test('usage --by key has one row per key, sorted, with errors counted and totals', async () => {
  const r = await gw.ctlJson(['usage', '--by', 'key']);
  assert.deepEqual(r.rows.map((x) => x.key), [k1.id, k2.id, k3.id].sort());
  for (const row of r.rows) {
    assert.deepEqual(pick(row), want.key[row.key]);
    assert.equal(typeof row.avg_duration_ms, 'number');
    assert.equal(typeof row.avg_ttfb_ms, 'number');
  }
  assert.deepEqual(pick(r.totals), want.total);
});

test('usage --by model,day groups by both and sorts by model first', async () => {
  const r = await gw.ctlJson(['usage', '--by', 'model,day']);
  assert.deepEqual(r.rows.map((x) => x.model), ['demo', 'other', 'priced']);
  const today = day(new Date());
  for (const row of r.rows) {
    assert.ok([today, day(new Date(Date.now() - 86400000))].includes(row.day), row.day);
    assert.deepEqual(pick(row), want.model[row.model]);
  }
});

test('usage --by status splits the status classes', async () => {
  const r = await gw.ctlJson(['usage', '--by', 'status']);
  assert.deepEqual(r.rows.map((x) => x.status), ['2xx', '4xx', '5xx']);
  assert.deepEqual(r.rows.map((x) => x.errors), [0, 1, 1]);
});

test('filters --key and --model narrow rows and totals', async () => {
  const r = await gw.ctlJson(['usage', '--key', k2.id, '--by', 'model']);
  assert.deepEqual(r.rows.map((x) => x.model), ['demo', 'other']);
  assert.equal(r.totals.requests, 4);
  const m = await gw.ctlJson(['usage', '--model', 'other', '--key', k1.id]);
  assert.equal(m.totals.requests, 1);
  assert.equal(m.rows.length, 1);
});

test('--from and --to bound the range: a range without records is empty', async () => {
  const future = await gw.ctlJson(['usage', '--by', 'key', '--from', day(new Date(Date.now() + 2 * 86400000))]);
  assert.deepEqual(future.rows, []);
  assert.equal(future.totals.requests, 0);
  const past = await gw.ctlJson(['usage', '--by', 'key', '--to', '2001-01-01T00:00:00Z']);
  assert.deepEqual(past.rows, []);
  const all = await gw.ctlJson(['usage', '--by', 'key', '--from', '2001-01-01',
    '--to', new Date(Date.now() + 3600000).toISOString()]);
  assert.deepEqual(pick(all.totals), want.total);
});

test('bad dimensions and dates are refused with a clear message', async () => {
  let r = await gw.ctl(['usage', '--by', 'colour']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--by colour: dimensions are key, user, tenant, model/);
  r = await gw.ctl(['usage', '--from', '2025-02-30']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--from 2025-02-30: expected YYYY-MM-DD/);
  r = await gw.ctl(['usage', '--since', 'yesterday']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--since yesterday: expected YYYY-MM-DD.*24h or 7d/);
  r = await gw.ctl(['usage', '--by', 'key', '--csv', '--xlsx', path.join(dir, 'x.xlsx')]);
  assert.equal(r.code, 2);
  r = await gw.ctl(['usage', '--format', 'xlsx']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /needs a file: -o FILE/);
  r = await gw.ctl(['usage', '--format', 'pdf']);
  assert.equal(r.code, 2);
  r = await gw.ctl(['usage', '--detail', '--by', 'key']);
  assert.equal(r.code, 2);
});

// RFC 4180 enough for the test: quoted fields with "" inside.
function parseCsv(text) {
  const rows = [];
  for (const line of text.split('\r\n').filter((l) => l !== '')) {
    const fields = [];
    for (let i = 0; i <= line.length;) {
      if (line[i] === '"') {
        let v = '';
        for (i++; i < line.length; i++) {
          if (line[i] === '"' && line[i + 1] === '"') { v += '"'; i++; } else if (line[i] === '"') break; else v += line[i];
        }
        fields.push(v);
        i += 2;
      } else {
        const end = line.indexOf(',', i) === -1 ? line.length : line.indexOf(',', i);
        fields.push(line.slice(i, end));
        i = end + 1;
      }
    }
    rows.push(fields);
  }
  return rows;
}

test('usage --csv parses back to the same numbers', async () => {
  const r = await gw.ctl(['usage', '--by', 'key,model', '--csv']);
  assert.equal(r.code, 0, r.stderr);
  const [header, ...rows] = parseCsv(r.stdout);
  assert.deepEqual(header, ['key', 'model', 'requests', 'errors', 'input_tokens', 'output_tokens',
    'cached', 'cost', 'avg_duration_ms', 'avg_ttfb_ms', 'audio_seconds', 'characters', 'images', 'videos']);
  const json = await gw.ctlJson(['usage', '--by', 'key,model']);
  assert.equal(rows.length, json.rows.length);
  rows.forEach((f, i) => {
    const j = json.rows[i];
    assert.deepEqual(f.slice(0, 6), [j.key, j.model, ...[j.requests, j.errors, j.input_tokens, j.output_tokens].map(String)]);
  });
  const sum = (col) => rows.reduce((s, f) => s + Number(f[header.indexOf(col)]), 0);
  assert.deepEqual({ requests: sum('requests'), errors: sum('errors'), input_tokens: sum('input_tokens'),
    output_tokens: sum('output_tokens') }, want.total);
});

test('usage --xlsx writes a workbook whose sheet holds the rows', async () => {
  const file = path.join(dir, 'usage.xlsx');
  const r = await gw.ctl(['usage', '--by', 'key', '--xlsx', file]);
  assert.equal(r.code, 0, r.stderr);
  const zip = fs.readFileSync(file);
  assert.equal(zip.subarray(0, 4).toString('latin1'), 'PK\x03\x04');
  const sheet = execFileSync('unzip', ['-p', file, 'xl/worksheets/sheet1.xml']).toString();
  const strings = execFileSync('unzip', ['-p', file, 'xl/sharedStrings.xml']).toString();
  for (const s of ['key', 'requests', 'cost', 'avg_ttfb_ms', k1.id, k2.id]) assert.ok(strings.includes(`>${s}<`), s);
  // Row 2 and 3, columns B..F: requests, errors, input and output tokens.
  const cell = (ref) => Number(new RegExp(`<c r="${ref}"[^>]*><v>([^<]*)</v>`).exec(sheet)?.[1]);
  const ids = [k1.id, k2.id, k3.id].sort();
  for (const [rowNo, id] of ids.map((x, i) => [i + 2, x])) {
    const w = want.key[id];
    assert.deepEqual(['B', 'C', 'D', 'E'].map((c) => cell(`${c}${rowNo}`)),
      [w.requests, w.errors, w.input_tokens, w.output_tokens]);
  }
  const totals = execFileSync('unzip', ['-p', file, 'xl/worksheets/sheet2.xml']).toString();
  assert.match(totals, new RegExp(`<c r="A2"[^>]*><v>${want.total.requests}</v>`));
});

test('usage --by user and --by tenant add up to the totals and to what the mock reported', async () => {
  for (const dim of ['user', 'tenant']) {
    const r = await gw.ctlJson(['usage', '--by', dim]);
    assert.deepEqual(r.rows.map((x) => x[dim]), Object.keys(want[dim]).sort(), dim);
    for (const row of r.rows) assert.deepEqual(pick(row), want[dim][row[dim]], `${dim} ${row[dim]}`);
    assert.deepEqual(pickSums(r.rows), want.total, dim);
    assert.deepEqual(pick(r.totals), want.total, dim);
  }
});

test('usage --by day and --by hour add up to the totals', async () => {
  for (const dim of ['day', 'hour']) {
    const r = await gw.ctlJson(['usage', '--by', dim]);
    assert.ok(r.rows.length >= 1 && r.rows.length <= 2, `${dim}: ${r.rows.length} rows`);
    assert.match(r.rows[0][dim], dim === 'day' ? /^\d{4}-\d\d-\d\d$/ : /^\d{4}-\d\d-\d\dT\d\d:00:00Z$/);
    assert.deepEqual(pickSums(r.rows), want.total, dim);
  }
});

test('several --by group by their combination', async () => {
  const r = await gw.ctlJson(['usage', '--by', 'tenant', '--by', 'user,model']);
  for (const row of r.rows) assert.deepEqual(Object.keys(row).slice(0, 3), ['tenant', 'user', 'model']);
  const ann = r.rows.filter((x) => x.user === 'ann');
  assert.deepEqual(ann.map((x) => x.model), ['demo', 'other', 'priced']);
  assert.ok(ann.every((x) => x.tenant === 'acme'));
  assert.deepEqual(pickSums(ann), want.user.ann);
  assert.deepEqual(pickSums(r.rows), want.total);
});

test('filters --user and --tenant narrow rows and totals', async () => {
  const u = await gw.ctlJson(['usage', '--user', 'bob', '--by', 'key']);
  assert.deepEqual(u.rows.map((x) => x.key), [k2.id]);
  assert.deepEqual(pick(u.totals), want.user.bob);
  const t = await gw.ctlJson(['usage', '--tenant', 'acme', '--model', 'priced']);
  assert.equal(t.totals.requests, 2);
  const none = await gw.ctlJson(['usage', '--tenant', 'nobody']);
  assert.equal(none.totals.requests, 0);
});

test('relative --since and --until: 1h ago to now holds everything, 1d ago to 1h ago nothing', async () => {
  const recent = await gw.ctlJson(['usage', '--since', '1h', '--until', 'now']);
  assert.deepEqual(pick(recent.totals), want.total);
  const old = await gw.ctlJson(['usage', '--since', '1d', '--until', '1h']);
  assert.equal(old.totals.requests, 0);
  const iso = new Date(Date.now() - 3600000).toISOString().slice(0, 16) + 'Z';
  assert.deepEqual(pick((await gw.ctlJson(['usage', '--since', iso])).totals), want.total);
});

test('cost comes from the configured prices of the target that served', async () => {
  const r = await gw.ctlJson(['usage', '--model', 'priced']);
  const m = want.model.priced;
  const cost = (m.input_tokens * PRICE.input + m.output_tokens * PRICE.output) / 1e6;
  assert.ok(cost > 0);
  assert.equal(r.totals.cost.toFixed(6), cost.toFixed(6));
  const free = await gw.ctlJson(['usage', '--model', 'demo']);
  assert.equal(free.totals.cost, 0);
  assert.equal(free.totals.cached, 0);
});

test('usage --detail lists each request, newest first, with every field', async () => {
  const r = await gw.ctlJson(['usage', '--detail', '--limit', '0']);
  assert.equal(r.rows.length, sent.length);
  assert.deepEqual(r.rows.map((x) => x.request_id), sent.map((x) => x.id).reverse());
  for (const row of r.rows) {
    const s = sent.find((x) => x.id === row.request_id);
    assert.equal(row.key, s.key);
    assert.equal(row.model, s.model);
    assert.equal(row.status, s.status);
    assert.equal(row.input_tokens, s.input_tokens);
    assert.equal(row.output_tokens, s.output_tokens);
    assert.equal(row.cached, false);
    assert.equal(typeof row.latency_ms, 'number');
    assert.equal(typeof row.cost, 'number');
    assert.match(row.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(row.user, s.key === k1.id ? 'ann' : s.key === k2.id ? 'bob' : '');
    assert.equal(row.tenant, s.key === k1.id ? 'acme' : s.key === k2.id ? 'beta' : '');
    assert.equal(row.target, 'local/' + (s.model === 'other' ? 'mock-large' : 'mock-small'));
  }
  assert.deepEqual(pick(r.totals), want.total);
  const two = await gw.ctlJson(['usage', '--detail', '--limit', '2', '--user', 'ann']);
  assert.deepEqual(two.rows.map((x) => x.request_id),
    sent.filter((x) => x.key === k1.id).map((x) => x.id).reverse().slice(0, 2));
  const table = await ok(['usage', '--detail', '--key', k2.id]);
  assert.match(table.stdout, /^time\s+request_id\s+key\s+user/);
  assert.match(table.stdout, /total: 4 requests, 1 errors/);
});

test('usage --detail --format csv and xlsx -o FILE hold the same requests and add up', async () => {
  const csvFile = path.join(dir, 'detail.csv');
  await ok(['usage', '--detail', '--limit', '0', '--format', 'csv', '-o', csvFile]);
  const [header, ...rows] = parseCsv(fs.readFileSync(csvFile, 'utf8'));
  assert.deepEqual(header, ['time', 'request_id', 'key', 'user', 'tenant', 'model', 'target', 'status',
    'input_tokens', 'output_tokens', 'cached', 'latency_ms', 'cost', 'capability', 'units', 'tier']);
  assert.equal(rows.length, sent.length);
  const col = (name) => rows.map((f) => f[header.indexOf(name)]);
  assert.deepEqual(col('request_id').sort(), sent.map((x) => x.id).sort());
  assert.equal(col('input_tokens').reduce((a, b) => a + Number(b), 0), want.total.input_tokens);
  assert.equal(col('output_tokens').reduce((a, b) => a + Number(b), 0), want.total.output_tokens);

  const xlsx = path.join(dir, 'detail.xlsx');
  await ok(['usage', '--detail', '--limit', '0', '--format', 'xlsx', '-o', xlsx]);
  const sheet = readSheet(xlsx, 1);
  assert.equal(sheet.length, sent.length + 1);
  const hi = sheet[0].indexOf('input_tokens'), ho = sheet[0].indexOf('output_tokens');
  assert.equal(sheet.slice(1).reduce((a, r) => a + r[hi], 0), want.total.input_tokens);
  assert.equal(sheet.slice(1).reduce((a, r) => a + r[ho], 0), want.total.output_tokens);
  const totals = readSheet(xlsx, 2);
  assert.deepEqual(totals[0].slice(0, 4), ['requests', 'errors', 'input_tokens', 'output_tokens']);
  assert.deepEqual(totals[1].slice(0, 4), [want.total.requests, want.total.errors,
    want.total.input_tokens, want.total.output_tokens]);
});

test('usage --format xlsx -o FILE by user: the rows add up to the totals sheet', async () => {
  const file = path.join(dir, 'by-user.xlsx');
  await ok(['usage', '--by', 'user', '--format', 'xlsx', '-o', file]);
  const rows = readSheet(file, 1);
  assert.deepEqual(rows[0].slice(0, 5), ['user', 'requests', 'errors', 'input_tokens', 'output_tokens']);
  const body = rows.slice(1);
  assert.deepEqual(body.map((r) => r[0] ?? ''), Object.keys(want.user).sort());
  const totals = readSheet(file, 2);
  for (let c = 1; c <= 4; c++) assert.equal(body.reduce((a, r) => a + r[c], 0), totals[1][c - 1]);
  assert.equal(totals[1][0], want.total.requests);
  // And JSON to a file.
  const json = path.join(dir, 'by-user.json');
  await ok(['usage', '--by', 'user', '--format', 'json', '-o', json]);
  assert.deepEqual(pick(JSON.parse(fs.readFileSync(json, 'utf8')).totals), want.total);
});

// The cells of sheet n of an XLSX file, row by row (numbers as numbers,
// shared strings resolved); read with unzip.
function readSheet(file, n) {
  const xml = execFileSync('unzip', ['-p', file, `xl/worksheets/sheet${n}.xml`]).toString();
  let shared = [];
  try {
    const sst = execFileSync('unzip', ['-p', file, 'xl/sharedStrings.xml']).toString();
    shared = [...sst.matchAll(/<si>(.*?)<\/si>/gs)].map((m) => m[1].replace(/<[^>]+>/g, ''));
  } catch { /* no strings */ }
  const rows = [];
  for (const row of xml.matchAll(/<row [^>]*>(.*?)<\/row>/gs)) {
    const cells = [];
    for (const c of row[1].matchAll(/<c r="([A-Z]+)\d+"([^>]*?)(?:\/>|>(.*?)<\/c>)/gs)) {
      const colNo = [...c[1]].reduce((a, ch) => a * 26 + ch.charCodeAt(0) - 64, 0) - 1;
      const v = /<v>(.*?)<\/v>/.exec(c[3] ?? '')?.[1];
      const type = /t="(\w+)"/.exec(c[2])?.[1];
      cells[colNo] = v === undefined ? undefined : type === 's' ? shared[Number(v)] : type === 'b' ? v === '1' : Number(v);
    }
    rows.push(cells);
  }
  return rows;
}

// setpriv runs aigwctl as another uid; needs root and setpriv.
function canSwitchUid() {
  if (process.getuid() !== 0) return false;
  try {
    execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', AIGWCTL, 'help'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('a viewer sees the usage of their own keys and granted models only, never another\'s',
  { skip: !canSwitchUid() && 'cannot run aigwctl as uid 65534 here' }, async () => {
    const vgw = await startGateway({
      workers: 1, mock, adminMode: '0660',
      models: [{ name: 'secret', targets: [{ provider: 'local', model: 'mock-small' }] }],
    });
    try {
      fs.chmodSync(vgw.dir, 0o755);
      fs.chownSync(vgw.socket, 0, 65534);
      const as = async (args) => {
        const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', AIGWCTL,
          '-s', vgw.socket, ...args]);
        return r;
      };
      const asJson = async (args) => {
        const r = await as([...args, '--json']);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout);
      };
      for (const a of [['tenant', 'add', 'acme'], ['user', 'add', 'vic', '--tenant', 'acme', '--uid', '65534'],
        ['user', 'add', 'zoe', '--tenant', 'acme'], ['grant', 'vic', 'endpoint-user', '--model', 'demo'],
        ['grant', 'vic', 'endpoint-viewer', '--model', 'other'], ['grant', 'zoe', 'endpoint-user', '--model', 'demo'],
        ['grant', 'zoe', 'endpoint-user', '--model', 'other'], ['grant', 'zoe', 'endpoint-user', '--model', 'secret']]) {
        const r = await vgw.ctl(a);
        assert.equal(r.code, 0, `${a.join(' ')}: ${r.stderr}`);
      }
      const mine = await vgw.ctlJson(['key', 'create', '--name', 'mine', '--user', 'vic']);
      const zoes = await vgw.ctlJson(['key', 'create', '--name', 'zoes', '--user', 'zoe']);
      const calls = [[mine, 'demo'], [mine, 'demo'], [zoes, 'secret'], [zoes, 'other'], [zoes, 'other'],
        [zoes, 'secret']];
      for (const [k, model] of calls) assert.equal((await vgw.chat(k.key, { model })).status, 200);
      await eventually(async () => (await vgw.ctlJson(['usage'])).requests === calls.length, { timeoutMs: 3000 });

      // vic: own key (2 requests on demo) and model other (2 of zoe's,
      // as its viewer), not zoe's requests on secret.
      const byKey = await asJson(['usage', '--by', 'key,model']);
      assert.deepEqual(byKey.rows.map((r) => [r.key, r.model, r.requests]),
        [[mine.id, 'demo', 2], [zoes.id, 'other', 2]].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
      assert.equal(byKey.totals.requests, 4);
      assert.equal((await asJson(['usage'])).requests, 4);
      // A filter cannot reach past the scope.
      const z = await asJson(['usage', '--user', 'zoe', '--model', 'secret']);
      assert.equal(z.totals.requests, 0);
      const detail = await asJson(['usage', '--detail', '--limit', '0']);
      assert.equal(detail.rows.length, 4);
      assert.ok(detail.rows.every((r) => r.key === mine.id || r.model === 'other'));
      // The admin sees everything.
      assert.equal((await vgw.ctlJson(['usage', '--by', 'key'])).totals.requests, 6);
    } finally {
      await vgw.stop();
    }
  });

// An export onto a full disk (a filled tmpfs; skipped, with the reason,
// where mounting is not allowed): exit 1 with the reason, the export made
// before left whole, and no half-written file.
test('usage -o and --xlsx onto a full disk: exit 1 with the reason, the earlier file left whole', (t) =>
  onSmallDisk(t, '1m', async ({ dir: d, disk }) => {
    const csv = path.join(d, 'usage.csv');
    const xlsx = path.join(d, 'usage.xlsx');
    await ok(['usage', '--by', 'key', '--csv', '-o', csv]);
    await ok(['usage', '--by', 'key', '--xlsx', xlsx]);
    const before = { csv: fs.readFileSync(csv), xlsx: fs.readFileSync(xlsx) };
    assert.match(before.csv.toString(), new RegExp(k1.id));
    assert.equal((fs.statSync(csv).mode & 0o777).toString(8), (0o666 & ~process.umask()).toString(8), 'the mode fopen would give');

    disk.fill();
    const json = path.join(d, 'new.json');
    for (const [args, file] of [
      [['usage', '--by', 'key', '--csv', '-o', csv], csv],
      [['usage', '--by', 'key', '--xlsx', xlsx], xlsx],
      [['usage', '--detail', '--json', '-o', json], json],
    ]) {
      const r = await gw.ctl(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, new RegExp(`aigwctl: cannot write ${file.replace(/[.]/g, '\\.')}: `), r.stderr);
    }
    assert.deepEqual(fs.readFileSync(csv), before.csv, 'the earlier CSV is whole');
    assert.deepEqual(fs.readFileSync(xlsx), before.xlsx, 'the earlier workbook is whole');
    assert.deepEqual(fs.readdirSync(d).filter((f) => f !== '.filler').sort(), ['usage.csv', 'usage.xlsx'], 'nothing half-written');
  }, 'small'));

// -o onto something that is not a regular file (here a FIFO; /dev/null
// or /dev/stdout alike) is written to, not replaced by a file renamed
// over it: aigwctl runs as root.
test('usage -o FIFO writes into the FIFO and leaves it a FIFO', async () => {
  const fifo = path.join(tempDir(), 'out.fifo');
  execFileSync('mkfifo', [fifo]);
  try {
    const reader = run('cat', [fifo]);
    await ok(['usage', '--by', 'key', '--csv', '-o', fifo]);
    const got = await reader;
    assert.match(got.stdout, new RegExp(k1.id), 'the CSV came through the FIFO');
    assert.ok(fs.statSync(fifo).isFIFO(), 'still a FIFO');
    assert.deepEqual(fs.readdirSync(path.dirname(fifo)), ['out.fifo']);
  } finally {
    fs.rmSync(path.dirname(fifo), { recursive: true, force: true });
  }
});

// A model name is whatever a client sent (a 404 is usage too): in a
// table it must not reach the administrator's terminal as an escape
// sequence, and in a CSV file it must not become a spreadsheet formula.
// --json has it as stored (control characters other than C1 replaced by
// the master, which groups by it).
test('client-chosen model names: no escape sequence in tables, no formula in CSV', async () => {
  const own = await startGateway({ workers: 1, mock });
  try {
    const k = await own.createKey();
    const esc = '\x1b[2J\x1b]0;owned\x07m\u009b1';
    const formula = '=HYPERLINK("http://example.com/","x")';
    // 80 bytes, stored in 63: cut between characters, never inside one.
    const long = 'é'.repeat(40);
    for (const model of [esc, formula, '-2+3', 'demo', long]) await own.chat(k.key, { model });
    await eventually(async () => (await own.ctlJson(['usage'])).requests === 5, { what: 'five records' });

    const json = await own.ctlJson(['usage', '--by', 'model']);
    assert.deepEqual(json.rows.map((r) => r.model).sort(),
      ['?[2J?]0;owned?m\u009b1', formula, '-2+3', 'demo', 'é'.repeat(31)].sort());

    for (const args of [['usage', '--by', 'model'], ['usage', '--detail']]) {
      const r = await own.ctl(args);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f]/, `${args.join(' ')}: ${JSON.stringify(r.stdout)}`);
      assert.ok(r.stdout.includes('?[2J?]0;owned?m?1'), r.stdout);
    }

    const csv = await own.ctl(['usage', '--by', 'model', '--csv']);
    assert.equal(csv.code, 0, csv.stderr);
    const models = parseCsv(csv.stdout).slice(1).map((f) => f[0]);
    assert.ok(models.includes(`'${formula}`), csv.stdout);
    assert.ok(models.includes("'-2+3"), csv.stdout);
    assert.ok(models.includes('demo'), csv.stdout);
    assert.ok(models.every((m) => !/^[=+\-@\t\r]/.test(m)), csv.stdout);
  } finally {
    await own.stop();
  }
});
