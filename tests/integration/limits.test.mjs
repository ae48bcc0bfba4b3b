// limits.test.mjs - RPM and TPM rate limits of keys and models: the
// burst, then 429 with Retry-After and the x-ratelimit-* headers; the
// admitted rate under concurrent clients; TPM settled with the real
// usage; a model's limit across keys; aigwctl limit set / show / clear at
// once; the YAML default of keys.

import assert from 'node:assert/strict';

import { assertError, startGateway, test, useGateway } from './lib/harness.mjs';

const ctx = useGateway({
  workers: 4,
  models: [{ name: 'limited', targets: [{ provider: 'local', model: 'mock-small' }], limits: { rpm: 5 } }],
});

async function keyWith(gw, { rpm, tpm } = {}) {
  const k = await gw.createKey();
  if (rpm !== undefined || tpm !== undefined) {
    const args = ['limit', 'set', '--key', k.id];
    if (rpm !== undefined) args.push('--rpm', String(rpm));
    if (tpm !== undefined) args.push('--tpm', String(tpm));
    await gw.ctlJson(args);
  }
  return k;
}

// n requests, `parallel` at a time, each on a connection of its own.
async function spray(gw, key, n, parallel = 10, body = {}, headers = {}) {
  const out = [];
  for (let i = 0; i < n; i += parallel) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + parallel); j++) batch.push(gw.chat(key, body, headers));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

const is429 = (r) => r.status === 429;

test('a key limited to 60 rpm gets its burst of 60, then 429 with Retry-After and the headers', async () => {
  const { gw } = ctx;
  const k = await keyWith(gw, { rpm: 60 });
  const t0 = Date.now();
  const res = await spray(gw, k.key, 70);
  const elapsed = (Date.now() - t0) / 1000;
  const ok = res.filter((r) => r.status === 200);
  assert.ok(ok.length >= 60 && ok.length <= 60 + Math.ceil(elapsed) + 1, `${ok.length} admitted in ${elapsed} s`);
  assert.equal(ok[0].headers['x-ratelimit-limit-requests'], '60');
  assert.match(ok[0].headers['x-ratelimit-remaining-requests'], /^\d+$/);
  assert.match(ok[0].headers['x-ratelimit-reset-requests'], /^(\d+ms|[\d.]+s|\d+m[\d.]+s)$/);
  assert.equal(ok[0].headers['x-ratelimit-limit-tokens'], undefined, 'no TPM limit: no token headers');
  const refused = res.filter(is429);
  assert.ok(refused.length >= 70 - ok.length - 1, `${refused.length} refused`);
  const r = refused[refused.length - 1];
  assertError(assert, r, 429, 'rate_limit_exceeded', { type: 'rate_limit_error' });
  assert.match(r.json().error.message, new RegExp(`Rate limit reached for key ${k.id}: 60 requests per minute`));
  assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After ${r.headers['retry-after']}`);
  assert.equal(r.headers['x-ratelimit-limit-requests'], '60');
  assert.equal(r.headers['x-ratelimit-remaining-requests'], '0');
  assert.ok(r.headers['x-ratelimit-reset-requests']);
});

test('under 200 concurrent clients the admitted rate stays within 2% of the limit', async () => {
  const { gw } = ctx;
  const rpm = 600;
  const k = await keyWith(gw, { rpm });
  const t0 = Date.now();
  const stopAt = t0 + 5000;
  let admitted = 0;
  let refused = 0;
  let other = 0;
  await Promise.all(Array.from({ length: 200 }, async () => {
    while (Date.now() < stopAt) {
      const r = await gw.chat(k.key, {});
      if (r.status === 200) admitted++;
      else if (r.status === 429) refused++;
      else other++;
    }
  }));
  const elapsed = (Date.now() - t0) / 1000;
  const bound = rpm + (rpm / 60) * elapsed;
  assert.equal(other, 0);
  assert.ok(refused > 0, 'the clients asked for more than the limit');
  assert.ok(admitted <= bound + 1, `${admitted} admitted, at most ${bound + 1} allowed in ${elapsed} s`);
  assert.ok(admitted >= 0.98 * bound, `${admitted} admitted, expected at least ${0.98 * bound} in ${elapsed} s`);
});

test('TPM: the estimate is settled with the real usage, and the key is refused once its tokens are used', async () => {
  const { gw } = ctx;
  const k = await keyWith(gw, { tpm: 1000 });
  // The estimate is about 35 tokens (body / 4 + max_tokens 10); the mock
  // reports 2 prompt + 100 completion tokens, which the settlement charges.
  const body = { max_tokens: 10 };
  const hdr = { 'x-mock-chunks': '100' };
  let admitted = 0;
  let last;
  for (let i = 0; i < 20; i++) {
    last = await gw.chat(k.key, body, hdr);
    if (last.status !== 200) break;
    assert.equal(last.json().usage.total_tokens, 102);
    assert.equal(last.headers['x-ratelimit-limit-tokens'], '1000');
    admitted++;
  }
  // 1000 / 102: ten fit (the tenth admitted on its estimate), not the 28
  // that the estimates alone would let through.
  assert.ok(admitted >= 9 && admitted <= 11, `${admitted} admitted`);
  assertError(assert, last, 429, 'rate_limit_exceeded', { type: 'rate_limit_error' });
  assert.match(last.json().error.message, new RegExp(`Rate limit reached for key ${k.id}: 1000 tokens per minute`));
  assert.equal(last.headers['x-ratelimit-limit-tokens'], '1000');
  assert.ok(Number(last.headers['retry-after']) >= 1);
});

test('TPM: a refused request takes no request from the RPM bucket', async () => {
  const { gw } = ctx;
  const k = await keyWith(gw, { rpm: 100, tpm: 50 });
  const first = await gw.chat(k.key, { max_tokens: 1000 });
  assert.equal(first.status, 200, 'capped at the whole bucket, so it can pass');
  const before = Number(first.headers['x-ratelimit-remaining-requests']);
  const r = await gw.chat(k.key, { max_tokens: 1000 });
  assert.equal(r.status, 429);
  assert.equal(Number(r.headers['x-ratelimit-remaining-requests']), before, 'the RPM token was given back');
});

test('a model limit applies to all keys together', async () => {
  const { gw } = ctx;
  const a = await keyWith(gw);
  const b = await keyWith(gw);
  const res = [];
  for (let i = 0; i < 3; i++) res.push(await gw.chat(a.key, { model: 'limited' }));
  for (let i = 0; i < 3; i++) res.push(await gw.chat(b.key, { model: 'limited' }));
  assert.deepEqual(res.map((r) => r.status), [200, 200, 200, 200, 200, 429]);
  assert.equal(res[0].headers['x-ratelimit-limit-requests'], '5');
  assert.match(res[5].json().error.message, /Rate limit reached for model limited: 5 requests per minute/);
  // Other models are not limited.
  const d = await gw.chat(b.key, { model: 'demo' });
  assert.equal(d.status, 200);
  assert.equal(d.headers['x-ratelimit-limit-requests'], undefined);
});

test('aigwctl limit set takes effect at once, limit show reports it and limit clear removes it', async () => {
  const { gw } = ctx;
  const k = await keyWith(gw);
  let r = await gw.chat(k.key, {});
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-ratelimit-limit-requests'], undefined);
  await gw.ctlJson(['limit', 'set', '--key', k.id, '--rpm', '2']);
  const res = await spray(gw, k.key, 3, 1);
  assert.deepEqual(res.map((x) => x.status), [200, 200, 429]);
  const shown = await gw.ctlJson(['limit', 'show', '--key', k.id]);
  assert.equal(shown.limits[0].scope, `key:${k.id}`);
  assert.equal(shown.limits[0].rpm, 2);
  assert.equal(shown.limits[0].override.rpm, 2);
  const all = await gw.ctlJson(['limit', 'show']);
  assert.ok(all.limits.some((l) => l.scope === `key:${k.id}`));
  await gw.ctlJson(['limit', 'clear', '--key', k.id]);
  r = await gw.chat(k.key, {});
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-ratelimit-limit-requests'], undefined);
  const none = await gw.ctl(['limit', 'clear', '--key', k.id]);
  assert.equal(none.code, 1);
  const bad = await gw.ctl(['limit', 'set', '--key', 'key_nosuchkey00', '--rpm', '1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no key with id/);
  const model = await gw.ctlJson(['limit', 'set', '--model', 'limited', '--tpm', '5000']);
  assert.equal(model.limit.rpm, 5, 'the configured rpm stays');
  assert.equal(model.limit.tpm, 5000);
  await gw.ctlJson(['limit', 'clear', '--model', 'limited']);
});

test('the YAML default for keys applies to a new key, and an override of 0 lifts it', async () => {
  const gw = await startGateway({ limits: { key: { rpm: 3 } } });
  try {
    const k = await gw.createKey();
    const res = await spray(gw, k.key, 4, 1);
    assert.deepEqual(res.map((x) => x.status), [200, 200, 200, 429]);
    assert.equal(res[0].headers['x-ratelimit-limit-requests'], '3');
    await gw.ctlJson(['limit', 'set', '--key', k.id, '--rpm', '0']);
    const r = await gw.chat(k.key, {});
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-ratelimit-limit-requests'], undefined);
  } finally {
    await gw.stop();
  }
});
