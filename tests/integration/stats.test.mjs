// stats.test.mjs - usage statistics: `aigwctl usage --by ...` groups the
// stored records by key, model, target, status class and calendar period,
// filters them, limits them to a time range, and exports them as CSV and
// XLSX that add up to the same numbers.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';

import { eventually, startGateway, startMock, tempDir, test } from './lib/harness.mjs';

let mock, gw, k1, k2, dir;
// What the clients saw, per key and per model: requests, errors, tokens.
const want = { key: {}, model: {}, total: null };

function zero() {
  return { requests: 0, errors: 0, input_tokens: 0, output_tokens: 0 };
}

function count(key, model, res) {
  for (const [dim, v] of [['key', key.id], ['model', model]]) {
    const t = (want[dim][v] ??= zero());
    t.requests++;
    if (res.status >= 400) t.errors++;
    if (res.status === 200) {
      t.input_tokens += res.json().usage.prompt_tokens;
      t.output_tokens += res.json().usage.completion_tokens;
    }
  }
  const t = (want.total ??= zero());
  t.requests++;
  if (res.status >= 400) t.errors++;
  if (res.status === 200) {
    t.input_tokens += res.json().usage.prompt_tokens;
    t.output_tokens += res.json().usage.completion_tokens;
  }
}

const pick = (row) => ({
  requests: row.requests, errors: row.errors, input_tokens: row.input_tokens, output_tokens: row.output_tokens,
});

const day = (d) => d.toISOString().slice(0, 10);

before(async () => {
  mock = await startMock();
  gw = await startGateway({ workers: 2, mock });
  dir = tempDir('aigw-stats-');
  k1 = await gw.createKey();
  k2 = await gw.createKey();
  const plans = [
    [k1, 'demo', {}], [k1, 'demo', { 'x-mock-chunks': '4' }], [k1, 'other', {}],
    [k1, 'demo', { 'x-mock-status': '400' }],
    [k2, 'other', {}], [k2, 'other', { 'x-mock-chunks': '9' }], [k2, 'demo', { 'x-mock-status': '500' }],
  ];
  for (const [key, model, headers] of plans) {
    const res = await gw.chat(key.key, { model }, headers);
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
  assert.deepEqual(r.rows.map((x) => x.key), [k1.id, k2.id].sort());
  for (const row of r.rows) {
    assert.deepEqual(pick(row), want.key[row.key]);
    assert.equal(typeof row.avg_duration_ms, 'number');
    assert.equal(typeof row.avg_ttfb_ms, 'number');
  }
  assert.deepEqual(pick(r.totals), want.total);
});

test('usage --by model,day groups by both and sorts by model first', async () => {
  const r = await gw.ctlJson(['usage', '--by', 'model,day']);
  assert.deepEqual(r.rows.map((x) => x.model), ['demo', 'other']);
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
  assert.equal(r.totals.requests, 3);
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
  assert.match(r.stderr, /--by colour: dimensions are key, model/);
  r = await gw.ctl(['usage', '--from', '2025-02-30']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--from 2025-02-30: expected YYYY-MM-DD/);
  r = await gw.ctl(['usage', '--by', 'key', '--csv', '--xlsx', path.join(dir, 'x.xlsx')]);
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
    'avg_duration_ms', 'avg_ttfb_ms']);
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
  for (const s of ['key', 'requests', 'avg_ttfb_ms', k1.id, k2.id]) assert.ok(strings.includes(`>${s}<`), s);
  // Row 2 and 3, columns B..F: requests, errors, input and output tokens.
  const cell = (ref) => Number(new RegExp(`<c r="${ref}"[^>]*><v>([^<]*)</v>`).exec(sheet)?.[1]);
  const [a, b] = [k1.id, k2.id].sort();
  for (const [rowNo, id] of [[2, a], [3, b]]) {
    const w = want.key[id];
    assert.deepEqual(['B', 'C', 'D', 'E'].map((c) => cell(`${c}${rowNo}`)),
      [w.requests, w.errors, w.input_tokens, w.output_tokens]);
  }
  const totals = execFileSync('unzip', ['-p', file, 'xl/worksheets/sheet2.xml']).toString();
  assert.match(totals, new RegExp(`<c r="A2"[^>]*><v>${want.total.requests}</v>`));
});
