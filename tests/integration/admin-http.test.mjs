// admin-http.test.mjs - the HTTP admin API (/admin/v1 on admin.listen):
// who may use it (keys whose owner holds an admin-capable role), that it
// reaches the same commands as aigwctl with the owner's permissions, that
// its changes show in aigwctl and in the audit log with the acting user,
// errors in OpenAI's shape with the right status, and replies over 1 MiB.

import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
  assertError, connectRefused, freePort, request, startGateway, test, useGateway,
} from './lib/harness.mjs';

const ctx = useGateway({ workers: 2, adminApi: true }, async (gw, c) => {
  // A gateway admin with a key for the API.
  c.admin = await newUser(gw, ['gateway-admin']);
});

const uniq = (p) => `${p}-${Math.random().toString(36).slice(2, 8)}`;

async function ok(gw, args) {
  const r = await gw.ctl(args);
  assert.equal(r.code, 0, `aigwctl ${args.join(' ')}: ${r.stderr}`);
  return r;
}

// A user in a tenant of its own, granted roles ([role] or [role, model]),
// with an API key: {user, tenant, key, id}.
async function newUser(gw, ...grants) {
  const tenant = uniq('t');
  const user = uniq('u');
  await ok(gw, ['tenant', 'add', tenant]);
  await ok(gw, ['user', 'add', user, '--tenant', tenant]);
  for (const [role, model] of grants) {
    await ok(gw, ['grant', user, role, ...(model ? ['--model', model] : [])]);
  }
  const k = await gw.ctlJson(['key', 'create', '--name', `${user}-key`, '--user', user]);
  return { user, tenant, key: k.key, id: k.id };
}

function okJson(res, status = 200) {
  assert.equal(res.status, status, `status: ${res.status} ${res.text}`);
  assert.match(res.headers['content-type'] ?? '', /application\/json/);
  return res.json();
}

test('no key, a wrong key and a disabled key get 401', async () => {
  const { gw } = ctx;
  assertError(assert, await gw.admin('GET', '/status'), 401, 'missing_api_key');
  assertError(assert, await gw.admin('GET', '/status', 'sk-aigw-not-a-key'), 401, 'invalid_api_key');
  const u = await newUser(gw, ['gateway-admin']);
  assert.equal((await gw.admin('GET', '/status', u.key)).status, 200);
  await ok(gw, ['key', 'disable', u.id]);
  assertError(assert, await gw.admin('GET', '/status', u.key), 401, 'api_key_disabled');
});

test('a key without an owner, or whose owner only calls models, gets 403', async () => {
  const { gw } = ctx;
  const plain = await gw.createKey({ name: 'no-owner' });
  const e = assertError(assert, await gw.admin('GET', '/status', plain.key), 403, 'permission_denied',
    { type: 'permission_error' });
  assert.match(e.message, /no owner/);
  const caller = await newUser(gw, ['endpoint-user', 'demo']);
  // The key calls its model, and is no admin key.
  assert.equal((await gw.chat(caller.key, { model: 'demo' })).status, 200);
  const e2 = assertError(assert, await gw.admin('GET', '/status', caller.key), 403, 'permission_denied');
  assert.match(e2.message, new RegExp(`user "${caller.user}" holds no role that may use the admin API`));
});

test('/admin/v1 is not served on the client listener; unknown paths and methods', async () => {
  const { gw, admin } = ctx;
  assertError(assert, await gw.get('/admin/v1/status', admin.key), 404, 'unknown_url');
  assertError(assert, await gw.admin('GET', '/nothing-here', admin.key), 404, 'unknown_url');
  const r = await gw.admin('PATCH', '/tenants/x', admin.key);
  assertError(assert, r, 405, 'method_not_allowed');
  assert.equal(r.headers.allow, 'GET, DELETE');
  // Only the admin API and /healthz answer on the admin listener.
  const other = await gw.request({ method: 'GET', path: '/v1/models', headers: { Authorization: `Bearer ${admin.key}` } });
  assert.equal(other.status, 200, 'the client listener still serves /v1/models');
  assertError(assert, await request(gw.adminPort, { path: '/v1/models', headers: { Authorization: `Bearer ${admin.key}` } }), 404, 'unknown_url');
  assert.equal((await request(gw.adminPort, { path: '/healthz' })).status, 200);
});

test('status, workers, breakers and audit answer JSON; responses are not cached', async () => {
  const { gw, admin } = ctx;
  const res = await gw.admin('GET', '/status', admin.key);
  const st = okJson(res);
  assert.equal(st.pid, gw.pid);
  assert.ok(!('ok' in st));
  assert.equal(res.headers['cache-control'], 'no-store');
  assert.equal(okJson(await gw.admin('GET', '/workers', admin.key)).workers.length, 2);
  const targets = okJson(await gw.admin('GET', '/breakers', admin.key)).targets;
  assert.ok(targets.some((t) => t.target === 'local/mock-small'));
  assert.deepEqual(okJson(await gw.admin('POST', '/breakers/reset', admin.key, { target: 'all' })).reset.sort(),
    [...new Set(targets.map((t) => t.target))].sort());
  assert.ok(Array.isArray(okJson(await gw.admin('GET', '/audit?limit=5', admin.key)).entries));
});

test('tenants and users: create, read, delete over HTTP, seen by aigwctl', async () => {
  const { gw, admin } = ctx;
  const tenant = uniq('acme');
  const user = uniq('bob');
  assert.equal(okJson(await gw.admin('POST', '/tenants', admin.key, { name: tenant }), 201).tenant.name, tenant);
  assert.ok((await gw.ctlJson(['tenant', 'list'])).some((t) => t.name === tenant));
  okJson(await gw.admin('POST', '/users', admin.key, { name: user, tenant, uid: 47110 }), 201);
  const shown = okJson(await gw.admin('GET', `/users/${user}`, admin.key)).user;
  assert.equal(shown.tenant, tenant);
  assert.equal(shown.uid, 47110);
  assert.equal((await gw.ctlJson(['user', 'show', user])).tenant, tenant);
  assert.ok(okJson(await gw.admin('GET', '/users', admin.key)).users.some((u) => u.name === user));
  assert.deepEqual(okJson(await gw.admin('GET', `/tenants/${tenant}`, admin.key)).tenant.users, [user]);

  assertError(assert, await gw.admin('POST', '/tenants', admin.key, { name: tenant }), 400, 'invalid');
  assertError(assert, await gw.admin('POST', '/tenants', admin.key, { name: 'bad name' }), 400, 'invalid');
  assertError(assert, await gw.admin('DELETE', `/tenants/${tenant}`, admin.key), 400, 'invalid');
  okJson(await gw.admin('DELETE', `/users/${user}`, admin.key));
  okJson(await gw.admin('DELETE', `/tenants/${tenant}`, admin.key));
  assertError(assert, await gw.admin('GET', `/tenants/${tenant}`, admin.key), 404, 'not_found');
  assertError(assert, await gw.admin('GET', `/users/${user}`, admin.key), 404, 'not_found');
});

test('a body that is not a JSON object is a 400', async () => {
  const { gw, admin } = ctx;
  assertError(assert, await gw.admin('POST', '/tenants', admin.key, '{"name": '), 400, 'invalid_json');
  assertError(assert, await gw.admin('POST', '/tenants', admin.key, '[1, 2]'), 400, 'invalid_json');
});

test('grants over HTTP apply at once to the user\'s keys', async () => {
  const { gw, admin } = ctx;
  const bob = await newUser(gw);
  assert.equal((await gw.chat(bob.key, { model: 'demo' })).status, 403);
  okJson(await gw.admin('POST', `/users/${bob.user}/grants`, admin.key, { role: 'endpoint-user', model: 'demo' }));
  assert.deepEqual((await gw.ctlJson(['user', 'show', bob.user])).grants, [{ role: 'endpoint-user', model: 'demo' }]);
  assert.equal((await gw.chat(bob.key, { model: 'demo' })).status, 200);
  okJson(await gw.admin('DELETE', `/users/${bob.user}/grants?role=endpoint-user&model=demo`, admin.key));
  assert.equal((await gw.chat(bob.key, { model: 'demo' })).status, 403);
  assertError(assert, await gw.admin('POST', `/users/${bob.user}/grants`, admin.key, { role: 'superuser', model: 'demo' }), 400);
  assertError(assert, await gw.admin('DELETE', `/users/${bob.user}/grants`, admin.key, { role: 'endpoint-user', model: 'demo' }), 400);
});

test('keys: create, list, show, disable, enable, rotate, delete over HTTP', async () => {
  const { gw, admin } = ctx;
  const bob = await newUser(gw, ['endpoint-user', 'demo']);
  const created = okJson(await gw.admin('POST', '/keys', admin.key,
    { name: 'made-over-http', user: bob.user, models: ['demo'] }), 201);
  const { id } = created.key;
  assert.match(created.secret, /^sk-aigw-/);
  assert.equal(created.key.owner, bob.user);
  assert.equal(created.key.tenant, bob.tenant);
  assert.equal((await gw.chat(created.secret, { model: 'demo' })).status, 200);
  assert.equal((await gw.ctlJson(['key', 'show', id])).name, 'made-over-http');
  assert.ok(okJson(await gw.admin('GET', '/keys', admin.key)).keys.some((k) => k.id === id));
  assert.equal(okJson(await gw.admin('GET', `/keys/${id}`, admin.key)).key.models[0], 'demo');

  okJson(await gw.admin('POST', `/keys/${id}/disable`, admin.key));
  assertError(assert, await gw.chat(created.secret, { model: 'demo' }), 401, 'api_key_disabled');
  assert.equal((await gw.ctlJson(['key', 'show', id])).disabled, true);
  okJson(await gw.admin('POST', `/keys/${id}/enable`, admin.key));
  const rotated = okJson(await gw.admin('POST', `/keys/${id}/rotate`, admin.key));
  assert.equal(rotated.id, id);
  assertError(assert, await gw.chat(created.secret, { model: 'demo' }), 401, 'invalid_api_key');
  assert.equal((await gw.chat(rotated.secret, { model: 'demo' })).status, 200);
  okJson(await gw.admin('DELETE', `/keys/${id}`, admin.key));
  assertError(assert, await gw.admin('GET', `/keys/${id}`, admin.key), 404, 'not_found');
  assertError(assert, await gw.admin('POST', '/keys', admin.key, { name: 'x', models: ['no-such-model'] }), 400);
});

test('an HTTP change is in the audit log with the acting user, the key and no secret', async () => {
  const { gw, admin } = ctx;
  const tenant = uniq('audited');
  okJson(await gw.admin('POST', '/tenants', admin.key, { name: tenant }), 201);
  const made = okJson(await gw.admin('POST', '/keys', admin.key, { name: 'audited-key' }), 201);
  const entries = await gw.ctlJson(['audit', '--limit', '2']);
  assert.deepEqual(entries.map((e) => e.command), ['key.create', 'tenant.add']);
  for (const e of entries) {
    assert.equal(e.user, admin.user);
    assert.equal(e.via, 'http');
    assert.equal(e.key, admin.id);
    assert.equal(e.uid, null);
    assert.ok(!('as_user' in e.args) && !('via_key' in e.args), JSON.stringify(e.args));
  }
  assert.equal(entries[1].args.name, tenant);
  assert.equal(entries[0].args.id, made.key.id);
  const text = await ok(gw, ['audit', '--limit', '2']);
  assert.match(text.stdout, new RegExp(`${admin.user}\\(http\\)`));
  const over = okJson(await gw.admin('GET', '/audit?limit=2', admin.key)).entries;
  assert.deepEqual(over, entries);
  assert.ok(!JSON.stringify(over).includes(made.secret));
});

test('viewer: reads its model, may not change it, may not call; its own key over HTTP', async () => {
  const { gw } = ctx;
  const v = await newUser(gw, ['endpoint-viewer', 'demo']);
  assertError(assert, await gw.chat(v.key, { model: 'demo' }), 403, 'model_not_allowed');
  const shown = okJson(await gw.admin('GET', '/limits?model=demo', v.key)).limits;
  assert.equal(shown[0].scope, 'model:demo');
  assertError(assert, await gw.admin('GET', '/limits?model=other', v.key), 403, 'permission_denied');
  const e = assertError(assert, await gw.admin('PUT', '/limits', v.key, { model: 'demo', rpm: 5 }), 403, 'permission_denied');
  assert.equal(e.message, `permission denied: user "${v.user}" holds no role on model demo that allows limit.set`);
  const targets = okJson(await gw.admin('GET', '/breakers', v.key)).targets;
  assert.deepEqual([...new Set(targets.map((t) => t.model))], ['demo']);
  assertError(assert, await gw.admin('GET', '/tenants', v.key), 403, 'permission_denied');
  assertError(assert, await gw.admin('GET', '/audit', v.key), 403, 'permission_denied');
  assertError(assert, await gw.admin('POST', '/reload', v.key), 403, 'permission_denied');
  // Keys for itself only, and only for models it may call.
  const mine = okJson(await gw.admin('POST', '/keys', v.key, { name: 'second' }), 201);
  assert.equal(mine.key.owner, v.user);
  assertError(assert, await gw.admin('POST', '/keys', v.key, { name: 'x', models: ['demo'] }), 403, 'permission_denied');
  const other = await newUser(gw);
  assertError(assert, await gw.admin('POST', '/keys', v.key, { name: 'x', user: other.user }), 403, 'permission_denied');
  assert.deepEqual(okJson(await gw.admin('GET', '/keys', v.key)).keys.map((k) => k.id).sort(), [v.id, mine.key.id].sort());
  assertError(assert, await gw.admin('GET', `/keys/${other.id}`, v.key), 403, 'permission_denied');
  assertError(assert, await gw.admin('POST', `/keys/${other.id}/disable`, v.key), 403, 'permission_denied');
  okJson(await gw.admin('DELETE', `/keys/${mine.key.id}`, v.key));
});

test('operator: sets and clears its model\'s limits over HTTP, aigwctl sees them, audit names it', async () => {
  const { gw } = ctx;
  const op = await newUser(gw, ['endpoint-operator', 'other']);
  assert.equal((await gw.chat(op.key, { model: 'other' })).status, 200);
  const set = okJson(await gw.admin('PUT', '/limits', op.key, { model: 'other', rpm: 1000, tpm: 500000 }));
  assert.equal(set.limit.rpm, 1000);
  const shown = (await gw.ctlJson(['limit', 'show', '--model', 'other'])).limits;
  assert.equal(shown[0].rpm, 1000);
  const last = (await gw.ctlJson(['audit', '--limit', '1']))[0];
  assert.equal(last.command, 'limit.set');
  assert.equal(last.user, op.user);
  assert.deepEqual(last.args, { model: 'other', rpm: 1000, tpm: 500000 });
  assertError(assert, await gw.admin('PUT', '/limits', op.key, { model: 'demo', rpm: 1 }), 403, 'permission_denied');
  // Per-key limits are the gateway admin's.
  assertError(assert, await gw.admin('PUT', '/limits', op.key, { key: op.id, rpm: 1 }), 403, 'permission_denied');
  assertError(assert, await gw.admin('POST', '/users/nobody/grants', op.key, { role: 'endpoint-user', model: 'other' }), 403, 'permission_denied');
  okJson(await gw.admin('DELETE', '/limits?model=other', op.key));
  assert.equal((await gw.ctlJson(['limit', 'show', '--model', 'other'])).limits[0].override, null);
});

test('endpoint-admin: grants roles on its model to others, nothing else', async () => {
  const { gw } = ctx;
  const boss = await newUser(gw, ['endpoint-admin', 'demo']);
  const bob = await newUser(gw);
  okJson(await gw.admin('POST', `/users/${bob.user}/grants`, boss.key, { role: 'endpoint-user', model: 'demo' }));
  assert.equal((await gw.chat(bob.key, { model: 'demo' })).status, 200);
  assertError(assert, await gw.admin('POST', `/users/${bob.user}/grants`, boss.key, { role: 'endpoint-user', model: 'other' }), 403, 'permission_denied');
  assertError(assert, await gw.admin('POST', `/users/${bob.user}/grants`, boss.key, { role: 'gateway-admin' }), 403, 'permission_denied');
  assertError(assert, await gw.admin('POST', `/users/${boss.user}/grants`, boss.key, { role: 'endpoint-admin', model: 'demo' }), 403, 'permission_denied');
  assertError(assert, await gw.admin('DELETE', `/users/${boss.user}/grants`, boss.key, { role: 'endpoint-admin', model: 'demo' }), 403, 'permission_denied');
  okJson(await gw.admin('DELETE', `/users/${bob.user}/grants`, boss.key, { role: 'endpoint-user', model: 'demo' }));
  assert.equal((await gw.chat(bob.key, { model: 'demo' })).status, 403);
  assertError(assert, await gw.admin('DELETE', `/users/${bob.user}`, boss.key), 403, 'permission_denied');
});

test('self removal is refused over HTTP', async () => {
  const { gw, admin } = ctx;
  assertError(assert, await gw.admin('DELETE', `/users/${admin.user}`, admin.key), 400, 'invalid');
  assertError(assert, await gw.admin('DELETE', `/users/${admin.user}/grants`, admin.key, { role: 'gateway-admin' }), 400, 'invalid');
});

test('quotas map to quota.set/show/clear (the master answers for a command it lacks)', async () => {
  const { gw, admin } = ctx;
  const v = await newUser(gw, ['endpoint-viewer', 'demo']);
  // A viewer may not set a quota on its model, whether the command exists or not.
  assertError(assert, await gw.admin('POST', '/quotas', v.key, { model: 'demo', tokens: 10, period: 'day' }), 403, 'permission_denied');
  const r = await gw.admin('GET', '/quotas?model=demo', admin.key);
  assert.ok([200, 501].includes(r.status), r.text);
  if (r.status === 501) assertError(assert, r, 501, 'unknown_command');
});

test('usage over HTTP: totals and statistics, narrowed for non-admins', async () => {
  const { gw, admin } = ctx;
  const u = await newUser(gw, ['endpoint-operator', 'demo']);
  assert.equal((await gw.chat(u.key, { model: 'demo' })).status, 200);
  const totals = okJson(await gw.admin('GET', '/usage/totals', admin.key));
  assert.ok(totals.requests >= 1);
  const byModel = okJson(await gw.admin('GET', '/usage?by=model&since=2000-01-01', admin.key));
  assert.ok(byModel.rows.some((row) => row.model === 'demo'));
  // An operator sees its model's usage, not everyone's.
  assert.equal(okJson(await gw.admin('GET', '/usage?by=model&model=demo', u.key)).rows.length, 1);
  // Unscoped, it is narrowed to what the operator may see: demo only.
  const mine = okJson(await gw.admin('GET', '/usage?by=model', u.key));
  assert.deepEqual([...new Set(mine.rows.map((row) => row.model))], ['demo']);
  const myTotals = okJson(await gw.admin('GET', '/usage/totals', u.key));
  assert.ok(myTotals.requests >= 1 && myTotals.requests <= totals.requests);
});

test('a master that cannot be reached is a 502', async () => {
  const { gw, admin } = ctx;
  const moved = `${gw.socket}.away`;
  fs.renameSync(gw.socket, moved);
  try {
    assertError(assert, await gw.admin('GET', '/status', admin.key), 502, 'master_unreachable', { type: 'server_error' });
  } finally {
    fs.renameSync(moved, gw.socket);
  }
  assert.equal((await gw.admin('GET', '/status', admin.key)).status, 200);
});

test('a reply over 1 MiB arrives whole, over HTTP and through aigwctl', { timeout: 180000 }, async () => {
  // A gateway of its own: thousands of keys would slow the other tests.
  const gw = await startGateway({ workers: 2, adminApi: true });
  try {
    const admin = await newUser(gw, ['gateway-admin']);
    const n = 4000;
    const name = (i) => `bulk-${String(i).padStart(5, '0')}-${'x'.repeat(110)}`;
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < n; i = next++) {
        const r = await gw.admin('POST', '/keys', admin.key, { name: name(i) });
        assert.equal(r.status, 201, r.text);
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    const res = await gw.admin('GET', '/keys', admin.key);
    assert.ok(res.body.length > 1024 * 1024, `${res.body.length} bytes`);
    const keys = okJson(res).keys;
    assert.equal(keys.length, n + 1);
    assert.equal(new Set(keys.map((k) => k.name)).size, n + 1);
    const viaCtl = await gw.ctl(['key', 'list', '--json']);
    assert.equal(viaCtl.code, 0, viaCtl.stderr);
    assert.ok(viaCtl.stdout.length > 1024 * 1024);
    assert.equal(JSON.parse(viaCtl.stdout).length, n + 1);
    // The audit log of all those changes, too.
    const audit = okJson(await gw.admin('GET', '/audit?limit=0', admin.key)).entries;
    assert.ok(audit.filter((e) => e.command === 'key.create').length >= n);
  } finally {
    await gw.stop();
  }
});

test('a reload that adds or drops admin.listen opens or closes the admin API', async () => {
  const gw = await startGateway({ workers: 1 });
  try {
    const admin = await newUser(gw, ['gateway-admin']);
    const port = await freePort();
    gw.rewriteConfig({ adminListen: [`127.0.0.1:${port}`] });
    await ok(gw, ['reload']);
    gw.adminPort = port;
    await gw.waitWorkers(1);
    assert.equal(okJson(await gw.admin('GET', '/status', admin.key)).pid, gw.pid);
    gw.rewriteConfig({ adminListen: undefined });
    await ok(gw, ['reload']);
    await gw.waitWorkers(1);
    assert.ok(await connectRefused(port), 'the admin listener is closed');
  } finally {
    await gw.stop();
  }
});
