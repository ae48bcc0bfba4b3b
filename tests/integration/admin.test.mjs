// admin.test.mjs - aigwctl status, workers, reload and usage, as JSON and
// for a person, and aigwctl's exit codes.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import {
  AIGWCTL, eventually, run, sleep, test, useGateway, TEST_CONNECTIONS,
} from './lib/harness.mjs';

const ctx = useGateway({ workers: 3 }, async (gw, c) => { c.key = (await gw.createKey()).key; });

test('status --json: version, uptime, generation, config, workers by state, requests, in flight', async () => {
  const { gw, key } = ctx;
  const st0 = await gw.status();
  for (const f of ['version', 'pid', 'uptime', 'config', 'generation', 'workers', 'requests', 'in_flight', 'shm']) {
    assert.ok(f in st0, `"${f}" in ${JSON.stringify(st0)}`);
  }
  assert.match(st0.version, /^\d+\.\d+\.\d+/);
  assert.equal(st0.pid, gw.pid);
  assert.equal(st0.config, gw.configPath);
  assert.ok(Number.isInteger(st0.uptime) && st0.uptime >= 0);
  assert.ok(Number.isInteger(st0.generation) && st0.generation >= 1);
  assert.equal(st0.workers.configured, 3);
  for (const state of ['idle', 'busy', 'keepalive', 'starting', 'stopping']) {
    assert.ok(Number.isInteger(st0.workers[state]), `workers.${state} in ${JSON.stringify(st0.workers)}`);
  }
  assert.equal(st0.workers.idle + st0.workers.busy + st0.workers.keepalive, 3);

  for (let i = 0; i < 4; i++) assert.equal((await gw.chat(key, {})).status, 200);
  await eventually(async () => (await gw.status()).requests === st0.requests + 4,
    { timeoutMs: 2000, what: 'requests counts the 4 requests' });

  const slow = [gw.chat(key, {}, { 'x-mock-delay-ms': '1500' }), gw.chat(key, {}, { 'x-mock-delay-ms': '1500' })];
  let st;
  await eventually(async () => (st = await gw.status()).in_flight === 2,
    { timeoutMs: 2000, what: () => `2 in flight: ${JSON.stringify(st)}` });
  // Two workers, or one serving both where workers take many connections.
  if (TEST_CONNECTIONS === 1) assert.equal(st.workers.busy, 2);
  else assert.ok(st.workers.busy >= 1 && st.workers.busy <= 2, JSON.stringify(st.workers));
  for (const r of await Promise.all(slow)) assert.equal(r.status, 200);
});

test('status prints a summary for a person', async () => {
  const r = await ctx.gw.ctl(['status']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^aigwd \d+\.\d+\.\d+, pid \d+, up \d+ s$/m);
  assert.ok(r.stdout.includes(ctx.gw.configPath));
  assert.match(r.stdout, /generation \d+/);
  assert.match(r.stdout, /workers +3 configured: \d+ idle, \d+ busy/);
  assert.match(r.stdout, /requests +\d+ served, \d+ in flight, \d+ connections open/);
});

test('workers --json is an array of {slot, pid, state, requests, started, connections, busy_ms, cpus}', async () => {
  const { gw, key } = ctx;
  assert.equal((await gw.chat(key, {})).status, 200);
  const list = await gw.ctlJson(['workers']);
  assert.ok(Array.isArray(list));
  assert.equal(list.length, 3);
  assert.deepEqual(list.map((w) => w.pid).sort((a, b) => a - b), gw.workerPids());
  for (const w of list) {
    for (const f of ['slot', 'pid', 'state', 'requests', 'started', 'connections', 'busy_ms', 'cpus']) assert.ok(f in w, `"${f}" in ${JSON.stringify(w)}`);
    const allowed = fs.readFileSync(`/proc/${w.pid}/status`, 'latin1').match(/^Cpus_allowed_list:\s*(\S+)/m)[1];
    assert.equal(w.cpus, allowed, `the CPUs of worker ${w.pid}`);
    assert.ok(['idle', 'busy', 'keepalive'].includes(w.state), w.state);
    assert.ok(Number.isInteger(w.requests));
  }
  assert.equal(new Set(list.map((w) => w.slot)).size, 3, 'each worker has a slot of its own');
  const st = await gw.status();
  assert.ok(st.requests >= list.reduce((n, w) => n + w.requests, 0), 'status counts at least what the workers served');
});

test('workers prints a table', async () => {
  const r = await ctx.gw.ctl(['workers']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^SLOT\s+PID\s+STATE\s+REQUESTS\s+CONNECTIONS\s+BUSY_MS\s+CPUS$/);
  assert.equal(lines.length, 4);
  for (const line of lines.slice(1)) assert.match(line, /^\d+\s+\d+\s+(idle|busy|keepalive)\s+\d+\s+\d+\s+\d+\s+[\d,-]+$/);
});

test('reload --json answers the new generation; reload prints it', async () => {
  const { gw } = ctx;
  const g0 = (await gw.status()).generation;
  const j = await gw.ctlJson(['reload']);
  assert.deepEqual(j, { generation: g0 + 1 });
  const r = await gw.ctl(['reload']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^reloaded: generation ${g0 + 2}$`, 'm'));
  assert.equal((await gw.status()).generation, g0 + 2);
});

test('usage --json and usage agree', async () => {
  const { gw } = ctx;
  await sleep(100);
  const j = await gw.ctlJson(['usage']);
  assert.deepEqual(Object.keys(j).sort(), ['input_tokens', 'output_tokens', 'requests']);
  assert.ok(j.requests >= 7, `usage counts the requests of this file: ${JSON.stringify(j)}`);
  const r = await gw.ctl(['usage']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^requests +${j.requests}$`, 'm'));
  assert.match(r.stdout, new RegExp(`^input_tokens +${j.input_tokens}$`, 'm'));
  assert.match(r.stdout, new RegExp(`^output_tokens +${j.output_tokens}$`, 'm'));
});

test('aigwctl exits 1 when the master refuses, 2 on a usage error, 3 when it is unreachable', async () => {
  const { gw } = ctx;
  const refused = await gw.ctl(['key', 'show', 'key_doesnotexist']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /no key/);

  const good = fs.readFileSync(gw.configPath, 'utf8');
  try {
    fs.writeFileSync(gw.configPath, good.replace(/^workers: .*$/m, 'workers: zero'));
    const bad = await gw.ctl(['reload', '--json']);
    assert.equal(bad.code, 1, 'a refused reload');
    assert.match(bad.stderr, /aigw\.yaml:\d+:\d+:/);
  } finally {
    fs.writeFileSync(gw.configPath, good);
  }

  const usage = await gw.ctl(['status', '--bogus']);
  assert.equal(usage.code, 2);
  const none = await run(AIGWCTL, ['-s', path.join(gw.dir, 'no-such.sock'), 'status', '--json']);
  assert.equal(none.code, 3);
  assert.match(none.stderr, /cannot connect/);
  assert.equal(none.stdout, '');
});

test('status requests served does not go back when a worker is replaced', async () => {
  const { gw, key } = ctx;
  for (let i = 0; i < 6; i++) assert.equal((await gw.chat(key, {})).status, 200);
  let before;
  await eventually(async () => (before = await gw.status()).workers.busy === 0, { timeoutMs: 2000 });
  const busiest = (await gw.ctlJson(['workers'])).sort((a, b) => b.requests - a.requests)[0];
  process.kill(busiest.pid, 'SIGKILL');
  await eventually(async () => !(await gw.ctlJson(['workers'])).some((w) => w.pid === busiest.pid), { timeoutMs: 5000 });
  await gw.waitWorkers(3);
  const after = await gw.status();
  assert.ok(after.requests >= before.requests,
    `requests served went from ${before.requests} to ${after.requests} when worker ${busiest.pid} (${busiest.requests} requests) was replaced`);
});
