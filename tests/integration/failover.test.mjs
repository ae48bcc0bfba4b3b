// failover.test.mjs - surviving upstream failures: retries on the next
// target, the model's fallbacks, the total deadline, what is and is not
// retried (5xx and 429 are, other 4xx and a stream already begun are not),
// and the circuit breaker that takes a dead target out of the rotation
// and probes it back in.
//
// One gateway serves every model here; each model has targets (provider +
// model name) of its own, so that one test's failures and breakers do not
// touch another's.  Upstreams that must fail differently from the others
// are separate aigw-mock instances, proxies in front of them
// (lib/proxy.mjs), ports nobody listens on, or a server that never answers.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import {
  assertError, eventually, freePort, sleep, startGateway, startMock, startMocks, test,
} from './lib/harness.mjs';
import { countTargets, failures, load } from './lib/load.mjs';
import { startProxy } from './lib/proxy.mjs';

const ctx = {};

// Accepts connections and never answers: an upstream that hangs.
function startBlackhole() {
  const sockets = new Set();
  const srv = net.createServer((s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    port: srv.address().port,
    close: () => { for (const s of sockets) s.destroy(); return new Promise((r) => srv.close(r)); },
  })));
}

const noBreaker = { failures: 0 };

before(async () => {
  // killA/killB: the mid-load kill; other: a second healthy upstream.
  [ctx.killA, ctx.killB, ctx.other] = await startMocks(3);
  ctx.err500 = await startProxy(ctx.other, { status: 500 });
  ctx.rl1 = await startProxy(ctx.other, { status: 429, headers: { 'Retry-After': '7' } });
  ctx.rl2 = await startProxy(ctx.other, { status: 429, headers: { 'Retry-After': '7' } });
  ctx.rlOne = await startProxy(ctx.other, { status: 429, headers: { 'Retry-After': '1' } });
  ctx.hole = await startBlackhole();
  ctx.deadPort = await freePort();
  ctx.dead2Port = await freePort();
  ctx.breakerPort = await freePort();
  const dead = (port) => `http://127.0.0.1:${port}/v1`;
  ctx.gw = await startGateway({
    workers: 10,
    providers: [
      { name: 'ka', base_url: ctx.killA.base },
      { name: 'kb', base_url: ctx.killB.base },
      { name: 'other', base_url: ctx.other.base },
      { name: 'e500', base_url: ctx.err500.base },
      { name: 'rl1', base_url: ctx.rl1.base },
      { name: 'rl2', base_url: ctx.rl2.base },
      { name: 'rlone', base_url: ctx.rlOne.base },
      { name: 'hole', base_url: `http://127.0.0.1:${ctx.hole.port}/v1` },
      { name: 'hole300', base_url: `http://127.0.0.1:${ctx.hole.port}/v1`, timeouts: { first_byte: '300ms' } },
      { name: 'dead', base_url: dead(ctx.deadPort) },
      { name: 'dead2', base_url: dead(ctx.dead2Port) },
      { name: 'revive', base_url: dead(ctx.breakerPort) },
    ],
    models: [
      {
        name: 'kill', routing: { strategy: 'weighted', retries: 1, breaker: { failures: 3, cooldown: '30s' } },
        targets: [{ provider: 'ka', model: 'kill' }, { provider: 'kb', model: 'kill' }],
      },
      {
        name: 'alldead', routing: { retries: 1, breaker: { failures: 2, cooldown: '30s' } },
        targets: [{ provider: 'dead', model: 'alldead' }, { provider: 'dead2', model: 'alldead' }],
      },
      {
        name: 'hang', routing: { retries: 2, deadline: '1s', breaker: noBreaker },
        timeouts: { first_byte: '30s' },
        targets: [{ provider: 'hole', model: 'hang-1' }, { provider: 'hole', model: 'hang-2' }],
      },
      {
        // The hanging target is the cheaper; its provider's first_byte
        // timeout (300ms) overrides the model's.
        name: 'hang1', routing: { strategy: 'price', retries: 1, breaker: noBreaker },
        timeouts: { first_byte: '30s' },
        targets: [
          { provider: 'other', model: 'hang1', price: { input: 1, output: 1 } },
          { provider: 'hole300', model: 'hang1', price: { input: 0.1, output: 0.1 } },
        ],
      },
      {
        name: 'fb300', routing: { retries: 0, breaker: noBreaker },
        targets: [{ provider: 'hole300', model: 'fb300' }],
      },
      {
        name: 'two', routing: { retries: 1, breaker: noBreaker },
        targets: [{ provider: 'local', model: 'two' }, { provider: 'other', model: 'two' }],
      },
      {
        // The failing target is the cheaper: price tries it first.
        name: 'half500', routing: { strategy: 'price', retries: 1, breaker: noBreaker },
        targets: [
          { provider: 'other', model: 'half500', price: { input: 1, output: 1 } },
          { provider: 'e500', model: 'half500', price: { input: 0.1, output: 0.1 } },
        ],
      },
      {
        name: 'ratelimited', routing: { retries: 1, breaker: noBreaker },
        targets: [{ provider: 'rl1', model: 'rl' }, { provider: 'rl2', model: 'rl' }],
      },
      {
        name: 'half429', routing: { strategy: 'price', retries: 1, breaker: noBreaker },
        targets: [
          { provider: 'other', model: 'half429', price: { input: 1, output: 1 } },
          { provider: 'rlone', model: 'half429', price: { input: 0.1, output: 0.1 } },
        ],
      },
      {
        name: 'primary', routing: { retries: 1, breaker: noBreaker }, fallbacks: ['secondary'],
        targets: [{ provider: 'dead', model: 'primary' }, { provider: 'dead2', model: 'primary' }],
      },
      { name: 'secondary', targets: [{ provider: 'other', model: 'secondary-model' }] },
      {
        name: 'brk', routing: { strategy: 'weighted', retries: 1, breaker: { failures: 3, cooldown: '1s' } },
        targets: [{ provider: 'local', model: 'brk-live' }, { provider: 'revive', model: 'brk-back' }],
      },
    ],
  });
  ctx.key = (await ctx.gw.createKey()).key;
});

after(async () => {
  if (ctx.gw) await ctx.gw.stop();
  for (const p of [ctx.err500, ctx.rl1, ctx.rl2, ctx.rlOne]) if (p) await p.close();
  for (const m of [ctx.killA, ctx.killB, ctx.other, ctx.revived]) if (m) await m.stop();
  if (ctx.hole) await ctx.hole.close();
});

const chatRequest = (model, headers = {}, body = {}) => ({
  path: '/v1/chat/completions',
  headers: { Authorization: `Bearer ${ctx.key}`, ...headers },
  body: { model, messages: [{ role: 'user', content: 'hi' }], ...body },
});

const chat = (model, headers, body) => ctx.gw.request({ method: 'POST', ...chatRequest(model, headers, body) });

const attempts = (res) => Number(res.headers['x-aigw-attempts']);

// ------------------------------------------------------------ failover

test('a killed upstream mid-load gives zero client errors while another target is healthy', async () => {
  let sent = 0;
  let killedAt = null;
  const running = load(ctx.gw.port, {
    n: 600, concurrency: 8,
    // 20 ms at the upstream: requests are in flight when it dies.
    make: (i) => { sent = i + 1; return chatRequest('kill', { 'x-mock-delay-ms': '20' }); },
  });
  await eventually(() => sent >= 200, { what: 'the load runs' });
  ctx.killB.proc.kill('SIGKILL');
  killedAt = performance.now();
  const res = await running;
  assert.deepEqual(failures(res), [], 'no client error');
  const seen = countTargets(res);
  assert.ok(seen['kb/kill'] > 0 && seen['ka/kill'] > 0, JSON.stringify(seen));
  const late = res.filter((r) => r.sent > killedAt + 100);
  assert.ok(late.length > 100);
  assert.deepEqual(countTargets(late), { 'ka/kill': late.length }, 'after the kill only the live target serves');
  assert.ok(res.some((r) => r.attempts === 2), 'requests that met the dead target were retried');
});

test('every target refusing connections: 502 after the retries, then 503 no_healthy_target once the breakers are open', async () => {
  for (let i = 0; i < 2; i++) {
    const res = await chat('alldead');
    assertError(assert, res, 502, 'upstream_unreachable');
    assert.equal(attempts(res), 2, 'the first attempt and one retry');
  }
  // Each target has failed twice (breaker.failures): both are open.
  const t0 = performance.now();
  const res = await chat('alldead');
  assertError(assert, res, 503, 'no_healthy_target');
  assert.equal(res.headers['retry-after'], '1');
  assert.equal(res.headers['x-aigw-target'], undefined, 'no target served it');
  assert.ok(performance.now() - t0 < 1000, 'answered at once');
});

test('upstreams that never answer: the answer comes within routing.deadline', async () => {
  const t0 = performance.now();
  const res = await chat('hang');
  const ms = performance.now() - t0;
  assertError(assert, res, 504, 'upstream_timeout');
  assert.ok(ms >= 900 && ms < 2500, `answered after ${Math.round(ms)} ms; deadline 1s`);
  assert.equal(attempts(res), 1, 'no attempt starts after the deadline');
});

test('an attempt that times out is retried on the next target, after the provider\'s own first_byte timeout', async () => {
  const t0 = performance.now();
  const res = await chat('hang1');
  const ms = performance.now() - t0;
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers['x-aigw-target'], 'other/hang1');
  assert.equal(attempts(res), 2);
  assert.ok(ms >= 250 && ms < 5000, `answered after ${Math.round(ms)} ms: the provider's 300ms, not the model's 30s`);
});

test('a first_byte timeout under a second fires on time', async () => {
  const t0 = performance.now();
  const res = await chat('fb300');
  const ms = performance.now() - t0;
  assertError(assert, res, 504, 'upstream_timeout');
  assert.ok(ms >= 250 && ms < 700, `first_byte 300ms fired after ${Math.round(ms)} ms`);
});

// ---------------------------------------------------- what is retried

test('a 4xx from the upstream is passed on and not retried', async () => {
  const res = await chat('two', { 'x-mock-status': '400' });
  assertError(assert, res, 400, 'mock_status_400');
  assert.equal(attempts(res), 1);
});

test('a 500 is retried on the next target; 502 when every target answers 500', async () => {
  const ok = await chat('half500');
  assert.equal(ok.status, 200, ok.text);
  assert.equal(attempts(ok), 2);
  assert.equal(ok.headers['x-aigw-target'], 'other/half500');
  assert.equal(ok.json().model, 'half500');
  assert.ok(ctx.err500.hits >= 1, 'the cheap target answering 500 was tried first');

  const bad = await chat('two', { 'x-mock-status': '500' });
  assertError(assert, bad, 502, 'upstream_error');
  assert.equal(attempts(bad), 2, 'retries: 1');
});

test('a 429 with Retry-After reaches the client when every target answered 429; the targets then rest that long', async () => {
  const res = await chat('ratelimited');
  assert.equal(res.status, 429, res.text);
  assert.equal(res.headers['retry-after'], '7');
  assert.equal(res.json().error.code, 'proxy_status_429', 'the provider\'s answer as it came');
  assert.equal(attempts(res), 2);
  assert.equal(ctx.rl1.hits + ctx.rl2.hits, 2);

  // Both are held back: nothing goes upstream, 503 at once.
  const next = await chat('ratelimited');
  assertError(assert, next, 503, 'no_healthy_target');
  assert.equal(ctx.rl1.hits + ctx.rl2.hits, 2, 'no request reached a target held back');
});

test('a 429 is retried on another target, and the target that sent it gets nothing until its Retry-After has passed', async () => {
  const res = await chat('half429');
  assert.equal(res.status, 200, res.text);
  assert.equal(attempts(res), 2);
  assert.equal(res.headers['x-aigw-target'], 'other/half429');
  assert.equal(ctx.rlOne.hits, 1);

  for (let i = 0; i < 3; i++) {
    const r = await chat('half429');
    assert.equal(r.status, 200);
    assert.equal(attempts(r), 1, 'the cheaper target is held back by its Retry-After: 1');
  }
  assert.equal(ctx.rlOne.hits, 1);
  await sleep(1100);
  const again = await chat('half429');
  assert.equal(again.status, 200);
  assert.equal(ctx.rlOne.hits, 2, 'after Retry-After the cheaper target is tried again');
});

test('a stream whose upstream answers 500 before any event is retried on the next target', async () => {
  const res = await chat('half500', {}, { stream: true });
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'], /text\/event-stream/);
  assert.equal(attempts(res), 2);
  assert.equal(res.headers['x-aigw-target'], 'other/half500');
  assert.equal(res.events.at(-1).data, '[DONE]');
});

// ------------------------------------------------------------ fallbacks

test('fallbacks: a model whose targets are all dead falls back to the next model, which answers', async () => {
  const res = await chat('primary');
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers['x-aigw-target'], 'other/secondary-model');
  assert.equal(res.json().model, 'secondary-model');
  assert.equal(attempts(res), 3, 'two on primary\'s targets, one on the fallback');
});

// --------------------------------------------------------------- streams

test('a stream that already sent events is not retried: the client gets the error event', async () => {
  const res = await chat('two', { 'x-mock-drop-after': '2' }, { stream: true });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /text\/event-stream/);
  assert.equal(attempts(res), 1);
  const ev = res.events;
  assert.equal(ev.filter((e) => e.json?.choices?.[0]?.delta?.content).length, 2, res.text);
  assert.equal(ev.at(-1).json?.error?.code, 'upstream_disconnected', res.text);
  assert.equal(ev.filter((e) => e.data === '[DONE]').length, 0);
});

// --------------------------------------------------------------- breaker

test('breaker: 3 failures open it, after the cooldown one probe goes through and fails, and when the target is back the probe closes it', { timeout: 30000 }, async () => {
  const { gw } = ctx;
  const from = gw.log().length;
  const series = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const r = await chat('brk');
      assert.equal(r.status, 200, r.text);
      out.push({ target: r.headers['x-aigw-target'], attempts: attempts(r) });
    }
    return out;
  };

  // Closed: the dead target is tried (and the request retried on the live
  // one) until its third failure opens the breaker; then it gets nothing.
  let res = await series(10);
  assert.ok(res.every((r) => r.target === 'local/brk-live'), JSON.stringify(res));
  assert.equal(res.filter((r) => r.attempts === 2).length, 3, JSON.stringify(res));
  const third = res.map((r) => r.attempts).lastIndexOf(2);
  assert.ok(res.slice(third + 1).length >= 5 && res.slice(third + 1).every((r) => r.attempts === 1));
  await gw.waitLog(/breaker of revive\/brk-back opened for 1000 ms: too many consecutive failures/, { from });

  // Half-open after the cooldown: one probe, which fails: open again.
  // Eight clients at once, and still a single probe.
  await sleep(1200);
  const burst = await load(gw.port, { n: 40, concurrency: 8, make: () => chatRequest('brk') });
  assert.deepEqual(failures(burst), []);
  assert.equal(burst.filter((r) => r.attempts === 2).length, 1,
    `exactly one probe: ${JSON.stringify(burst.map((r) => r.attempts))}`);
  assert.deepEqual(countTargets(burst), { 'local/brk-live': 40 });
  await gw.waitLog(/breaker of revive\/brk-back opened for 1000 ms: the probe failed/, { from });

  // The target comes back; after the cooldown the probe succeeds and the
  // target has its share again.
  ctx.revived = await startMock({ port: ctx.breakerPort });
  await sleep(1200);
  res = await series(10);
  assert.ok(res.every((r) => r.attempts === 1), JSON.stringify(res));
  const back = res.filter((r) => r.target === 'revive/brk-back').length;
  assert.ok(back >= 4, `the target that came back serves again: ${JSON.stringify(res)}`);
  await gw.waitLog(/breaker of revive\/brk-back closed: the probe succeeded/, { from });
});
