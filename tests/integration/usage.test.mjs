// usage.test.mjs - usage is never lost: every request a client received
// whole is counted once in `aigwctl usage`, even when the master is killed
// with SIGKILL in the middle of a load and started again, or stops
// draining the ring of usage records until it is full.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import {
  assertError, eventually, freePort, onSmallDisk, pidAlive, request, sleep, startGateway, startMock, test,
} from './lib/harness.mjs';

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock?.stop(); });

const STREAM = { stream: true, stream_options: { include_usage: true } };

// The usage the client saw in a complete answer, or null when the answer
// was not complete (an error, a cut stream, a refused connection).
function usageOf(res, stream) {
  if (res.status !== 200) return null;
  if (!stream) return res.json().usage ?? null;
  if (res.events?.at(-1)?.data !== '[DONE]') return null;
  return res.events.find((e) => e.json?.usage)?.json.usage ?? null;
}

function tally() {
  return { requests: 0, input_tokens: 0, output_tokens: 0, streams: 0, failed: 0 };
}

function add(t, u, stream) {
  t.requests++;
  t.input_tokens += u.prompt_tokens;
  t.output_tokens += u.completion_tokens;
  if (stream) t.streams++;
}

const totals = (t) => ({ requests: t.requests, input_tokens: t.input_tokens, output_tokens: t.output_tokens });

test('usage --json has exactly the totals requests, input_tokens and output_tokens', async () => {
  const gw = await startGateway({ workers: 2, mock });
  try {
    const empty = await gw.ctlJson(['usage']);
    assert.deepEqual(empty, { requests: 0, input_tokens: 0, output_tokens: 0 });
    const { key } = await gw.createKey();
    const want = tally();
    const plans = [
      [{}, {}], [{ messages: [{ role: 'user', content: 'one two three four' }] }, { 'x-mock-chunks': '7' }],
      [STREAM, { 'x-mock-chunks': '3' }],
    ];
    for (const [body, headers] of plans) {
      const res = await gw.chat(key, body, headers);
      const u = usageOf(res, !!body.stream);
      assert.ok(u, `a complete answer: ${res.status} ${res.text}`);
      add(want, u, !!body.stream);
    }
    // An unauthenticated request is no one's usage.
    assert.equal((await gw.chat('sk-not-a-key', {})).status, 401);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests === want.requests,
      { timeoutMs: 3000, what: 'usage counts the 3 requests' });
    const u = await gw.ctlJson(['usage']);
    assert.deepEqual(Object.keys(u).sort(), ['input_tokens', 'output_tokens', 'requests']);
    assert.deepEqual(u, totals(want));
  } finally {
    await gw.stop();
  }
});

test('a master killed with SIGKILL mid-load loses no usage and counts none twice once started again', { timeout: 60000 }, async () => {
  let gw = await startGateway({ workers: 3, mock });
  try {
    const { key } = await gw.createKey();
    const got = tally();
    let stop = false;
    // Four clients in a loop: two streaming, two not, each answer ~20 ms
    // late, streams a little longer.
    const client = async (stream) => {
      while (!stop) {
        const body = stream ? STREAM : {};
        const headers = { 'x-mock-delay-ms': '20', ...(stream ? { 'x-mock-chunk-delay-ms': '15' } : {}) };
        let res;
        try {
          res = await gw.chat(key, body, headers);
        } catch {
          got.failed++;
          continue;
        }
        const u = usageOf(res, stream);
        if (u) add(got, u, stream);
        else got.failed++;
      }
    };
    const clients = [client(true), client(false), client(true), client(false)];
    await eventually(() => got.requests >= 40 && got.streams >= 10, { timeoutMs: 10000, what: 'the load runs' });

    const workers = gw.workerPids();
    gw.signal('SIGKILL');
    stop = true; // no request starts after the kill
    await gw.exited;
    const { dir, port } = gw;
    await gw.stop({ keepDir: true });
    await Promise.all(clients);

    // Its workers finish what they hold, then exit by themselves.
    await eventually(() => workers.every((pid) => !pidAlive(pid)),
      { timeoutMs: 5000, what: () => `old workers gone (${workers.filter(pidAlive)})` });

    gw = await startGateway({ workers: 3, mock, dir, port });
    const want = totals(got);
    let seen;
    try {
      await eventually(async () => {
        seen = await gw.ctlJson(['usage']);
        return seen.requests >= want.requests;
      }, { timeoutMs: 5000 });
    } catch { /* compared below */ }
    // Two drain periods more: nothing counted twice arrives late.
    await sleep(1200);
    seen = await gw.ctlJson(['usage']);
    assert.deepEqual(seen, want, `usage after the crash vs what ${want.requests} complete answers ` +
      `reported (${got.streams} streams; ${got.failed} requests failed at the kill)`);
  } finally {
    await gw.stop();
  }
});

test('usage equals what the mock reported, streaming and not, across a reload and a worker killed with SIGKILL', { timeout: 60000 }, async () => {
  const gw = await startGateway({ workers: 2, mock, usage: { detail_days: 1, aggregate_days: 1 } });
  try {
    const { key } = await gw.createKey();
    const want = tally();
    const round = async (n) => {
      for (let i = 0; i < n; i++) {
        const stream = i % 2 === 1;
        const res = await gw.chat(key, stream ? STREAM : {}, { 'x-mock-chunks': String(2 + i) });
        const u = usageOf(res, stream);
        assert.ok(u, `a complete answer: ${res.status} ${res.text}`);
        add(want, u, stream);
      }
    };
    await round(4);
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await round(4);
    // Between requests: a worker dies hard; the master replaces it.  A
    // worker writes a request's record just after the answer's last bytes
    // went out, so "between" means once the eight are counted: a kill in
    // that instant (seen on a loaded machine under ASan) loses the record
    // the worker had not written yet.
    await eventually(async () => (await gw.ctlJson(['usage'])).requests >= want.requests,
      { timeoutMs: 3000, what: `usage counts the first ${want.requests} requests` });
    const [victim] = gw.workerPids();
    process.kill(victim, 'SIGKILL');
    await eventually(() => !pidAlive(victim), { timeoutMs: 5000, what: 'the worker is gone' });
    await gw.waitWorkers(2);
    await round(4);
    assert.equal(want.streams, 6);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests >= want.requests,
      { timeoutMs: 3000, what: `usage counts the ${want.requests} requests` });
    assert.deepEqual(await gw.ctlJson(['usage']), totals(want));
    // The statistics and the records say the same, and nothing of today
    // is pruned by a retention of one day.
    await sleep(1200);
    const byDay = await gw.ctlJson(['usage', '--by', 'day']);
    assert.deepEqual({ requests: byDay.totals.requests, input_tokens: byDay.totals.input_tokens,
      output_tokens: byDay.totals.output_tokens }, totals(want));
    const detail = await gw.ctlJson(['usage', '--detail', '--limit', '0']);
    assert.equal(detail.rows.length, want.requests);
    assert.equal(detail.rows.filter((x) => x.status === 200).length, want.requests);
  } finally {
    await gw.stop();
  }
});

// Once the master has pruned (its first pass runs a second after it
// starts), records before usage.detail_days are gone: --by hour without
// --since answers from the oldest kept and says from when; with a --since
// before that it is refused with the first day it can answer.
test('usage --by hour after the first prune: from the oldest records kept without --since, refused before them', async () => {
  const gw = await startGateway({ workers: 2, mock, usage: { detail_days: 3, aggregate_days: 10 } });
  try {
    const { key } = await gw.createKey();
    assert.equal((await gw.chat(key, {})).status, 200);
    const cutoff = new Date(Math.floor(Date.now() / 86400000) * 86400000 - 3 * 86400000);
    const day = cutoff.toISOString().slice(0, 10);
    const early = new Date(cutoff.getTime() - 86400000).toISOString().slice(0, 10);
    let refused;
    await eventually(async () => {
      refused = await gw.ctl(['usage', '--by', 'hour', '--since', early]);
      return refused.code !== 0;
    }, { what: 'the first prune', timeoutMs: 5000 });
    assert.match(refused.stderr, new RegExp(`kept from ${day} on .*give --since ${day} or later`));
    const j = await eventually(async () => {
      const r = await gw.ctlJson(['usage', '--by', 'hour']);
      return r.totals?.requests === 1 && r;
    }, { what: 'the request by hour' });
    assert.equal(j.since, `${day}T00:00:00Z`);
    assert.equal(j.rows.length, 1);
    // Grouped by day, the whole range: no since in the reply.
    assert.equal((await gw.ctlJson(['usage', '--by', 'day'])).since, undefined);
  } finally {
    await gw.stop();
  }
});

// The usage the master stored for one key: {requests, input_tokens, output_tokens}.
async function usageOfKey(gw, id) {
  const r = await gw.ctlJson(['usage', '--by', 'key', '--key', id]);
  return r.totals;
}

test('a stream whose upstream sends no usage is counted once, by what it generated', async () => {
  const gw = await startGateway({ workers: 2, mock });
  try {
    const k = await gw.createKey();
    const body = { ...STREAM, messages: [{ role: 'user', content: 'count these words please' }] };
    const res = await gw.chat(k.key, body, { 'x-mock-no-usage': '1', 'x-mock-chunks': '7' });
    assert.equal(res.status, 200);
    assert.equal(res.events.at(-1).data, '[DONE]');
    assert.ok(!res.events.some((e) => e.json?.usage), 'the upstream sent no usage');
    const sent = Buffer.byteLength(JSON.stringify({ model: 'demo', ...body }));
    await eventually(async () => (await usageOfKey(gw, k.id)).requests === 1, { what: 'the record' });
    const u = await usageOfKey(gw, k.id);
    assert.equal(u.output_tokens, 7, 'one token per generated chunk');
    // Estimated as a quarter of the body the gateway sent on (a little
    // longer than the client's: stream_options is added).
    assert.ok(u.input_tokens >= Math.floor(sent / 4) && u.input_tokens <= Math.floor(sent / 4) + 10,
      `input_tokens ${u.input_tokens} for a ${sent}-byte body`);
    await gw.waitLog(/the stream ended without usage: counted 7 chunks/);
  } finally {
    await gw.stop();
  }
});

test('a client gone mid-stream: the upstream is stopped and what it produced is counted once', async () => {
  const gw = await startGateway({ workers: 2, mock });
  try {
    const k = await gw.createKey();
    const conn = await gw.conn();
    await conn.send({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { Authorization: `Bearer ${k.key}`, 'x-mock-chunks': '200', 'x-mock-chunk-delay-ms': '20' },
      body: { model: 'demo', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    });
    await conn.waitFor(() => (conn.buf?.toString() ?? '').split('"content":"tok').length > 5, 5000, 'five chunks');
    conn.close();
    await eventually(async () => (await usageOfKey(gw, k.id)).requests === 1, { what: 'the record', timeoutMs: 8000 });
    const u = await usageOfKey(gw, k.id);
    assert.ok(u.output_tokens >= 5 && u.output_tokens < 200, `output_tokens ${u.output_tokens}: what came before the client left`);
    // Counted once: a moment later, still one request with the same tokens.
    await sleep(500);
    assert.deepEqual(await usageOfKey(gw, k.id), u);
  } finally {
    await gw.stop();
  }
});

// ------------------------------------------------------ a full usage ring

const RING = 16384; // master/main.c SHM_RING

// n GET /v1/models with the key, written at once on one connection
// (pipelined); resolves with how many answers came (each is a 200).
function pipelined(port, key, n) {
  const one = `GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${key}\r\n\r\n`;
  const mark = 'HTTP/1.1 200 ';
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let seen = 0;
    let tail = '';
    sock.on('connect', () => sock.write(one.repeat(n)));
    sock.on('data', (d) => {
      const s = tail + d.toString('latin1');
      seen += s.split(mark).length - 1;
      tail = s.slice(-(mark.length - 1)); // too short to hold a whole mark twice
      if (seen >= n) { sock.destroy(); resolve(seen); }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(seen));
  });
}

async function metric(port, name) {
  const res = await request(port, { path: '/metrics' });
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(res.text);
  return m ? Number(m[1]) : NaN;
}

// Fill the ring with the master stopped: RING records and `extra` more,
// on 2 connections.  Resolves once the ring is full; .answers resolves
// with the answers counted when every connection is done.  The gateway
// has a third worker: with one connection per worker (the suite's first
// pass), /metrics is only answered by a worker that is not waiting for
// room in the ring, and the master that would start another is stopped.
async function fillRing(gw, metricsPort, key, extra) {
  const per = (RING + extra) / 2;
  const answers = Promise.all(Array.from({ length: 2 }, () => pipelined(gw.port, key, per)))
    .then((a) => a.reduce((x, y) => x + y, 0));
  await eventually(async () => (await metric(metricsPort, 'aigw_usage_ring_pending')) >= RING,
    { timeoutMs: 30000, what: 'the ring full' });
  return { answers };
}

// A gateway whose master is stopped (SIGSTOP) while the ring fills with
// RING records and 64 more; stopped(ctx) runs then, the master goes on
// (SIGCONT), and resumed(ctx) runs after.  ctx: the gateway, .answers
// (see fillRing) and .through() (records written through so far).
async function withFullRing(stopped, resumed) {
  const metricsPort = await freePort();
  const gw = await startGateway({ workers: 3, mock, metrics: `127.0.0.1:${metricsPort}` });
  try {
    const { key } = await gw.createKey();
    const through = () => metric(metricsPort, 'aigw_usage_records_written_through_total');
    let ctx;
    gw.signal('SIGSTOP');
    try {
      const { answers } = await fillRing(gw, metricsPort, key, 64);
      ctx = { gw, answers, through };
      await stopped(ctx);
    } finally {
      gw.signal('SIGCONT');
    }
    await resumed(ctx);
  } finally {
    await gw.stop();
  }
}

test('a full usage ring waits for the master to drain it, and writes nothing around it', { timeout: 90000 }, async () => {
  await withFullRing(async ({ through }) => {
    // The records past a full ring wait: a commit that syncs on a busy
    // disk can take this long, and the master is not stuck.
    await sleep(500);
    assert.equal(await through(), 0);
  }, async ({ gw, answers, through }) => {
    assert.equal(await answers, RING + 64);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests === RING + 64,
      { timeoutMs: 10000, what: 'every request counted' });
    assert.equal(await through(), 0);
  });
});

test('a master that stores nothing for 2 s is written around, and nothing is lost', { timeout: 90000 }, async () => {
  await withFullRing(async ({ answers, through }) => {
    // Every answer comes while the master is still stopped: the workers
    // store the records past the full ring themselves.
    assert.equal(await answers, RING + 64);
    assert.ok(await through() >= 1);
  }, async ({ gw }) => {
    await gw.waitLog(/the usage ring is full and the master stored nothing for 2000 ms/);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests === RING + 64,
      { timeoutMs: 10000, what: 'every request counted once' });
    await sleep(1200); // two drains more: nothing arrives twice
    assert.equal((await gw.ctlJson(['usage'])).requests, RING + 64);
  });
});

// n GET /v1/models with the key, pipelined on one connection; resolves
// with how many answers came with each status ({200: n, 503: m}).
function pipelinedStatuses(port, key, n) {
  const one = `GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${key}\r\n\r\n`;
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const seen = {};
    let count = 0;
    let tail = '';
    sock.on('connect', () => sock.write(one.repeat(n)));
    sock.on('data', (d) => {
      const s = tail + d.toString('latin1');
      for (const m of s.matchAll(/HTTP\/1\.1 (\d{3}) /g)) {
        seen[m[1]] = (seen[m[1]] ?? 0) + 1;
        count++;
      }
      const cut = s.lastIndexOf('HTTP/1.1 ');
      tail = cut >= 0 && s.length - cut < 13 ? s.slice(cut) : s.slice(-8);
      if (count >= n) { sock.destroy(); resolve(seen); }
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(seen));
  });
}

// The state directory on a tmpfs of its own, filled up while the gateway
// serves.
test('a full disk: requests are refused with 503 before the ring of usage records fills, and none is lost', { timeout: 90000 }, (t) =>
  onSmallDisk(t, '16m', async ({ root, disk }) => {
    let gw;
    try {
      gw = await startGateway({ dir: root, mock });
      const { key } = await gw.createKey();
      for (let i = 0; i < 20; i++) assert.equal((await gw.chat(key, {})).status, 200);
      await eventually(async () => (await gw.ctlJson(['usage'])).requests === 20, { what: 'the first 20 stored' });

      disk.fill();
      const seen = await pipelinedStatuses(gw.port, key, RING);
      // Three quarters of the ring take records (more if the master stored
      // some before the disk was full); then every request is refused.
      assert.ok(seen[200] >= RING - RING / 4, JSON.stringify(seen));
      assert.ok(seen[503] >= 1, JSON.stringify(seen));
      assert.equal(seen[200] + seen[503], RING, JSON.stringify(seen));
      const refused = await gw.get('/v1/models', key);
      assertError(assert, refused, 503, 'usage_store_unavailable', { type: 'server_error' });
      assert.match(refused.json().error.message, /no space left in the state store/);
      assert.equal(refused.headers['retry-after'], '5');
      assert.equal((await gw.get('/healthz')).status, 200, 'what needs no record is served');
      const made = await gw.ctl(['key', 'create', '--name', 'while-full']);
      assert.notEqual(made.code, 0);
      assert.match(made.stderr, /could not store the key: no space left in the state store/);
      await gw.waitLog(/usage: \d+ records could not be stored \(no space left in the state store\)/);

      disk.unfill();
      await eventually(async () => (await gw.ctlJson(['usage'])).requests === 20 + seen[200],
        { timeoutMs: 20000, what: 'every answered request counted once the disk has room' });
      assert.equal((await gw.get('/v1/models', key)).status, 200);
      await gw.waitLog(/usage: records are stored again, after \d+ ms of failures/);
    } finally {
      await gw?.stop({ keepDir: true });
    }
  }));
