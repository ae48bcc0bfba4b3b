// routing.test.mjs - how a model's requests are spread over its targets:
// the strategies weighted, sticky, least_busy, latency and price, a key
// bound to a strategy or allowed to choose one with x-aigw-route, and a
// reload that changes the routing under load.
//
// Each test starts a gateway of its own, so that no figure (in flight,
// latency, breaker) of one test steers another.  Targets that must behave
// differently sit on aigw-mock instances of their own, some behind a
// proxy in this process (lib/proxy.mjs) that adds a delay.

import assert from 'node:assert/strict';

import {
  BASE_MODELS, eventually, sleep, startGateway, startMocks, test,
} from './lib/harness.mjs';
import { countTargets, failures, load } from './lib/load.mjs';
import { startProxy } from './lib/proxy.mjs';

// A chat request for load() (and its parts for gw.chat).
const chatRequest = (key, model, { headers = {}, body = {} } = {}) => ({
  path: '/v1/chat/completions',
  headers: { Authorization: `Bearer ${key}`, ...headers },
  body: { model, messages: [{ role: 'user', content: 'hi' }], ...body },
});

// Start a gateway on opts, run fn(gw, key), and stop everything started.
// cleanup: more things with a close() or stop() to end afterwards.
async function withGateway(opts, fn, cleanup = []) {
  let gw;
  try {
    gw = await startGateway({ workers: 10, ...opts });
    const { key } = await gw.createKey();
    await fn(gw, key);
  } finally {
    if (gw) await gw.stop();
    for (const c of cleanup) await (c.close ? c.close() : c.stop());
  }
}

// n requests one after the other: [{status, target, attempts, model, text}]
// (model: the one the upstream answered for).  opts, or opts(i): the
// headers and body fields of chatRequest.
async function serial(gw, key, n, model, opts = {}) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const req = chatRequest(key, model, typeof opts === 'function' ? opts(i) : opts);
    const res = await gw.request({ method: 'POST', ...req });
    out.push({
      status: res.status, target: res.headers['x-aigw-target'],
      attempts: Number(res.headers['x-aigw-attempts']), model: res.status === 200 ? res.json().model : null,
      text: res.text,
    });
  }
  return out;
}

const share = (seen, target, total) => (seen[target] ?? 0) / total;

// ---------------------------------------------------------------- weighted

test('weighted: weights 3 and 1 split 10,000 requests 3:1 within 2%, and a reload to 1:1 takes effect without a failed request', { timeout: 60000 }, async () => {
  const mocks = await startMocks(2);
  const providers = [{ name: 'a', base_url: mocks[0].base }, { name: 'b', base_url: mocks[1].base }];
  const model = (wa, wb) => ({
    name: 'w', routing: { strategy: 'weighted' },
    targets: [{ provider: 'a', model: 'w-a', weight: wa }, { provider: 'b', model: 'w-b', weight: wb }],
  });
  await withGateway({ providers, models: [model(3, 1)] }, async (gw, key) => {
    const make = () => chatRequest(key, 'w');
    const first = await load(gw.port, { n: 10000, concurrency: 8, make });
    assert.deepEqual(failures(first), []);
    const seen = countTargets(first);
    const a = share(seen, 'a/w-a', first.length);
    assert.ok(Math.abs(a - 0.75) <= 0.02, `a/w-a should get 75% ± 2%: ${JSON.stringify(seen)}`);
    assert.equal((seen['a/w-a'] ?? 0) + (seen['b/w-b'] ?? 0), first.length);

    // The same load again, and a reload to 1:1 in the middle of it.
    let sent = 0;
    let stop = false;
    const running = load(gw.port, { until: () => stop, concurrency: 8, make: (i) => { sent = i + 1; return make(); } });
    await eventually(() => sent >= 500, { what: 'the load runs' });
    const gen = (await gw.status()).generation;
    gw.rewriteConfig({ models: [...BASE_MODELS, model(1, 1)] });
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    const reloadedAt = performance.now();
    const mark = sent;
    await eventually(() => sent >= mark + 2000, { timeoutMs: 20000, what: 'requests after the reload' });
    stop = true;
    const second = await running;
    assert.equal((await gw.status()).generation, gen + 1);
    assert.deepEqual(failures(second), [], 'no request fails during the reload');

    const after = second.filter((x) => x.sent > reloadedAt);
    const seenAfter = countTargets(after);
    const a2 = share(seenAfter, 'a/w-a', after.length);
    assert.ok(after.length >= 2000);
    assert.ok(Math.abs(a2 - 0.5) <= 0.02, `after the reload a/w-a should get 50% ± 2%: ${JSON.stringify(seenAfter)}`);
  }, mocks);
});

// ------------------------------------------------------------------ sticky

const stickyModel = (n) => ({
  name: 'st', routing: { strategy: 'sticky' },
  targets: ['st-a', 'st-b', 'st-c'].slice(0, n).map((m) => ({ provider: 'local', model: m })),
});

// session -> [targets seen], from results of requests whose session is sessionOf(i).
function bySession(results, sessionOf) {
  const map = new Map();
  results.forEach((r, i) => {
    const s = sessionOf(i);
    if (!map.has(s)) map.set(s, new Set());
    map.get(s).add(r.target);
  });
  return map;
}

test('sticky: the same x-session-id goes to the same target every time, and sessions spread over both targets', async () => {
  await withGateway({ models: [stickyModel(2)] }, async (gw, key) => {
    const session = (i) => `session-${i % 10}`;
    const res = await serial(gw, key, 50, 'st', (i) => ({ headers: { 'x-session-id': session(i) } }));
    assert.ok(res.every((r) => r.status === 200), JSON.stringify(res.filter((r) => r.status !== 200)));
    const map = bySession(res, session);
    assert.equal(map.size, 10);
    for (const [s, targets] of map) assert.equal(targets.size, 1, `${s} went to ${[...targets]}`);
    const used = new Set([...map.values()].map((t) => [...t][0]));
    assert.deepEqual([...used].sort(), ['local/st-a', 'local/st-b'], 'the sessions use both targets');
  });
});

test('sticky: without the header the request\'s user field is the session', async () => {
  await withGateway({ models: [stickyModel(2)] }, async (gw, key) => {
    const user = (i) => `user-${i % 10}`;
    const res = await serial(gw, key, 50, 'st', (i) => ({ body: { user: user(i) } }));
    assert.ok(res.every((r) => r.status === 200));
    const map = bySession(res, user);
    for (const [u, targets] of map) assert.equal(targets.size, 1, `${u} went to ${[...targets]}`);
    assert.equal(new Set([...map.values()].map((t) => [...t][0])).size, 2, 'the users use both targets');
  });
});

test('sticky: adding a third target by reload moves only a minority of the sessions, all to the new target', async () => {
  await withGateway({ models: [stickyModel(2)] }, async (gw, key) => {
    const N = 90;
    const session = (i) => `s-${i}`;
    const ask = () => load(gw.port, {
      n: N, concurrency: 4, make: (i) => chatRequest(key, 'st', { headers: { 'x-session-id': session(i) } }),
    });
    const before = await ask();
    assert.deepEqual(failures(before), []);
    gw.rewriteConfig({ models: [...BASE_MODELS, stickyModel(3)] });
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    const after = await ask();
    assert.deepEqual(failures(after), []);

    const was = new Map(before.map((x) => [x.i, x.target]));
    const moved = after.filter((x) => x.target !== was.get(x.i));
    assert.ok(moved.length > 0, 'the new target gets sessions');
    assert.ok(moved.length < N / 2, `${moved.length} of ${N} sessions moved (about a third expected)`);
    for (const x of moved) assert.equal(x.target, 'local/st-c', `session ${session(x.i)} moved from ${was.get(x.i)} to ${x.target}`);
  });
});

// -------------------------------------------------------------- least_busy

test('least_busy: under concurrent load most requests go to the fast target, not the one 300 ms slower', async () => {
  const mocks = await startMocks(2);
  const slow = await startProxy(mocks[1], { delayMs: 300 });
  await withGateway({
    providers: [{ name: 'fast', base_url: mocks[0].base }, { name: 'slow', base_url: slow.base }],
    models: [{
      name: 'lb', routing: { strategy: 'least_busy' },
      targets: [{ provider: 'fast', model: 'lb' }, { provider: 'slow', model: 'lb' }],
    }],
  }, async (gw, key) => {
    const res = await load(gw.port, { n: 300, concurrency: 8, make: () => chatRequest(key, 'lb') });
    assert.deepEqual(failures(res), []);
    const seen = countTargets(res);
    assert.ok(share(seen, 'fast/lb', res.length) > 0.8, `fast/lb should get over 80%: ${JSON.stringify(seen)}`);
  }, [slow, ...mocks]);
});

test('least_busy: a worker killed in the middle of a request does not leave its target counted busy', async () => {
  const [mock] = await startMocks(1);
  const slow = await startProxy(mock);
  await withGateway({
    workers: 2,
    providers: [{ name: 'slow', base_url: slow.base }],
    models: [{
      name: 'lbk', routing: { strategy: 'least_busy', retries: 0 },
      targets: [{ provider: 'local', model: 'lbk' }, { provider: 'slow', model: 'lbk' }],
    }],
  }, async (gw, key) => {
    // One request hangs at the slow target (the others pass at once).
    slow.delayMs = 60000;
    const pending = [];
    await eventually(async () => {
      pending.push(gw.chat(key, { model: 'lbk' }).catch((err) => err));
      await sleep(100);
      return slow.hits === 1;
    }, { what: 'a request held at slow/lbk' });
    const busy = (await gw.ctlJson(['workers'])).filter((w) => w.state === 'busy');
    assert.equal(busy.length, 1, JSON.stringify(busy));
    process.kill(busy[0].pid, 'SIGKILL');
    await Promise.all(pending);
    await eventually(async () => !(await gw.ctlJson(['workers'])).some((w) => w.pid === busy[0].pid) &&
      gw.workerPids().length === 2, { what: 'the killed worker replaced' });

    // Both targets idle now: least_busy alternates between them.
    slow.delayMs = 0;
    const res = await serial(gw, key, 10, 'lbk');
    assert.ok(res.every((r) => r.status === 200), res.map((r) => r.text).join('\n'));
    const seen = countTargets(res);
    assert.ok((seen['slow/lbk'] ?? 0) >= 3,
      `slow/lbk has nothing in flight but got ${seen['slow/lbk'] ?? 0} of 10: ${JSON.stringify(seen)}`);
  }, [slow, mock]);
});

// ----------------------------------------------------------------- latency

// Two targets on mocks of their own, each behind a proxy whose delay the
// test sets: "a" is the model's first target, "b" its second.
async function latencySetup(delayA, delayB) {
  const mocks = await startMocks(2);
  const pa = await startProxy(mocks[0], { delayMs: delayA });
  const pb = await startProxy(mocks[1], { delayMs: delayB });
  const opts = {
    providers: [{ name: 'a', base_url: pa.base }, { name: 'b', base_url: pb.base }],
    models: [{
      name: 'lat', routing: { strategy: 'latency' },
      targets: [{ provider: 'a', model: 'lat' }, { provider: 'b', model: 'lat' }],
    }],
  };
  return { pa, pb, opts, cleanup: [pa, pb, ...mocks] };
}

test('latency: after warm-up over 80% go to the fast target; when it slows down the traffic moves to the other within a few requests', async () => {
  const { pa, pb, opts, cleanup } = await latencySetup(0, 60);
  await withGateway(opts, async (gw, key) => {
    // Warm-up: each target gets a figure.
    const warm = await serial(gw, key, 6, 'lat');
    assert.ok(warm.every((r) => r.status === 200));
    assert.ok(pb.hits >= 1, 'the warm-up measured b');

    const res = await load(gw.port, { n: 200, concurrency: 4, make: () => chatRequest(key, 'lat') });
    assert.deepEqual(failures(res), []);
    const seen = countTargets(res);
    assert.ok(share(seen, 'a/lat', res.length) > 0.8, `a/lat should get over 80%: ${JSON.stringify(seen)}`);

    // a becomes the slow one.
    pa.delayMs = 250;
    const next = await serial(gw, key, 30, 'lat');
    assert.ok(next.every((r) => r.status === 200));
    const firstB = next.findIndex((r) => r.target === 'b/lat');
    assert.ok(firstB >= 0 && firstB <= 5, `b/lat took over after ${firstB} requests: ${next.map((r) => r.target)}`);
    // From then on a gets only the exploration (1 request in 20).
    const tail = next.slice(firstB);
    const onA = tail.filter((r) => r.target === 'a/lat').length;
    assert.ok(onA <= Math.ceil(tail.length / 20) + 1, `after the move a/lat still got ${onA} of ${tail.length}`);
  }, cleanup);
});

test('latency: exploration measures a slow target again, so one that became fast wins the traffic back', async () => {
  // b (the second target) is slow at first, then fast; a stays at 40 ms.
  const { pa, pb, opts, cleanup } = await latencySetup(40, 200);
  await withGateway(opts, async (gw, key) => {
    const warm = await serial(gw, key, 4, 'lat');
    assert.ok(warm.every((r) => r.status === 200));
    assert.ok(pb.hits >= 1, 'the warm-up measured b');
    assert.ok(pa.hits >= 1, 'the warm-up measured a');

    pb.delayMs = 0;
    const hitsB = pb.hits;
    // 1 request in 20 explores: 400 requests give b some 20 new samples,
    // enough to bring its average from 200 ms under a's 40 ms.
    const res = await load(gw.port, { n: 400, concurrency: 8, make: () => chatRequest(key, 'lat') });
    assert.deepEqual(failures(res), []);
    assert.ok(pb.hits > hitsB, `b was never explored again: ${JSON.stringify(countTargets(res))}`);
    const last = res.slice(-100);
    const seen = countTargets(last);
    assert.ok(share(seen, 'b/lat', last.length) > 0.5,
      `the now fast b/lat should get most of the last 100 requests: ${JSON.stringify(seen)} (all: ${JSON.stringify(countTargets(res))})`);
  }, cleanup);
});

test('latency: a target that serves a retry is measured from its own attempt, not charged for the failed one before it', async () => {
  const [mock] = await startMocks(1);
  const [pa, pb, pc] = await Promise.all([0, 60, 150].map((delayMs) => startProxy(mock, { delayMs })));
  await withGateway({
    providers: [{ name: 'a', base_url: pa.base }, { name: 'b', base_url: pb.base }, { name: 'c', base_url: pc.base }],
    models: [{
      name: 'latr', routing: { strategy: 'latency', retries: 1, breaker: { failures: 1, cooldown: '30s' } },
      targets: ['a', 'b', 'c'].map((provider) => ({ provider, model: 'latr' })),
    }],
  }, async (gw, key) => {
    // Figures: a about 0 ms, b 60 ms, c 150 ms.
    const warm = await serial(gw, key, 6, 'latr');
    assert.ok(warm.every((r) => r.status === 200));
    assert.ok(pa.hits >= 1 && pb.hits >= 1 && pc.hits >= 1, 'the warm-up measured every target');

    // a fails after a second (and its breaker opens); b, the next fastest,
    // serves the retry in its usual 60 ms.
    Object.assign(pa, { delayMs: 1000, status: 500 });
    const [retried] = await serial(gw, key, 1, 'latr');
    assert.deepEqual([retried.status, retried.target, retried.attempts], [200, 'b/latr', 2]);

    // b still answers in 60 ms and c in 150 ms: b is still the fast one.
    const res = await serial(gw, key, 5, 'latr');
    const onB = res.filter((r) => r.target === 'b/latr').length;
    assert.ok(onB >= 4, `b/latr (60 ms) should keep the traffic, not c/latr (150 ms): ${res.map((r) => r.target)}`);
  }, [pa, pb, pc, mock]);
});

// ------------------------------------------------------------------- price

test('price: the cheapest target gets every request while healthy; killed, its requests fail over to the next cheapest without a client error', async () => {
  const mocks = await startMocks(2);
  const [cheapMock, otherMock] = mocks;
  await withGateway({
    providers: [{ name: 'cheap', base_url: cheapMock.base }, { name: 'other', base_url: otherMock.base }],
    models: [{
      name: 'pr', routing: { strategy: 'price', retries: 1, breaker: { failures: 3, cooldown: '30s' } },
      targets: [
        { provider: 'other', model: 'pr-mid', price: { input: 0.4, output: 1.2 } },
        { provider: 'cheap', model: 'pr-cheap', price: { input: 0.1, output: 0.3 } },
        { provider: 'other', model: 'pr-dear', price: { input: 2.5, output: 10 } },
      ],
    }],
  }, async (gw, key) => {
    const res = await load(gw.port, { n: 60, concurrency: 4, make: () => chatRequest(key, 'pr') });
    assert.deepEqual(failures(res), []);
    assert.deepEqual(countTargets(res), { 'cheap/pr-cheap': 60 });
    assert.ok(res.every((r) => r.attempts === 1));

    cheapMock.proc.kill('SIGKILL');
    await eventually(() => cheapMock.proc.exitCode !== null || cheapMock.proc.signalCode !== null, { what: 'the cheap mock is gone' });
    const next = await serial(gw, key, 12, 'pr');
    assert.deepEqual(next.filter((r) => r.status !== 200).map((r) => r.text), [], 'no client error');
    assert.ok(next.every((r) => r.target === 'other/pr-mid'), `the next cheapest serves: ${next.map((r) => r.target)}`);
    assert.ok(next.every((r) => r.model === 'pr-mid'));
    // Each of the first three tries the dead one first; then its breaker
    // is open and the requests go straight to the next.
    assert.deepEqual(next.map((r) => r.attempts), [2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  }, mocks);
});

// --------------------------------------------------------- key routing

test('keys: a key bound with --route price is routed by price on a weighted model; --route-header lets a key choose with x-aigw-route, other keys cannot', async () => {
  await withGateway({
    models: [{
      name: 'kr', routing: { strategy: 'weighted' },
      targets: [
        { provider: 'local', model: 'kr-dear', weight: 3, price: { input: 3, output: 15 } },
        { provider: 'local', model: 'kr-cheap', weight: 1, price: { input: 0.1, output: 0.4 } },
      ],
    }],
  }, async (gw, plain) => {
    const bound = (await gw.createKey({ route: 'price' })).key;
    const chooser = (await gw.createKey({ routeHeader: true })).key;
    const header = { headers: { 'x-aigw-route': 'price' } };
    const targets = async (key, opts) => {
      const res = await serial(gw, key, 12, 'kr', opts);
      assert.ok(res.every((r) => r.status === 200), res.map((r) => r.text).join('\n'));
      return countTargets(res);
    };

    assert.deepEqual(await targets(bound), { 'local/kr-cheap': 12 }, 'the key bound to price');
    assert.deepEqual(await targets(chooser, header), { 'local/kr-cheap': 12 }, 'x-aigw-route: price from a key that may choose');

    const weighted = { 'local/kr-dear': 9, 'local/kr-cheap': 3 };
    assert.deepEqual(await targets(chooser), weighted, 'without the header: the model\'s strategy');
    assert.deepEqual(await targets(plain, header), weighted, 'a key without --route-header: the header is ignored');
  });
});
