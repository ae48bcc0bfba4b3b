// routing-admin.test.mjs - the master's active health checks, and the
// admin commands of routing: aigwctl breaker list / reset and aigwctl
// endpoint test.
//
// Two upstreams serve the model "pair" (weighted, one each): the
// gateway's own mock ("local", not checked) and a second mock ("east",
// checked every second), which the health test stops and starts again on
// the same port.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import { eventually, freePort, sleep, startGateway, startMock, test } from './lib/harness.mjs';

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

before(async () => {
  ctx.east = await startMock();
  ctx.eastPort = ctx.east.port;
  ctx.locked = await startMock({ requireKey: 'sk-only-this-one' });
  ctx.hole = await startBlackhole();
  const deadPort = await freePort();
  ctx.gw = await startGateway({
    providers: [
      { name: 'east', base_url: ctx.east.base, health: { interval: '1s', timeout: '500ms', path: '/models' } },
      { name: 'dead', base_url: `http://127.0.0.1:${deadPort}/v1` },
      { name: 'locked', base_url: ctx.locked.base },
      { name: 'hole', base_url: `http://127.0.0.1:${ctx.hole.port}/v1` },
    ],
    models: [
      {
        name: 'pair',
        routing: { strategy: 'weighted', retries: 1, breaker: { failures: 3, cooldown: '2s' } },
        targets: [{ provider: 'local', model: 'mock-small', weight: 1 }, { provider: 'east', model: 'mock-small', weight: 1 }],
      },
      {
        name: 'brk',
        routing: { retries: 0, breaker: { failures: 3, cooldown: '30s' } },
        targets: [{ provider: 'local', model: 'brk-model' }],
      },
      {
        name: 'ep',
        targets: [{ provider: 'local', model: 'mock-small' }, { provider: 'dead', model: 'mock-small' },
          { provider: 'locked', model: 'mock-small' }],
      },
      {
        name: 'slow',
        timeouts: { connect: '1s', total: '2s' },
        targets: [{ provider: 'hole', model: 'mock-small' }],
      },
    ],
  });
  ctx.key = (await ctx.gw.createKey()).key;
});

after(async () => {
  if (ctx.gw) await ctx.gw.stop();
  for (const m of [ctx.east, ctx.locked]) if (m) await m.stop();
  if (ctx.hole) await ctx.hole.close();
});

async function breakers() {
  return ctx.gw.ctlJson(['breaker', 'list']);
}

async function row(target, model) {
  const list = await breakers();
  const r = list.find((t) => t.target === target && t.model === model);
  assert.ok(r, `no ${target} of ${model} in ${JSON.stringify(list)}`);
  return r;
}

// Targets that served n requests to model, as {target: count}.
async function split(model, n) {
  const seen = {};
  for (let i = 0; i < n; i++) {
    const res = await ctx.gw.chat(ctx.key, { model });
    assert.equal(res.status, 200, res.text);
    const t = res.headers['x-aigw-target'];
    seen[t] = (seen[t] ?? 0) + 1;
  }
  return seen;
}

const countOf = (text, re) => (text.match(new RegExp(re.source, 'g')) ?? []).length;

test('weighted routing uses both healthy targets of a model', async () => {
  const seen = await split('pair', 10);
  assert.ok(seen['local/mock-small'] >= 3, JSON.stringify(seen));
  assert.ok(seen['east/mock-small'] >= 3, JSON.stringify(seen));
  assert.equal((await row('east/mock-small', 'pair')).health, 'up');
  assert.equal((await row('local/mock-small', 'pair')).health, 'unchecked');
});

test('a failing health check marks the provider down; traffic goes to the other target until it is up again', async () => {
  const { gw } = ctx;
  const from = gw.log().length;
  await ctx.east.stop();
  await eventually(async () => (await row('east/mock-small', 'pair')).health === 'down',
    { timeoutMs: 4000, what: 'east marked down' });
  await gw.waitLog(/warn master: provider east is down: GET http:\/\/127\.0\.0\.1:\d+\/v1\/models: /, { from });

  // Every request goes to local at the first attempt: east is not tried.
  for (let i = 0; i < 8; i++) {
    const res = await gw.chat(ctx.key, { model: 'pair' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers['x-aigw-target'], 'local/mock-small');
    assert.equal(res.headers['x-aigw-attempts'], '1');
  }
  // Only the change is logged, not every failed check.
  await sleep(2200);
  assert.equal(countOf(gw.log().slice(from), /provider east is down/), 1, gw.log().slice(from));
  assert.equal((await row('local/mock-small', 'pair')).health, 'unchecked', 'local is never marked down');

  ctx.east = await startMock({ port: ctx.eastPort });
  await eventually(async () => (await row('east/mock-small', 'pair')).health === 'up',
    { timeoutMs: 4000, what: 'east marked up again' });
  await gw.waitLog(/info master: provider east is up again/, { from });
  const seen = await split('pair', 10);
  assert.ok(seen['east/mock-small'] >= 3, JSON.stringify(seen));
  assert.ok(seen['local/mock-small'] >= 3, JSON.stringify(seen));
});

test('a reload that removes a check marks the provider up; one that adds it checks it again', async () => {
  const { gw, key } = ctx;
  const withHealth = gw.cfg.providers;
  const noHealth = withHealth.map((p) => (p.name === 'east' ? { name: 'east', base_url: p.base_url } : p));
  const from = gw.log().length;
  await ctx.east.stop();
  try {
    await eventually(async () => (await row('east/mock-small', 'pair')).health === 'down',
      { timeoutMs: 4000, what: 'east marked down' });

    gw.rewriteConfig({ providers: noHealth });
    assert.equal((await gw.ctl(['reload'])).code, 0);
    assert.equal((await row('east/mock-small', 'pair')).health, 'unchecked');
    // No longer held down: requests try east again, fail and go on to local.
    let retried = 0;
    for (let i = 0; i < 4; i++) {
      const res = await gw.chat(key, { model: 'pair' });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['x-aigw-target'], 'local/mock-small');
      if (res.headers['x-aigw-attempts'] === '2') retried++;
    }
    assert.ok(retried >= 1, 'east was tried again');

    gw.rewriteConfig({ providers: withHealth });
    const reloaded = gw.log().length;
    assert.equal((await gw.ctl(['reload'])).code, 0);
    await eventually(async () => (await row('east/mock-small', 'pair')).health === 'down',
      { timeoutMs: 4000, what: 'east checked (and down) again' });
    await gw.waitLog(/provider east is down/, { from: reloaded });
  } finally {
    ctx.east = await startMock({ port: ctx.eastPort });
  }
  await eventually(async () => (await row('east/mock-small', 'pair')).health === 'up',
    { timeoutMs: 4000, what: 'east up again' });
  assert.equal((await gw.ctl(['breaker', 'reset', 'all'])).code, 0);
});

test('breaker list shows every target of every model with its figures', async () => {
  const list = await breakers();
  const targets = list.map((t) => `${t.model}:${t.target}`);
  for (const t of ['demo:local/mock-small', 'pair:local/mock-small', 'pair:east/mock-small',
    'brk:local/brk-model', 'ep:dead/mock-small', 'slow:hole/mock-small']) {
    assert.ok(targets.includes(t), `${t} in ${targets}`);
  }
  for (const t of list) {
    for (const f of ['target', 'model', 'state', 'consecutive_failures', 'failures', 'opened', 'error_rate',
      'window_requests', 'window_failures', 'retry_in_s', 'health', 'in_flight', 'ttft_ms', 'tokens_per_s']) {
      assert.ok(f in t, `"${f}" in ${JSON.stringify(t)}`);
    }
    assert.ok(['closed', 'open', 'half-open'].includes(t.state), t.state);
    assert.ok(['up', 'down', 'unchecked'].includes(t.health), t.health);
  }
  const local = await row('local/mock-small', 'pair');
  assert.equal(local.state, 'closed');
  assert.ok(local.ttft_ms > 0, `a latency figure after traffic: ${JSON.stringify(local)}`);

  const r = await ctx.gw.ctl(['breaker', 'list']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^TARGET\s+MODEL\s+STATE\s+FAILS\s+TOTAL\s+OPENED\s+WINDOW\s+RETRY_IN\s+HEALTH\s+IN_FLIGHT\s+TTFT_MS\s+TOK\/S$/);
  assert.equal(lines.length, list.length + 1);
  assert.ok(lines.some((l) => /^east\/mock-small\s+pair\s+closed\s+\d+\s+\d+\s+\d+\s+-\s+-\s+up\s/.test(l)), r.stdout);
});

test('the breaker opens after routing.breaker.failures consecutive failures; breaker reset closes it', async () => {
  const { gw, key } = ctx;
  for (let i = 0; i < 3; i++) {
    const res = await gw.chat(key, { model: 'brk' }, { 'x-mock-status': '500' });
    assert.equal(res.status, 502, res.text);
  }
  const open = await row('local/brk-model', 'brk');
  assert.equal(open.state, 'open');
  assert.equal(open.consecutive_failures, 3);
  assert.ok(open.failures >= 3);
  assert.equal(open.opened, 1);
  assert.ok(open.retry_in_s > 25 && open.retry_in_s <= 30, JSON.stringify(open));
  await gw.waitLog(/breaker of local\/brk-model opened/);

  // Open: no request reaches the upstream, even a good one.
  const refused = await gw.chat(key, { model: 'brk' });
  assert.equal(refused.status, 503, refused.text);
  assert.match((await gw.ctl(['breaker', 'list'])).stdout, /local\/brk-model\s+brk\s+open\s+3\s/);

  const r = await gw.ctl(['breaker', 'reset', 'local/brk-model']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /breaker of local\/brk-model closed/);
  const closed = await row('local/brk-model', 'brk');
  assert.equal(closed.state, 'closed');
  assert.equal(closed.consecutive_failures, 0);
  assert.equal(closed.retry_in_s, 0);
  assert.equal(closed.opened, 1, 'the count of openings stays');
  assert.equal((await gw.chat(key, { model: 'brk' })).status, 200);
});

test('breaker reset: an unknown target fails with exit 1; all resets every target', async () => {
  const { gw } = ctx;
  const r = await gw.ctl(['breaker', 'reset', 'nowhere/nothing']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no target "nowhere\/nothing"/);
  assert.equal((await gw.ctl(['breaker', 'reset'])).code, 2, 'no target given: usage error');

  const all = await gw.ctlJson(['breaker', 'reset', 'all']);
  assert.ok(Array.isArray(all));
  for (const t of ['local/mock-small', 'east/mock-small', 'local/brk-model', 'dead/mock-small']) {
    assert.ok(all.includes(t), `${t} in ${all}`);
  }
  assert.equal(new Set(all).size, all.length, 'a target of several models is reset once');
});

test('endpoint test: 200 for a healthy target, the error of a dead one or of an upstream refusal, exit 1', async () => {
  const { gw } = ctx;
  const r = await gw.ctl(['endpoint', 'test', 'ep', '--json']);
  assert.equal(r.code, 1, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.model, 'ep');
  assert.equal(out.passed, false);
  const by = Object.fromEntries(out.targets.map((t) => [t.target, t]));
  assert.deepEqual(Object.keys(by).sort(), ['dead/mock-small', 'local/mock-small', 'locked/mock-small']);

  assert.equal(by['local/mock-small'].status, 200);
  assert.equal(by['local/mock-small'].ok, true);
  assert.equal(by['local/mock-small'].error, null);
  assert.equal(typeof by['local/mock-small'].latency_ms, 'number');

  assert.equal(by['dead/mock-small'].status, 0);
  assert.equal(by['dead/mock-small'].ok, false);
  assert.match(by['dead/mock-small'].error, /connect/i);

  // The upstream's own error message, from its OpenAI-shaped answer.
  assert.equal(by['locked/mock-small'].status, 401);
  assert.equal(by['locked/mock-small'].error, 'Incorrect API key provided.');
});

test('endpoint test --target tests one target; prints a table; exit 0 when it answered 2xx', async () => {
  const { gw } = ctx;
  const r = await gw.ctl(['endpoint', 'test', 'ep', '--target', 'local/mock-small']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^TARGET\s+STATUS\s+LATENCY_MS\s+ERROR$/);
  assert.equal(lines.length, 2);
  assert.match(lines[1], /^local\/mock-small\s+200\s+\d+\.\d\s+-$/);

  const dead = await gw.ctl(['endpoint', 'test', 'ep', '--target', 'dead/mock-small']);
  assert.equal(dead.code, 1);
  assert.match(dead.stdout, /^dead\/mock-small\s+0\s+\d+\.\d\s+.*connect/im);

  const unknown = await gw.ctl(['endpoint', 'test', 'ep', '--target', 'east/mock-small']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /has no target "east\/mock-small"/);
  const nomodel = await gw.ctl(['endpoint', 'test', 'no-such-model']);
  assert.equal(nomodel.code, 1);
  assert.match(nomodel.stderr, /unknown model "no-such-model"/);
  assert.equal((await gw.ctl(['endpoint', 'test'])).code, 2);
});

test('endpoint test of a hanging upstream ends at the timeout while the master keeps serving', async () => {
  const { gw } = ctx;
  const t0 = Date.now();
  const pending = gw.ctl(['endpoint', 'test', 'slow', '--json']);
  await sleep(300);
  // The calls run in a child of the master: it answers meanwhile.
  const s0 = Date.now();
  const st = await gw.status();
  assert.ok(Date.now() - s0 < 1000, 'status answered at once');
  assert.equal(st.pid, gw.pid);
  const r = await pending;
  const took = Date.now() - t0;
  assert.equal(r.code, 1, r.stderr);
  const [t] = JSON.parse(r.stdout).targets;
  assert.equal(t.target, 'hole/mock-small');
  assert.equal(t.status, 0);
  assert.match(t.error, /timed? ?out/i);
  assert.ok(t.latency_ms >= 1800 && t.latency_ms < 4000, JSON.stringify(t));
  assert.ok(took < 6000, `took ${took} ms`);
});
