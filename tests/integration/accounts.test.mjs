// accounts.test.mjs - tenants, users, grants and revokes through aigwctl;
// keys owned by a user call only what the user may call, at once after a
// grant or revoke; key rotate; the last gateway admin; the audit log;
// a caller that is not root mapped to its user with --uid; what each role
// may and may not do, run as its own uid.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after } from 'node:test';

import { AIGWCTL, assertError, run, startGateway, test, useGateway } from './lib/harness.mjs';

const ctx = useGateway({ workers: 2 });

const uniq = (p) => `${p}-${Math.random().toString(36).slice(2, 8)}`;

async function ok(gw, args) {
  const r = await gw.ctl(args);
  assert.equal(r.code, 0, `aigwctl ${args.join(' ')}: ${r.stderr}`);
  return r;
}

async function refused(gw, args, re) {
  const r = await gw.ctl(args);
  assert.equal(r.code, 1, `aigwctl ${args.join(' ')} should be refused: ${r.stdout}`);
  if (re) assert.match(r.stderr, re);
  return r;
}

// A tenant and a user in it; returns the user's name.
async function newUser(gw, extra = []) {
  const tenant = uniq('t');
  const user = uniq('u');
  await ok(gw, ['tenant', 'add', tenant]);
  await ok(gw, ['user', 'add', user, '--tenant', tenant, ...extra]);
  return { tenant, user };
}

// Several calls, so that each worker answers at least one of them.
async function statuses(gw, key, model, n = 6) {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await gw.chat(key, { model })).status);
  return out;
}

test('tenant add, list, show and delete', async () => {
  const { gw } = ctx;
  const name = uniq('acme');
  const added = await gw.ctlJson(['tenant', 'add', name]);
  assert.equal(added.name, name);
  await refused(gw, ['tenant', 'add', name], /exists/);
  await refused(gw, ['tenant', 'add', 'bad name'], /name/);
  const list = await gw.ctlJson(['tenant', 'list']);
  assert.ok(list.some((t) => t.name === name));
  const shown = await ok(gw, ['tenant', 'show', name]);
  assert.match(shown.stdout, new RegExp(name));
  await ok(gw, ['tenant', 'delete', name]);
  await refused(gw, ['tenant', 'show', name], /no tenant/);
});

test('a tenant with users cannot be deleted', async () => {
  const { gw } = ctx;
  const { tenant, user } = await newUser(gw);
  await refused(gw, ['tenant', 'delete', tenant], /user/);
  await ok(gw, ['user', 'delete', user]);
  await ok(gw, ['tenant', 'delete', tenant]);
});

test('user add, list, show and delete; a user needs a tenant that exists', async () => {
  const { gw } = ctx;
  const { tenant, user } = await newUser(gw, ['--uid', '42424']);
  await refused(gw, ['user', 'add', uniq('u'), '--tenant', uniq('none')], /no tenant/);
  await refused(gw, ['user', 'add', uniq('u')], /tenant/);
  await refused(gw, ['user', 'add', uniq('u'), '--tenant', tenant, '--uid', '42424'], /uid 42424/);
  const list = await gw.ctlJson(['user', 'list']);
  const row = list.find((u) => u.name === user);
  assert.equal(row.tenant, tenant);
  assert.equal(row.uid, 42424);
  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'demo']);
  const shown = await gw.ctlJson(['user', 'show', user]);
  assert.deepEqual(shown.grants, [{ role: 'endpoint-user', model: 'demo' }]);
  const text = await ok(gw, ['user', 'show', user]);
  assert.match(text.stdout, /endpoint-user on demo/);
  await ok(gw, ['user', 'delete', user]);
  await refused(gw, ['user', 'show', user], /no user/);
});

test('grant checks the role and the model', async () => {
  const { gw } = ctx;
  const { user } = await newUser(gw);
  await refused(gw, ['grant', user, 'superuser'], /unknown role/);
  await refused(gw, ['grant', user, 'endpoint-user'], /--model/);
  await refused(gw, ['grant', user, 'endpoint-user', '--model', 'no-such-model'], /no model/);
  await refused(gw, ['grant', user, 'gateway-admin', '--model', 'demo'], /every model/);
  await refused(gw, ['grant', uniq('nobody'), 'endpoint-user', '--model', 'demo'], /no user/);
  await refused(gw, ['revoke', user, 'endpoint-user', '--model', 'demo'], /no grant/);
});

test('a key owned by a user without a grant gets 403; grant and revoke apply at once', async () => {
  const { gw } = ctx;
  const { tenant, user } = await newUser(gw);
  const k = await gw.ctlJson(['key', 'create', '--name', 'owned', '--user', user]);
  const shown = await gw.ctlJson(['key', 'show', k.id]);
  assert.equal(shown.owner, user);
  assert.equal(shown.tenant, tenant);
  assertError(assert, await gw.chat(k.key, { model: 'demo' }), 403, 'model_not_allowed');

  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'demo']);
  assert.deepEqual(await statuses(gw, k.key, 'demo'), Array(6).fill(200));
  assert.deepEqual(await statuses(gw, k.key, 'other', 2), [403, 403]);
  const models = (await gw.get('/v1/models', k.key)).json().data.map((m) => m.id);
  assert.deepEqual(models, ['demo']);

  await ok(gw, ['revoke', user, 'endpoint-user', '--model', 'demo']);
  assert.deepEqual(await statuses(gw, k.key, 'demo'), Array(6).fill(403));
});

test('endpoint-viewer cannot call; operator and admin can; gateway-admin calls every model', async () => {
  const { gw } = ctx;
  const { user } = await newUser(gw);
  const k = await gw.ctlJson(['key', 'create', '--name', 'viewer', '--user', user]);
  await ok(gw, ['grant', user, 'endpoint-viewer', '--model', 'demo']);
  assertError(assert, await gw.chat(k.key, { model: 'demo' }), 403, 'model_not_allowed');
  await ok(gw, ['grant', user, 'endpoint-operator', '--model', 'demo']);
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  await ok(gw, ['grant', user, 'endpoint-admin', '--model', 'other']);
  assert.equal((await gw.chat(k.key, { model: 'other' })).status, 200);
  await ok(gw, ['grant', user, 'gateway-admin']);
  assert.equal((await gw.post('/v1/embeddings', k.key, { model: 'demo-embed', input: 'x' })).status, 200);
  // A second admin, so that this one may go again.
  const { user: other } = await newUser(gw);
  await ok(gw, ['grant', other, 'gateway-admin']);
  await ok(gw, ['revoke', user, 'gateway-admin']);
  assert.equal((await gw.post('/v1/embeddings', k.key, { model: 'demo-embed', input: 'x' })).status, 403);
});

test('a key of a deleted user calls nothing; key create refuses an unknown user', async () => {
  const { gw } = ctx;
  const { user } = await newUser(gw);
  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'demo']);
  const k = await gw.ctlJson(['key', 'create', '--name', 'orphan', '--user', user]);
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  await ok(gw, ['user', 'delete', user]);
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 403);
  await refused(gw, ['key', 'create', '--name', 'x', '--user', uniq('ghost')], /no user/);
});

test('key rotate: the new secret works at once, the old one gets 401, the id stays', async () => {
  const { gw } = ctx;
  const k = await gw.createKey({ name: 'rotating' });
  assert.equal((await gw.chat(k.key, {})).status, 200);
  const r = await gw.ctlJson(['key', 'rotate', k.id]);
  assert.equal(r.id, k.id);
  assert.match(r.key, /^sk-aigw-/);
  assert.notEqual(r.key, k.key);
  assert.deepEqual(await statuses(gw, r.key, 'demo', 4), [200, 200, 200, 200]);
  for (let i = 0; i < 4; i++) assertError(assert, await gw.chat(k.key, {}), 401, 'invalid_api_key');
  const shown = await gw.ctlJson(['key', 'show', k.id]);
  assert.equal(shown.name, 'rotating');
  assert.equal(shown.prefix, `${r.key.slice(0, 12)}...`);
  await refused(gw, ['key', 'rotate', 'key_000000000000'], /no key/);
});

test('the last gateway admin cannot be revoked or deleted', async () => {
  // A gateway of its own: admins granted by other tests do not count here.
  const gw = await startGateway({ workers: 1 });
  try {
    const { user: alice } = await newUser(gw);
    const { user: bob } = await newUser(gw);
    await ok(gw, ['grant', alice, 'gateway-admin']);
    await refused(gw, ['revoke', alice, 'gateway-admin'], /last gateway admin/);
    await refused(gw, ['user', 'delete', alice], /last gateway admin/);
    await ok(gw, ['grant', bob, 'gateway-admin']);
    await ok(gw, ['revoke', alice, 'gateway-admin']);
    await refused(gw, ['user', 'delete', bob], /last gateway admin/);
  } finally {
    await gw.stop();
  }
});

test('audit lists every change, newest first, with no secret in it', async () => {
  const { gw } = ctx;
  const { tenant, user } = await newUser(gw);
  await ok(gw, ['grant', user, 'endpoint-user', '--model', 'demo']);
  const k = await gw.ctlJson(['key', 'create', '--name', 'audited', '--user', user]);
  const rotated = await gw.ctlJson(['key', 'rotate', k.id]);
  await ok(gw, ['key', 'disable', k.id]);
  await ok(gw, ['limit', 'set', '--key', k.id, '--rpm', '10']);
  await ok(gw, ['revoke', user, 'endpoint-user', '--model', 'demo']);

  const entries = await gw.ctlJson(['audit', '--limit', '7']);
  assert.deepEqual(entries.map((e) => e.command),
    ['revoke', 'limit.set', 'key.disable', 'key.rotate', 'key.create', 'grant', 'user.add']);
  for (const e of entries) {
    assert.equal(e.uid, process.getuid());
    assert.equal(typeof e.user, 'string');
    assert.ok(e.time > 0);
  }
  assert.deepEqual(entries[5].args, { user, role: 'endpoint-user', model: 'demo' });
  assert.equal(entries[4].args.id, k.id);
  assert.equal(entries[6].args.tenant, tenant);
  const all = await ok(gw, ['audit', '--limit', '0']);
  assert.match(all.stdout, /tenant\.add/);
  const json = await ok(gw, ['audit', '--json']);
  for (const text of [all.stdout, json.stdout]) {
    assert.ok(!text.includes(k.key), 'the created secret is in the audit log');
    assert.ok(!text.includes(rotated.key), 'the rotated secret is in the audit log');
  }
  // Reads are not changes.
  await ok(gw, ['key', 'list']);
  assert.equal((await gw.ctlJson(['audit', '--limit', '1']))[0].command, 'revoke');
});

// setpriv runs aigwctl as another uid; needs root, setpriv, and a
// binary and socket that uid can reach.
function canSwitchUid() {
  if (process.getuid() !== 0) return false;
  try {
    execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', AIGWCTL, 'help'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('a caller that is not root is its --uid user: status and its own keys only',
  { skip: !canSwitchUid() && 'cannot run aigwctl as uid 65534 here' }, async () => {
    const gw = await startGateway({ workers: 1, adminMode: '0660' });
    try {
      // Let uid/gid 65534 reach the socket: the group is the one setpriv gives it.
      fs.chmodSync(gw.dir, 0o755);
      fs.chownSync(gw.socket, 0, 65534);
      const asNobody = (args) => run('setpriv',
        ['--reuid=65534', '--regid=65534', '--clear-groups', AIGWCTL, '-s', gw.socket, ...args]);
      let r = await asNobody(['status']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /permission denied/);

      const { user } = await newUser(gw, ['--uid', '65534']);
      const mine = await gw.ctlJson(['key', 'create', '--name', 'mine', '--user', user]);
      const theirs = await gw.createKey({ name: 'theirs' });
      r = await asNobody(['status']);
      assert.equal(r.code, 0, r.stderr);
      r = await asNobody(['key', 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).map((k) => k.id), [mine.id]);
      assert.equal((await asNobody(['key', 'show', theirs.id])).code, 1);
      assert.equal((await asNobody(['key', 'show', mine.id])).code, 0);
      r = await asNobody(['tenant', 'add', uniq('t')]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /not a gateway admin/);
      // Its own keys it manages; another's it may not touch.
      assert.equal((await asNobody(['key', 'disable', mine.id])).code, 0);
      r = await asNobody(['key', 'disable', theirs.id]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /permission denied: key \S+ is not one of user/);

      // Made a gateway admin, the same uid may manage, but not remove itself.
      await ok(gw, ['grant', user, 'gateway-admin']);
      assert.equal((await asNobody(['tenant', 'add', uniq('t')])).code, 0);
      r = await asNobody(['user', 'delete', user]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /yourself/);
      const last = (await gw.ctlJson(['audit', '--limit', '1']))[0];
      assert.equal(last.command, 'tenant.add');
      assert.equal(last.uid, 65534);
      assert.equal(last.user, user);
    } finally {
      await gw.stop();
    }
  });

// ------------------------------------------------ roles through aigwctl

// A gateway whose socket other uids may reach (group 65534, mode 0660),
// shared by the role tests below; each test maps fresh uids to its users.
let rolesGw = null;
let nextUid = 61000 + Math.floor(Math.random() * 1000) * 10;
after(async () => { if (rolesGw) await rolesGw.stop(); });

async function rolesGateway() {
  if (!rolesGw) {
    rolesGw = await startGateway({ workers: 1, adminMode: '0660' });
    fs.chmodSync(rolesGw.dir, 0o755);
    fs.chownSync(rolesGw.socket, 0, 65534);
  }
  return rolesGw;
}

// A user mapped to a uid of its own and granted roles ([role, model]...):
// {user, uid, ctl(args) (aigwctl as that uid), json(args)}.
async function mappedUser(gw, ...grants) {
  const uid = nextUid++;
  const { user } = await newUser(gw, ['--uid', String(uid)]);
  for (const [role, model] of grants) {
    await ok(gw, ['grant', user, role, ...(model ? ['--model', model] : [])]);
  }
  const ctl = (args) => run('setpriv',
    [`--reuid=${uid}`, '--regid=65534', '--clear-groups', AIGWCTL, '-s', gw.socket, ...args]);
  const json = async (args) => {
    const r = await ctl([...args, '--json']);
    assert.equal(r.code, 0, `aigwctl ${args.join(' ')} as ${user}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  return { user, uid, ctl, json };
}

async function allowed(u, args) {
  const r = await u.ctl(args);
  assert.equal(r.code, 0, `aigwctl ${args.join(' ')} as ${u.user} should run: ${r.stderr}`);
  return r;
}

async function denied(u, args, re = /permission denied/) {
  const r = await u.ctl(args);
  assert.equal(r.code, 1, `aigwctl ${args.join(' ')} as ${u.user} should be refused: ${r.stdout}`);
  assert.match(r.stderr, re);
  return r;
}

const rolesSkip = { skip: !canSwitchUid() && 'cannot run aigwctl as another uid here' };

test('endpoint-viewer: sees its model, changes nothing, calls nothing', rolesSkip, async () => {
  const gw = await rolesGateway();
  const v = await mappedUser(gw, ['endpoint-viewer', 'demo']);
  const shown = await v.json(['limit', 'show', '--model', 'demo']);
  assert.equal(shown.limits[0].scope, 'model:demo');
  await denied(v, ['limit', 'show', '--model', 'other'],
    new RegExp(`user "${v.user}" holds no role on model other that allows limit.show`));
  await denied(v, ['limit', 'set', '--model', 'demo', '--rpm', '5'],
    new RegExp(`permission denied: user "${v.user}" holds no role on model demo that allows limit.set`));
  const targets = await v.json(['breaker', 'list']);
  assert.deepEqual([...new Set(targets.map((t) => t.model))], ['demo']);
  await denied(v, ['tenant', 'add', uniq('t')], /not a gateway admin/);
  await denied(v, ['endpoint', 'test', 'demo'], /allows endpoint.test/);
  // A key for itself (for the admin API), one that can call nothing.
  const k = await v.json(['key', 'create', '--name', 'view']);
  assert.equal((await gw.ctlJson(['key', 'show', k.id])).owner, v.user);
  assertError(assert, await gw.chat(k.key, { model: 'demo' }), 403, 'model_not_allowed');
  await denied(v, ['key', 'create', '--name', 'x', '--models', 'demo'], /allows calling it/);
});

test('endpoint-user: calls its model with keys it creates and manages; nobody else\'s', rolesSkip, async () => {
  const gw = await rolesGateway();
  const u = await mappedUser(gw, ['endpoint-user', 'demo']);
  const other = await mappedUser(gw, ['endpoint-user', 'demo']);
  const k = await u.json(['key', 'create', '--name', 'mine', '--models', 'demo']);
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  await denied(u, ['key', 'create', '--name', 'x', '--models', 'other'], /no role on model other/);
  await denied(u, ['key', 'create', '--name', 'x', '--user', other.user], /only for themselves/);
  await denied(u, ['limit', 'show', '--model', 'demo'], /allows limit.show/);
  await allowed(u, ['key', 'disable', k.id]);
  await allowed(u, ['key', 'enable', k.id]);
  const rotated = await u.json(['key', 'rotate', k.id]);
  assert.equal((await gw.chat(rotated.key, { model: 'demo' })).status, 200);
  const theirs = await other.json(['key', 'create', '--name', 'theirs']);
  for (const verb of ['show', 'disable', 'enable', 'rotate', 'delete']) {
    await denied(u, ['key', verb, theirs.id], /is not one of user/);
  }
  assert.deepEqual((await u.json(['key', 'list'])).map((x) => x.id), [k.id]);
  await allowed(u, ['key', 'delete', k.id]);
  await denied(u, ['key', 'show', k.id], /no key/);
});

test('endpoint-operator: its model\'s limits, not another\'s, not a key\'s, no grants', rolesSkip, async () => {
  const gw = await rolesGateway();
  const op = await mappedUser(gw, ['endpoint-operator', 'demo']);
  const k = await op.json(['key', 'create', '--name', 'op', '--models', 'demo']);
  assert.equal((await gw.chat(k.key, { model: 'demo' })).status, 200);
  await allowed(op, ['limit', 'set', '--model', 'demo', '--rpm', '1000']);
  assert.equal((await gw.ctlJson(['limit', 'show', '--model', 'demo'])).limits[0].rpm, 1000);
  const last = (await gw.ctlJson(['audit', '--limit', '1']))[0];
  assert.deepEqual([last.command, last.user, last.uid], ['limit.set', op.user, op.uid]);
  await denied(op, ['limit', 'set', '--model', 'other', '--rpm', '1'], /allows limit.set/);
  await denied(op, ['limit', 'set', '--key', k.id, '--rpm', '1'], /not a gateway admin/);
  // Its own overview holds only what it may see.
  await ok(gw, ['limit', 'set', '--model', 'other', '--rpm', '7']);
  const all = (await op.json(['limit', 'show'])).limits.map((l) => l.scope);
  assert.ok(all.includes('model:demo') && !all.includes('model:other'), all.join(' '));
  await allowed(op, ['limit', 'clear', '--model', 'demo']);
  await ok(gw, ['limit', 'clear', '--model', 'other']);
  const { user: bob } = await newUser(gw);
  await denied(op, ['grant', bob, 'endpoint-user', '--model', 'demo'], /allows grant/);
  await denied(op, ['user', 'list'], /not a gateway admin/);
  await allowed(op, ['user', 'show', op.user]);
  await denied(op, ['user', 'show', bob], /only for themselves/);
});

test('endpoint-admin: grants and revokes roles on its model for others only', rolesSkip, async () => {
  const gw = await rolesGateway();
  const boss = await mappedUser(gw, ['endpoint-admin', 'demo']);
  const { user: bob } = await newUser(gw);
  const bobKey = await gw.ctlJson(['key', 'create', '--name', 'bob', '--user', bob]);
  await allowed(boss, ['grant', bob, 'endpoint-operator', '--model', 'demo']);
  assert.equal((await gw.chat(bobKey.key, { model: 'demo' })).status, 200);
  const last = (await gw.ctlJson(['audit', '--limit', '1']))[0];
  assert.deepEqual([last.command, last.user], ['grant', boss.user]);
  await denied(boss, ['grant', bob, 'endpoint-user', '--model', 'other'], /no role on model other that allows grant/);
  await denied(boss, ['grant', bob, 'gateway-admin'], /may not grant gateway-admin/);
  await denied(boss, ['grant', boss.user, 'endpoint-user', '--model', 'demo'], /their own roles/);
  await denied(boss, ['revoke', boss.user, 'endpoint-admin', '--model', 'demo'], /their own roles/);
  await allowed(boss, ['limit', 'set', '--model', 'demo', '--tpm', '100000']);
  await allowed(boss, ['limit', 'clear', '--model', 'demo']);
  await allowed(boss, ['revoke', bob, 'endpoint-operator', '--model', 'demo']);
  assert.equal((await gw.chat(bobKey.key, { model: 'demo' })).status, 403);
  await denied(boss, ['user', 'delete', bob], /not a gateway admin/);
});

test('gateway-admin by grant: everything but removing itself', rolesSkip, async () => {
  const gw = await rolesGateway();
  const root = await mappedUser(gw, ['gateway-admin']);
  const { user: bob, tenant } = await newUser(gw);
  await allowed(root, ['grant', bob, 'endpoint-user', '--model', 'other']);
  await allowed(root, ['limit', 'set', '--model', 'other', '--rpm', '9']);
  await allowed(root, ['limit', 'clear', '--model', 'other']);
  await allowed(root, ['user', 'delete', bob]);
  await allowed(root, ['tenant', 'delete', tenant]);
  await denied(root, ['user', 'delete', root.user], /yourself/);
  await denied(root, ['revoke', root.user, 'gateway-admin'], /your own grants/);
});

test('only the master\'s own uid (its workers) may act for another user', rolesSkip, async () => {
  const gw = await rolesGateway();
  const v = await mappedUser(gw, ['endpoint-viewer', 'demo']);
  const { user: admin } = await newUser(gw);
  await ok(gw, ['grant', admin, 'gateway-admin']);
  // A raw request, as a worker would send it, from a uid that is not the master's.
  const send = `const s = require('net').connect(process.argv[1]);
s.on('connect', () => s.write(JSON.stringify({ cmd: 'tenant.list', as_user: process.argv[2] }) + '\\n'));
let got = ''; s.on('data', (d) => { got += d; }); s.on('end', () => console.log(got.trim()));`;
  const r = await run('setpriv', [`--reuid=${v.uid}`, '--regid=65534', '--clear-groups',
    process.execPath, '-e', send, gw.socket, admin]);
  assert.equal(r.code, 0, r.stderr);
  const reply = JSON.parse(r.stdout);
  assert.equal(reply.ok, false);
  assert.match(reply.error, new RegExp(`uid ${v.uid} may not act for another user`));
  assert.equal(reply.code, 'permission_denied');
});
