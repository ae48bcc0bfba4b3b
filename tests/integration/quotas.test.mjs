// quotas.test.mjs - token and call quotas of tenants, users, keys and
// models: aigwctl quota set / show / clear; 429 insufficient_quota naming
// the quota; the smallest remaining quota applies; call quotas exact under
// concurrency; token overshoot bounded by the requests in flight; a quota
// set mid-period counts the usage so far; counters survive a restart; the
// alert threshold logs and calls the webhook once per period.  Also the
// RPM limits of users and tenants, which share the same scopes.

import assert from 'node:assert/strict';
import http from 'node:http';

import { assertError, eventually, startGateway, startMock, test, useGateway } from './lib/harness.mjs';

// The mock's answer to gw.chat: "hello there" is 2 prompt tokens, and 5
// completion tokens unless x-mock-chunks says otherwise.
const TOKENS_PER_CALL = 7;

const hook = { received: [], server: null, url: null };

const ctx = useGateway({ workers: 4 });

const uniq = (p) => `${p}-${Math.random().toString(36).slice(2, 8)}`;

async function ok(gw, args) {
  const r = await gw.ctl(args);
  assert.equal(r.code, 0, `aigwctl ${args.join(' ')}: ${r.stderr}`);
  return r;
}

// A tenant, a user in it granted endpoint-user on demo and other, and
// `keys` keys owned by that user.
async function team(gw, keys = 1) {
  const tenant = uniq('t');
  const user = uniq('u');
  await ok(gw, ['tenant', 'add', tenant]);
  await ok(gw, ['user', 'add', user, '--tenant', tenant]);
  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'demo']);
  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'other']);
  const out = { tenant, user, keys: [] };
  for (let i = 0; i < keys; i++) {
    out.keys.push(await gw.ctlJson(['key', 'create', '--name', uniq('k'), '--user', user]));
  }
  return out;
}

async function quotaOf(gw, args) {
  const r = await gw.ctlJson(['quota', 'show', ...args]);
  assert.equal(r.quotas.length >= 1, true, `no quota for ${args.join(' ')}`);
  return r.quotas[0];
}

test('quota set, show and clear; bad arguments are refused with a reason', async () => {
  const { gw } = ctx;
  const t = await team(gw);
  const set = await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--tokens', '1000', '--period', 'day', '--alert-at', '80%']);
  assert.equal(set.quota.scope, `tenant:${t.tenant}`);
  assert.equal(set.quota.period, 'day');
  assert.deepEqual(set.quota.tokens, { limit: 1000, used: 0, remaining: 1000 });
  assert.equal(set.quota.alert_at, 80);
  assert.equal(set.quota.calls, undefined);
  const now = Date.now() / 1000;
  assert.ok(set.quota.resets > now && set.quota.resets <= now + 86400, `resets ${set.quota.resets}`);
  assert.equal(set.quota.resets % 86400, 0, 'a day ends at UTC midnight');

  // A second set of the same scope and period keeps what it does not give.
  const again = await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--calls', '50', '--period', 'day']);
  assert.equal(again.quota.tokens.limit, 1000);
  assert.equal(again.quota.calls.limit, 50);
  assert.equal(again.quota.alert_at, 80);
  // Month is the default period, and a separate quota.
  await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--tokens', '5000']);
  const shown = await gw.ctlJson(['quota', 'show', '--tenant', t.tenant]);
  assert.deepEqual(shown.quotas.map((q) => q.period).sort(), ['day', 'month']);
  const text = await ok(gw, ['quota', 'show', '--tenant', t.tenant]);
  assert.match(text.stdout, new RegExp(`tenant:${t.tenant}\\s+day\\s+tokens 0/1000\\s+calls 0/50\\s+alert 80%`));

  for (const [args, re] of [
    [['quota', 'set', '--tokens', '5'], /name one scope/],
    [['quota', 'set', '--tenant', t.tenant, '--user', t.user, '--tokens', '5'], /one scope only/],
    [['quota', 'set', '--tenant', uniq('ghost'), '--tokens', '5'], /no tenant/],
    [['quota', 'set', '--model', 'nope', '--tokens', '5'], /no model named "nope"/],
    [['quota', 'set', '--tenant', t.tenant, '--tokens', '5', '--period', 'week'], /expected day, month or total/],
    [['quota', 'set', '--tenant', t.tenant, '--alert-at', '0'], /percentage from 1 to 100/],
    [['quota', 'set', '--key', t.keys[0].id], /give --tokens N, --calls N or both/],
  ]) {
    const r = await gw.ctl(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, re);
  }
  const r = await gw.ctl(['quota', 'set', '--tenant', t.tenant, '--tokens', 'lots']);
  assert.equal(r.code, 2, 'a malformed number is a usage error');

  await ok(gw, ['quota', 'clear', '--tenant', t.tenant, '--period', 'day']);
  assert.deepEqual((await gw.ctlJson(['quota', 'show', '--tenant', t.tenant])).quotas.map((q) => q.period), ['month']);
  await ok(gw, ['quota', 'clear', '--tenant', t.tenant]);
  assert.deepEqual((await gw.ctlJson(['quota', 'show', '--tenant', t.tenant])).quotas, []);
  const gone = await gw.ctl(['quota', 'clear', '--tenant', t.tenant]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /has no quota/);
  // Changes are in the audit log.
  const audit = await gw.ctlJson(['audit', '--limit', '20']);
  assert.ok(audit.some((e) => e.command === 'quota.set' && e.args.tenant === t.tenant));
  assert.ok(audit.some((e) => e.command === 'quota.clear' && e.args.tenant === t.tenant));
});

test('a call quota admits exactly its calls, then 429 insufficient_quota naming it', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  await gw.ctlJson(['quota', 'set', '--key', k.id, '--calls', '20', '--period', 'day']);
  // 40 at once: exactly 20 pass, whatever the interleaving of the workers.
  const res = await Promise.all(Array.from({ length: 40 }, () => gw.chat(k.key, {})));
  const passed = res.filter((r) => r.status === 200);
  assert.equal(passed.length, 20, `statuses ${res.map((r) => r.status)}`);
  const remaining = passed.map((r) => Number(r.headers['x-aigw-quota-remaining-calls'])).sort((a, b) => a - b);
  assert.deepEqual(remaining, Array.from({ length: 20 }, (_, i) => i), 'each admitted call saw what it left');
  const refused = res.filter((r) => r.status !== 200);
  assert.equal(refused.length, 20);
  const err = assertError(assert, refused[0], 429, 'insufficient_quota', { type: 'insufficient_quota' });
  assert.match(err.message, new RegExp(`key ${k.id}'s daily call quota \\(20 calls\\) is used up`));
  assert.match(err.message, /renews at \d{4}-\d\d-\d\dT00:00:00Z/);
  const retry = Number(refused[0].headers['retry-after']);
  assert.ok(retry >= 1 && retry <= 86400, `Retry-After ${retry}`);
  const q = await quotaOf(gw, ['--key', k.id]);
  assert.deepEqual(q.calls, { limit: 20, used: 20, remaining: 0 });
  assert.equal(q.tokens, undefined);
  // Raising it lets calls through again, at once.
  await gw.ctlJson(['quota', 'set', '--key', k.id, '--calls', '21', '--period', 'day']);
  assert.equal((await gw.chat(k.key, {})).status, 200);
  assert.equal((await gw.chat(k.key, {})).status, 429);
});

test('failed calls are given back; their tokens are not counted', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  await gw.ctlJson(['quota', 'set', '--key', k.id, '--calls', '2', '--tokens', '1000', '--period', 'day']);
  for (let i = 0; i < 4; i++) assert.equal((await gw.chat(k.key, {}, { 'x-mock-status': '500' })).status, 502);
  let q = await quotaOf(gw, ['--key', k.id]);
  assert.equal(q.calls.used, 0);
  assert.equal(q.tokens.used, 0);
  assert.equal((await gw.chat(k.key, {})).status, 200);
  assert.equal((await gw.chat(k.key, {})).status, 200);
  q = await quotaOf(gw, ['--key', k.id]);
  assert.equal(q.calls.used, 2);
  assert.equal(q.tokens.used, 2 * TOKENS_PER_CALL);
});

test('the smallest remaining quota applies: tenant 500k left before model 1M', async () => {
  const { gw } = ctx;
  const t = await team(gw);
  const key = t.keys[0].key;
  await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--tokens', '500000', '--period', 'month']);
  await gw.ctlJson(['quota', 'set', '--model', 'other', '--tokens', '1000000', '--period', 'total']);
  try {
    let r = await gw.chat(key, { model: 'other' });
    assert.equal(r.status, 200);
    // Checked before the call: what was left when it was admitted.
    assert.equal(r.headers['x-aigw-quota-remaining-tokens'], '500000');
    r = await gw.chat(key, { model: 'other' });
    assert.equal(r.headers['x-aigw-quota-remaining-tokens'], String(500000 - TOKENS_PER_CALL));
    // The tenant's quota raised above the model's: now the model's applies.
    await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--tokens', '5000000', '--period', 'month']);
    r = await gw.chat(key, { model: 'other' });
    const modelUsed = (await quotaOf(gw, ['--model', 'other'])).tokens.used;
    assert.ok(modelUsed >= 3 * TOKENS_PER_CALL);
    assert.equal(Number(r.headers['x-aigw-quota-remaining-tokens']), 1000000 - (modelUsed - TOKENS_PER_CALL));
    // A quota of another model does not apply to demo.
    r = await gw.chat(key, { model: 'demo' });
    assert.equal(r.headers['x-aigw-quota-remaining-tokens'], String(5000000 - 3 * TOKENS_PER_CALL));
  } finally {
    await ok(gw, ['quota', 'clear', '--model', 'other']);
  }
});

test('a token quota runs out mid-load: the overshoot is bounded by the requests in flight', async () => {
  const { gw } = ctx;
  const t = await team(gw, 2);
  const limit = 100;
  const parallel = 8;
  await gw.ctlJson(['quota', 'set', '--user', t.user, '--tokens', String(limit), '--period', 'day']);
  let admitted = 0;
  let refusedCount = 0;
  for (let wave = 0; wave < 6; wave++) {
    const res = await Promise.all(Array.from({ length: parallel }, (_, i) => gw.chat(t.keys[i % 2].key, {})));
    for (const r of res) {
      if (r.status === 200) admitted++;
      else {
        assertError(assert, r, 429, 'insufficient_quota');
        assert.match(r.json().error.message, new RegExp(`user ${t.user}'s daily token quota \\(100 tokens\\)`));
        refusedCount++;
      }
    }
  }
  const used = (await quotaOf(gw, ['--user', t.user])).tokens.used;
  assert.equal(used, admitted * TOKENS_PER_CALL, 'every admitted call counted, nothing else');
  assert.ok(used >= limit, `the quota was reached (${used})`);
  assert.ok(used < limit + parallel * TOKENS_PER_CALL, `overshoot ${used - limit} tokens is more than ${parallel} requests in flight`);
  assert.ok(refusedCount > 0);
  // Both keys of the user are refused now; a key of another user is not.
  for (const k of t.keys) assert.equal((await gw.chat(k.key, {})).status, 429);
  const other = await gw.createKey();
  assert.equal((await gw.chat(other.key, {})).status, 200);
});

test('streams count their tokens into the quota once', async () => {
  const { gw } = ctx;
  const k = await gw.createKey();
  await gw.ctlJson(['quota', 'set', '--key', k.id, '--tokens', '1000', '--period', 'day']);
  const r = await gw.chat(k.key, { stream: true }, { 'x-mock-chunks': '12' });
  assert.equal(r.status, 200);
  assert.match(r.body.toString(), /\[DONE\]/);
  const q = await quotaOf(gw, ['--key', k.id]);
  assert.equal(q.tokens.used, 2 + 12);
});

test('a quota set mid-period counts the usage already recorded in it', async () => {
  const { gw } = ctx;
  const t = await team(gw);
  for (let i = 0; i < 3; i++) assert.equal((await gw.chat(t.keys[0].key, {})).status, 200);
  const set = await gw.ctlJson(['quota', 'set', '--tenant', t.tenant, '--calls', '5', '--period', 'month']);
  assert.equal(set.quota.calls.used, 3);
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await gw.chat(t.keys[0].key, {})).status);
  assert.deepEqual(statuses, [200, 200, 429, 429]);
});

test('the counters survive a restart of aigwd (counted again from the stored usage)', async () => {
  const mock = await startMock();
  const gw = await startGateway({ workers: 2, mock });
  let gw2;
  try {
    const k = await gw.createKey();
    await gw.ctlJson(['quota', 'set', '--key', k.id, '--calls', '4', '--tokens', '1000', '--period', 'total']);
    for (let i = 0; i < 3; i++) assert.equal((await gw.chat(k.key, {})).status, 200);
    await gw.stop({ keepDir: true });
    gw2 = await startGateway({ workers: 2, dir: gw.dir, mock });
    const q = await quotaOf(gw2, ['--key', k.id]);
    assert.deepEqual(q.calls, { limit: 4, used: 3, remaining: 1 });
    assert.equal(q.tokens.used, 3 * TOKENS_PER_CALL);
    assert.equal(q.resets, null, 'a total quota never renews');
    assert.equal((await gw2.chat(k.key, {})).status, 200);
    const r = await gw2.chat(k.key, {});
    assertError(assert, r, 429, 'insufficient_quota');
    assert.match(r.json().error.message, /total call quota \(4 calls\) is used up\. It does not renew/);
    assert.equal(r.headers['retry-after'], undefined);
  } finally {
    if (gw2) await gw2.stop();
    await mock.stop();
  }
});

test('crossing --alert-at logs and calls the webhook once per period', async () => {
  hook.server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      hook.received.push({ method: req.method, type: req.headers['content-type'], body: JSON.parse(body) });
      res.end('ok');
    });
  });
  await new Promise((r) => hook.server.listen(0, '127.0.0.1', r));
  hook.url = `http://127.0.0.1:${hook.server.address().port}/hook`;
  const gw = await startGateway({ workers: 2, quotas: { webhook: hook.url, webhook_timeout: '2s' } });
  try {
    const k = await gw.createKey();
    await gw.ctlJson(['quota', 'set', '--key', k.id, '--calls', '4', '--period', 'day', '--alert-at', '50%']);
    assert.equal((await gw.chat(k.key, {})).status, 200);
    // 25%: no alert yet.  Then 50%, 75%, 100%: one alert.
    for (let i = 0; i < 4; i++) await gw.chat(k.key, {});
    await eventually(() => hook.received.length >= 1, { what: 'the webhook call' });
    await gw.waitLog(new RegExp(`quota key:${k.id}\\|day at \\d+% \\(alert at 50%\\)`));
    await new Promise((r) => setTimeout(r, 2500)); // two more alert ticks
    assert.equal(hook.received.length, 1, 'once per period');
    const h = hook.received[0];
    assert.equal(h.method, 'POST');
    assert.equal(h.type, 'application/json');
    assert.equal(h.body.event, 'quota.threshold');
    assert.equal(h.body.scope, `key:${k.id}`);
    assert.equal(h.body.period, 'day');
    assert.equal(h.body.alert_at, 50);
    assert.ok(h.body.percent >= 50);
    assert.equal(h.body.calls.limit, 4);
    // Remembered with the quota: a restart does not alert again.
    const stored = await quotaOf(gw, ['--key', k.id]);
    assert.equal(stored.alert_at, 50);
  } finally {
    await gw.stop();
    hook.server.close();
  }
});

test('a user RPM limit is shared by all the user\'s keys; a tenant\'s by all its users', async () => {
  const { gw } = ctx;
  const t = await team(gw, 2);
  await gw.ctlJson(['limit', 'set', '--user', t.user, '--rpm', '3']);
  const statuses = [];
  for (let i = 0; i < 5; i++) statuses.push((await gw.chat(t.keys[i % 2].key, {})).status);
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  const r = await gw.chat(t.keys[0].key, {});
  assert.match(r.json().error.message, new RegExp(`Rate limit reached for user ${t.user}: 3 requests per minute`));

  const user2 = uniq('u');
  await ok(gw, ['user', 'add', user2, '--tenant', t.tenant]);
  await ok(gw, ['grant', user2, 'endpoint-user', '--model', 'demo']);
  const k2 = await gw.ctlJson(['key', 'create', '--name', uniq('k'), '--user', user2]);
  await gw.ctlJson(['limit', 'set', '--tenant', t.tenant, '--rpm', '2']);
  const tenantStatuses = [];
  for (let i = 0; i < 3; i++) tenantStatuses.push((await gw.chat(k2.key, {})).status);
  assert.deepEqual(tenantStatuses, [200, 200, 429]);
  assert.equal((await gw.chat(t.keys[0].key, {})).status, 429, 'the other user of the tenant too');
  const shown = await gw.ctlJson(['limit', 'show', '--tenant', t.tenant]);
  assert.equal(shown.limits[0].rpm, 2);
  const bad = await gw.ctl(['limit', 'set', '--user', uniq('ghost'), '--rpm', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no user/);
  await ok(gw, ['limit', 'clear', '--tenant', t.tenant]);
  await ok(gw, ['limit', 'clear', '--user', t.user]);
  assert.equal((await gw.chat(t.keys[0].key, {})).status, 200);
});
