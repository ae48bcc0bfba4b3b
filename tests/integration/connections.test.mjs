// connections.test.mjs - workers.connections: one worker serving many
// connections at once (a coroutine each on the worker's event loop): many
// streams together, a client that stops reading holding up no one else,
// the scoreboard's figures, a full worker, a graceful stop, a crash with
// calls in flight, and the key's configuration errors.

import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
  AIGWD, eventually, pidAlive, run, sleep, startGateway, test,
} from './lib/harness.mjs';

const one = (connections, extra = {}) => ({ workers: { start: 1, connections }, ...extra });

// Until the one worker of gw reports no connection open.
const connectionsClosed = (gw, what) =>
  eventually(async () => (await gw.ctlJson(['workers']))[0].connections === 0, { what });

test('one worker with connections: 64 serves 20 streams at once, each to its end', async () => {
  const gw = await startGateway(one(64));
  try {
    const { key } = await gw.createKey();
    const streams = Array.from({ length: 20 }, () =>
      gw.chat(key, { stream: true }, { 'x-mock-chunks': '10', 'x-mock-chunk-delay-ms': '150' }));
    // All 20 are open on the one worker at the same time.
    let seen;
    await eventually(async () => {
      seen = await gw.ctlJson(['workers']);
      return seen.length === 1 && seen[0].connections === 20 && seen[0].state === 'busy';
    }, { what: '20 connections on the one worker', timeoutMs: 5000 });
    const st = await gw.status();
    assert.equal(st.in_flight, 20, JSON.stringify(st));
    assert.equal(st.connections, 20, JSON.stringify(st));
    const res = await Promise.all(streams);
    for (const r of res) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.events.at(-1).data, '[DONE]');
      assert.equal(r.events.filter((e) => e.json?.choices?.[0]?.delta?.content).length, 10);
    }
    const w = await gw.ctlJson(['workers']);
    assert.equal(w[0].requests, 20);
    assert.equal(w[0].pid, seen[0].pid, 'the same process served them all');
    await connectionsClosed(gw, 'the connections closed');
    assert.equal((await gw.ctlJson(['workers']))[0].state, 'idle');
    // Usage: every stream counted once.
    await eventually(async () => {
      const u = await gw.ctlJson(['usage', '--by', 'model']);
      return u.rows?.find((r) => r.model === 'demo')?.requests === 20;
    }, { what: 'usage of 20 requests' });
  } finally {
    await gw.stop();
  }
});

// TCP connections a process holds to port (its upstream connections when
// port is the mock's): its socket inodes, looked up in /proc/net/tcp.
function connectionsTo(pid, port) {
  const inodes = new Set();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return fs.readFileSync('/proc/net/tcp', 'latin1').split('\n').slice(1).filter((l) => {
    const f = l.trim().split(/\s+/);
    return f.length > 9 && f[2].endsWith(`:${hex}`) && f[3] === '01' && inodes.has(f[9]);
  }).length;
}

test('after a burst of 100 connections a worker keeps 64 upstream connections open, no more', async () => {
  const gw = await startGateway(one(256));
  try {
    const { key } = await gw.createKey();
    const [worker] = gw.workerPids();
    const up = () => connectionsTo(worker, gw.mock.port);
    const burst = Array.from({ length: 100 }, () => gw.chat(key, {}, { 'x-mock-delay-ms': '800' }));
    let peak = 0;
    await eventually(async () => (peak = Math.max(peak, up())) >= 100,
      { what: '100 upstream connections open', timeoutMs: 5000 });
    for (const r of await Promise.all(burst)) assert.equal(r.status, 200, r.text);
    await connectionsClosed(gw, 'the clients gone');
    const after = up();
    assert.ok(after <= 64, `${after} upstream connections left open (peak ${peak})`);
    assert.ok(after >= 1, 'kept contexts keep their upstream connections');
    // Those kept serve the next requests.
    assert.equal((await gw.chat(key, {})).status, 200);
  } finally {
    await gw.stop();
  }
});

test('a client that stops reading a long stream holds up no other connection of its worker', async () => {
  const gw = await startGateway(one(8, { http: { write_timeout: '30s' } }));
  try {
    const { key } = await gw.createKey();
    const stalled = await gw.conn();
    stalled.sock.pause(); // reads nothing: the worker's writes to it block
    await stalled.send({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { Authorization: `Bearer ${key}`, 'x-mock-chunks': '200000' },
      body: { model: 'demo', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    });
    // Its answer fills the socket buffers and the worker waits to write.
    await sleep(500);
    for (let i = 0; i < 5; i++) {
      const r = await gw.chat(key, {});
      assert.equal(r.status, 200, r.text);
    }
    const w = await gw.ctlJson(['workers']);
    assert.equal(w.length, 1);
    assert.equal(w[0].connections, 1, 'the stalled stream is still open');
    assert.equal(stalled.ended, false);
    stalled.close();
    await connectionsClosed(gw, 'the stalled connection let go');
  } finally {
    await gw.stop();
  }
});

test('a full worker takes a new connection when one of its own closes', async () => {
  const gw = await startGateway(one(2, { http: { keepalive_timeout: '1s' } }));
  try {
    const { key } = await gw.createKey();
    // Two keep-alive connections fill the worker.
    const a = await gw.conn(), b = await gw.conn();
    for (const c of [a, b]) {
      await c.send({ method: 'GET', path: '/healthz' });
      assert.equal((await c.readResponse()).status, 200);
    }
    assert.equal((await gw.ctlJson(['workers']))[0].connections, 2);
    // The third waits in the listen queue until an idle one times out.
    const r = await gw.chat(key, {});
    assert.equal(r.status, 200, r.text);
    assert.ok(a.ended || b.ended, 'an idle keep-alive connection made room');
    a.close();
    b.close();
  } finally {
    await gw.stop();
  }
});

test('a burst of 32 connections is shared between two workers, none takes most of them', async () => {
  const gw = await startGateway({ workers: { start: 2, connections: 64 } });
  try {
    // All at once, as a load generator opens them: each worker is told of
    // every new connection, and without the accept balance the one the
    // kernel runs first took them (0/32 or 1/31 in four tries).
    const conns = await Promise.all(Array.from({ length: 32 }, () => gw.conn()));
    await Promise.all(conns.map(async (c) => {
      await c.send({ method: 'GET', path: '/healthz' });
      assert.equal((await c.readResponse()).status, 200);
    }));
    const w = await gw.ctlJson(['workers']);
    const counts = w.map((e) => e.connections);
    assert.equal(counts.length, 2);
    assert.equal(counts[0] + counts[1], 32, JSON.stringify(w));
    assert.ok(Math.min(...counts) >= 12, `split ${counts.join('/')}`);
    for (const c of conns) c.close();
  } finally {
    await gw.stop();
  }
});

test('SIGTERM on a worker with many connections: requests in hand finish, idle ones close, exit 0', async () => {
  const gw = await startGateway(one(32));
  try {
    const { key } = await gw.createKey();
    const idle = await gw.conn();
    await idle.send({ method: 'GET', path: '/healthz' });
    assert.equal((await idle.readResponse()).status, 200);
    const streams = Array.from({ length: 6 }, () =>
      gw.chat(key, { stream: true }, { 'x-mock-chunks': '5', 'x-mock-chunk-delay-ms': '300' }));
    await eventually(async () => (await gw.status()).in_flight === 6, { what: '6 requests in flight' });
    const [worker] = gw.workerPids();
    gw.signal('SIGTERM');
    assert.equal(await idle.closedWithin(3000), true, 'the idle keep-alive connection is closed');
    const res = await Promise.all(streams);
    for (const r of res) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.events.at(-1).data, '[DONE]', 'each stream ran to its end');
    }
    const exit = await gw.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.equal(pidAlive(worker), false);
  } finally {
    await gw.stop();
  }
});

test('a worker killed with calls in flight: the target\'s in-flight figure comes back to 0', async () => {
  const gw = await startGateway(one(16));
  try {
    const { key } = await gw.createKey();
    const pending = Array.from({ length: 5 }, () =>
      gw.chat(key, {}, { 'x-mock-delay-ms': '30000' }).catch((err) => err));
    const inFlight = async () => (await gw.ctlJson(['breaker', 'list']))
      .find((t) => t.model === 'demo' && t.target === 'local/mock-small').in_flight;
    await eventually(async () => (await inFlight()) === 5, { what: '5 calls in flight' });
    const [victim] = gw.workerPids();
    process.kill(victim, 'SIGKILL');
    await Promise.all(pending);
    await eventually(async () => gw.workerPids().length === 1 && !gw.workerPids().includes(victim),
      { what: 'the worker replaced' });
    assert.equal(await inFlight(), 0);
    const r = await gw.chat(key, {});
    assert.equal(r.status, 200, r.text);
  } finally {
    await gw.stop();
  }
});

// Requests of one worker that started before a reload finish on their
// generation, safety rules included, while new ones take the new one: the
// worker holds both generation slots, and the old rules' compiled engine
// lives until its last stream ends (make asan checks it is not used after).
test('streams begun before reloads finish on their generation and rules; new requests take the new ones', async () => {
  const ipRule = (mask) => ({
    rules: [{ name: 'ip', type: 'pii', detector: 'ipv4', on: ['output'], action: 'mask', mask }],
  });
  const gw = await startGateway(one(16, { safety: ipRule('<ip>') }));
  try {
    const { key } = await gw.createKey();
    const content = 'server 10.1.2.3 is up, 10.9.8.7 too';
    const headers = { 'x-mock-content': content, 'x-mock-split': '4,12,20,30', 'x-mock-chunk-delay-ms': '400' };
    const text = (r) => r.events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');
    const old = Array.from({ length: 4 }, () => gw.chat(key, { stream: true }, headers));
    await eventually(async () => (await gw.status()).in_flight === 4, { what: '4 streams in flight' });
    const g0 = (await gw.status()).generation;
    for (let i = 1; i <= 3; i++) {
      gw.rewriteConfig({ safety: ipRule(`<addr${i}>`) });
      const r = await gw.ctl(['reload']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await gw.status()).generation, g0 + i);
      const now = await gw.chat(key, { stream: true }, { 'x-mock-content': content, 'x-mock-split': '9' });
      assert.equal(text(now), `server <addr${i}> is up, <addr${i}> too`);
    }
    for (const r of await Promise.all(old)) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.events.at(-1).data, '[DONE]');
      assert.equal(text(r), 'server <ip> is up, <ip> too', 'the rules the stream began with');
    }
    assert.equal(gw.workerPids().length, 1, 'no worker died');
  } finally {
    await gw.stop();
  }
});

test('workers.connections out of range is a configuration error with its position', async () => {
  const gw = await startGateway(one(4));
  try {
    const text = fs.readFileSync(gw.configPath, 'utf8');
    for (const [value, re] of [['0', /between 1 and 65536/], ['70000', /between 1 and 65536/], ['many', /integer/]]) {
      const bad = text.replace(/connections: 4/, `connections: ${value}`);
      assert.notEqual(bad, text);
      fs.writeFileSync(gw.configPath, bad);
      const r = await run(AIGWD, ['-t', '-c', gw.configPath]);
      assert.notEqual(r.code, 0, value);
      assert.match(r.stderr, /workers\.connections/);
      assert.match(r.stderr, re);
      assert.match(r.stderr, /aigw\.yaml:\d+:\d+/);
      // A reload with it changes nothing.
      assert.notEqual((await gw.ctl(['reload'])).code, 0);
      assert.equal((await gw.ctlJson(['workers'])).length, 1);
    }
  } finally {
    await gw.stop();
  }
});

test('changing workers.connections on reload replaces the workers', async () => {
  const gw = await startGateway(one(4));
  try {
    const before = gw.workerPids();
    fs.writeFileSync(gw.configPath, fs.readFileSync(gw.configPath, 'utf8').replace(/connections: 4/, 'connections: 8'));
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(() => gw.workerPids().length === 1 && !before.includes(gw.workerPids()[0]),
      { what: 'a new worker', timeoutMs: 10000 });
    const { key } = await gw.createKey();
    assert.equal((await gw.chat(key, {})).status, 200);
  } finally {
    await gw.stop();
  }
});

test('AIGW_PARK_FROM that is not a number is named in a warning, once, and the default serves', async () => {
  const gw = await startGateway({ workers: { start: 2, connections: 16 }, env: { AIGW_PARK_FROM: '8x' } });
  try {
    await gw.waitLog(/AIGW_PARK_FROM=8x is not a number; 8 it is/);
    const { key } = await gw.createKey();
    // Twelve streams at once: past the default 8, every wait parks.
    const streams = await Promise.all(Array.from({ length: 12 }, () =>
      gw.chat(key, { stream: true }, { 'x-mock-chunks': '5', 'x-mock-chunk-delay-ms': '20' })));
    for (const r of streams) {
      assert.equal(r.status, 200);
      assert.match(r.text, /data: \[DONE\]/);
    }
    // Read by the master, not by each of the two workers.
    assert.equal(gw.log().match(/AIGW_PARK_FROM=8x/g).length, 1);
  } finally {
    await gw.stop();
  }
});
