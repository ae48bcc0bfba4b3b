// breaker-rate.test.mjs - the circuit breaker's error-rate rule
// (routing.breaker.error_rate, window, min_requests): a target that fails
// often but never many times in a row is taken out of the rotation once
// enough of the attempts in one window failed; without error_rate only
// failures in a row count; failures of a window that has passed are not
// held against the target.
//
// Each model has a flaky target in front of a proxy (lib/proxy.mjs) whose
// injected status is set before each request by a pattern of failures and
// successes, and a healthy one.  Strategy price sends every request to the
// flaky (cheaper) target first while its breaker lets it, and retries a
// failure on the healthy one, so the client always gets an answer and the
// flaky target sees exactly the attempts the pattern says.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import { sleep, startGateway, startMock, test } from './lib/harness.mjs';
import { startProxy } from './lib/proxy.mjs';

const ctx = {};

// 60% failures, never more than two in a row.
const PATTERN = 'FFOFO';

before(async () => {
  ctx.mock = await startMock();
  ctx.rate = await startProxy(ctx.mock);
  ctx.norate = await startProxy(ctx.mock);
  ctx.win = await startProxy(ctx.mock);
  const model = (name, provider, breaker) => ({
    name,
    routing: { strategy: 'price', retries: 1, breaker },
    targets: [
      { provider, model: `${name}-flaky`, price: { input: 0.1, output: 0.1 } },
      { provider: 'local', model: `${name}-ok`, price: { input: 1, output: 1 } },
    ],
  });
  ctx.gw = await startGateway({
    mock: ctx.mock,
    providers: [
      { name: 'rate', base_url: ctx.rate.base },
      { name: 'norate', base_url: ctx.norate.base },
      { name: 'win', base_url: ctx.win.base },
    ],
    models: [
      model('rate', 'rate', { failures: 5, error_rate: 0.5, window: '10s', min_requests: 10, cooldown: '2s' }),
      model('norate', 'norate', { failures: 5, error_rate: 0, window: '10s', min_requests: 10, cooldown: '2s' }),
      model('win', 'win', { failures: 5, error_rate: 0.5, window: '1s', min_requests: 4, cooldown: '2s' }),
    ],
  });
  ctx.key = (await ctx.gw.createKey()).key;
});

after(async () => {
  if (ctx.gw) await ctx.gw.stop();
  for (const p of [ctx.rate, ctx.norate, ctx.win]) if (p) await p.close();
  if (ctx.mock) await ctx.mock.stop();
});

// One request to model, the flaky target's proxy first set to fail it or
// not by the next letter of pattern (F: 500, O: pass it on); the answer
// must be a 200, from either target.
async function chat(model, proxy, pattern) {
  if (pattern) proxy.status = pattern[proxy.hits % pattern.length] === 'F' ? 500 : 0;
  const res = await ctx.gw.chat(ctx.key, { model });
  assert.equal(res.status, 200, res.text);
  return { target: res.headers['x-aigw-target'], attempts: Number(res.headers['x-aigw-attempts']) };
}

async function series(n, model, proxy, pattern) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await chat(model, proxy, pattern));
  return out;
}

async function row(target) {
  const list = await ctx.gw.ctlJson(['breaker', 'list']);
  const r = list.find((t) => t.target === target);
  assert.ok(r, `no ${target} in ${JSON.stringify(list)}`);
  return r;
}

test('an error rate over the window opens the breaker though failures never come five in a row', async () => {
  const { gw } = ctx;
  const from = gw.log().length;
  const res = await series(30, 'rate', ctx.rate, PATTERN);

  // Attempt 11 (the 7th failure, 64%) is the first failure with at least
  // min_requests (10) attempts in the window: it opens the breaker.
  assert.equal(ctx.rate.hits, 11, `the flaky target got no attempt once open: ${JSON.stringify(res)}`);
  assert.ok(res.slice(11).every((r) => r.target === 'local/rate-ok' && r.attempts === 1),
    `then only the healthy target serves: ${JSON.stringify(res.slice(11))}`);
  await gw.waitLog(/breaker of rate\/rate-flaky opened for 2000 ms: error rate 64% over the last window \(7 of 11 attempts failed\)/, { from });
  assert.doesNotMatch(gw.log().slice(from), /too many consecutive failures/);

  const r = await row('rate/rate-flaky');
  assert.equal(r.state, 'open', JSON.stringify(r));
  assert.equal(r.opened, 1);
  assert.equal(r.error_rate, 0.5);
  assert.equal(r.window_requests, 11);
  assert.equal(r.window_failures, 7);
  assert.ok(r.consecutive_failures < 5, JSON.stringify(r));

  const text = await gw.ctl(['breaker', 'list']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^TARGET\s+MODEL\s+STATE\s+FAILS\s+TOTAL\s+OPENED\s+WINDOW\s+RETRY_IN\s/);
  assert.match(text.stdout, /\nrate\/rate-flaky\s+rate\s+open\s+\d+\s+7\s+1\s+7\/11\s+\d+\.\ds\s/);
  assert.match(text.stdout, /\nnorate\/norate-flaky\s+norate\s+closed\s+0\s+0\s+0\s+-\s+-\s/, 'no window without error_rate');
});

test('after the cooldown a probe that succeeds closes the breaker and starts a fresh window', async () => {
  const { gw } = ctx;
  const from = gw.log().length;
  ctx.rate.status = 0;
  await sleep(2100);
  const res = await series(3, 'rate', ctx.rate);
  assert.ok(res.every((r) => r.target === 'rate/rate-flaky' && r.attempts === 1), JSON.stringify(res));
  await gw.waitLog(/breaker of rate\/rate-flaky closed: the probe succeeded/, { from });
  const r = await row('rate/rate-flaky');
  assert.equal(r.state, 'closed', JSON.stringify(r));
  assert.equal(r.window_requests, 3, `the probe and the two after it: ${JSON.stringify(r)}`);
  assert.equal(r.window_failures, 0);
});

test('with error_rate 0 only failures in a row open the breaker', async () => {
  const { gw } = ctx;
  const from = gw.log().length;
  const res = await series(30, 'norate', ctx.norate, PATTERN);
  assert.equal(ctx.norate.hits, 30, 'every request tried the flaky target first');
  assert.equal(res.filter((r) => r.attempts === 2).length, 18, 'its 18 failures were retried');
  const r = await row('norate/norate-flaky');
  assert.equal(r.state, 'closed', JSON.stringify(r));
  assert.equal(r.opened, 0);
  assert.equal(r.failures, 18);
  assert.equal(r.window_requests, 0, 'no window is kept');
  assert.doesNotMatch(gw.log().slice(from), /breaker of norate\//);
});

test('failures of a window that has passed do not count in the next', async () => {
  // Window 1s, min_requests 4.  Three failures, then, in a new window,
  // O O F O F: 2 of 5 failed (40%).  Counted together, 5 of 8 (62%)
  // would have opened the breaker.
  await series(3, 'win', ctx.win, 'F');
  let r = await row('win/win-flaky');
  assert.equal(r.window_requests, 3);
  assert.equal(r.window_failures, 3);
  await sleep(1100);
  await series(5, 'win', ctx.win, 'FFFOOFOF');
  assert.equal(ctx.win.hits, 8);
  r = await row('win/win-flaky');
  assert.equal(r.state, 'closed', JSON.stringify(r));
  assert.equal(r.opened, 0);
  assert.equal(r.window_requests, 5, JSON.stringify(r));
  assert.equal(r.window_failures, 2);
});
