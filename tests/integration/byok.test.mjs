// byok.test.mjs - bring your own key: a tenant's credential stands in for a
// configured provider's.  Two mocks tell the credentials apart: the
// platform's ("local") requires UPSTREAM_KEY, the tenant's own endpoint and
// the provider "shared" require TENANT_KEY.  The secret is never shown:
// not by provider list, not in the LMDB file, the log or the audit log.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before } from 'node:test';

import {
  UPSTREAM_KEY, eventually, startGateway, startMock, tempDir, test,
} from './lib/harness.mjs';

const TENANT_KEY = 'sk-tenant-acme-own-credential-7f3a9c';
const BAD_KEY = 'sk-tenant-beta-wrong-credential-0000';

let platform; let own; let gw; let dir;
let alice; let bob; let plain; // keys: alice of acme, bob of beta, a key with no owner

before(async () => {
  [platform, own] = await Promise.all([
    startMock({ requireKey: UPSTREAM_KEY }), startMock({ requireKey: TENANT_KEY }),
  ]);
  gw = await startGateway({
    mock: platform,
    // "shared" is reached with the platform's credential, which its
    // endpoint refuses: only a tenant with its own gets through.
    providers: [{ name: 'shared', base_url: own.base, api_key_env: 'AIGW_TEST_UPSTREAM_KEY' }],
    models: [{ name: 'shared-model', targets: [{ provider: 'shared', model: 'mock-small' }] }],
  });
  dir = tempDir('aigw-byok-');
  fs.writeFileSync(path.join(dir, 'acme.key'), `${TENANT_KEY}\n`, { mode: 0o600 });
  fs.writeFileSync(path.join(dir, 'beta.key'), `${BAD_KEY}\n`, { mode: 0o600 });
  for (const [tenant, user] of [['acme', 'alice'], ['beta', 'bob']]) {
    assert.equal((await gw.ctl(['tenant', 'add', tenant])).code, 0);
    assert.equal((await gw.ctl(['user', 'add', user, '--tenant', tenant])).code, 0);
    for (const model of ['demo', 'shared-model']) {
      assert.equal((await gw.ctl(['grant', user, 'endpoint-user', '--model', model])).code, 0);
    }
  }
  alice = (await gw.ctlJson(['key', 'create', '--name', 'alice', '--user', 'alice'])).key;
  bob = (await gw.ctlJson(['key', 'create', '--name', 'bob', '--user', 'bob'])).key;
  plain = (await gw.createKey({ name: 'plain' })).key;
});

after(async () => {
  await gw?.stop();
  await Promise.all([platform?.stop(), own?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const addProvider = (name, args) => gw.ctl(['provider', 'add', name, '--type', 'openai', ...args]);

test('provider add stores a tenant credential and shows its fingerprint, never the secret', async () => {
  const r = await addProvider('acme-shared', ['--tenant', 'acme', '--for', 'shared',
    '--api-key-file', path.join(dir, 'acme.key'), '--json']);
  assert.equal(r.code, 0, r.stderr);
  const p = JSON.parse(r.stdout);
  assert.equal(p.name, 'acme-shared');
  assert.equal(p.tenant, 'acme');
  assert.equal(p.for, 'shared');
  assert.equal(p.type, 'openai');
  assert.equal(p.active, true);
  assert.match(p.fingerprint, /^sha256:[0-9a-f]{12}$/);
  assert.ok(!r.stdout.includes(TENANT_KEY));
});

test("a tenant's requests use its own credential; everyone else's the provider's", async () => {
  const mine = await gw.chat(alice, { model: 'shared-model' });
  assert.equal(mine.status, 200, mine.text);
  // The platform's credential reaches the same endpoint and is refused.
  for (const key of [plain, bob]) {
    const theirs = await gw.chat(key, { model: 'shared-model' });
    assert.equal(theirs.status, 401, theirs.text);
  }
  // Other providers keep the platform's credential for the tenant too.
  assert.equal((await gw.chat(alice, { model: 'demo' })).status, 200);
});

test('--base-url sends the tenant to its own endpoint with its own credential', async () => {
  const r = await addProvider('acme-local', ['--tenant', 'acme', '--for', 'local', '--base-url',
    `${own.base}/`, '--api-key-file', path.join(dir, 'acme.key')]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /acme-local\s+acme\s+openai\s+local\s+sha256:/);
  // The platform's mock would refuse the tenant's key, the tenant's the platform's.
  assert.equal((await gw.chat(alice, { model: 'demo' })).status, 200);
  assert.equal((await gw.chat(plain, { model: 'demo' })).status, 200);
  const list = await gw.ctlJson(['provider', 'list', '--tenant', 'acme']);
  assert.equal(list.find((p) => p.name === 'acme-local').base_url, own.base);
});

test('usage and the access log mark what went through a tenant credential', async () => {
  const mine = await gw.chat(alice, { model: 'shared-model' });
  const theirs = await gw.chat(plain, { model: 'demo' });
  assert.equal((await gw.accessRecord(mine.headers['x-request-id'])).byok, true);
  assert.equal((await gw.accessRecord(theirs.headers['x-request-id'])).byok, false);
  const rows = await eventually(async () => {
    const u = await gw.ctlJson(['usage', '--by', 'byok']);
    return u.rows.some((row) => row.byok === 'yes') && u.rows.some((row) => row.byok === 'no') && u.rows;
  }, { what: 'usage rows by byok' });
  assert.ok(rows.find((row) => row.byok === 'yes').requests >= 3);
});

test('provider list shows every credential without its secret', async () => {
  const table = await gw.ctl(['provider', 'list']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^NAME\s+TENANT\s+TYPE\s+FOR\s+FINGERPRINT\s+CREATED\s+STATUS/);
  assert.match(table.stdout, /acme-shared\s+acme\s+openai\s+shared\s+sha256:[0-9a-f]{12}\s+\S+Z\s+active/);
  const json = await gw.ctl(['provider', 'list', '--json']);
  for (const out of [table.stdout, json.stdout]) {
    assert.ok(!out.includes(TENANT_KEY));
    assert.ok(!out.includes(TENANT_KEY.slice(-12)));
  }
  for (const p of JSON.parse(json.stdout)) {
    assert.deepEqual(Object.keys(p).sort(),
      ['active', 'base_url', 'created', 'fingerprint', 'for', 'name', 'tenant', 'type']);
  }
});

test('the secret is in neither the LMDB file, the log nor the audit log', async () => {
  const mdb = fs.readFileSync(path.join(gw.stateDir, 'data.mdb'));
  assert.ok(mdb.includes(Buffer.from('acme-shared')), 'the record is there');
  for (const s of [TENANT_KEY, TENANT_KEY.slice(8, 28)]) {
    assert.equal(mdb.indexOf(Buffer.from(s)), -1, 'no secret in clear in data.mdb');
    assert.ok(!gw.log().includes(s), 'no secret in the log');
  }
  const audit = await gw.ctl(['audit', '--json']);
  const adds = JSON.parse(audit.stdout).filter((e) => e.command === 'provider.add');
  assert.ok(adds.length >= 2);
  assert.equal(adds[0].args.name, 'acme-local');
  assert.ok(!('api_key' in adds[0].args));
  assert.ok(!audit.stdout.includes(TENANT_KEY));
});

test('provider test reports success, and the upstream refusal of a wrong credential', async () => {
  const ok = await gw.ctl(['provider', 'test', 'acme-local', '--json']);
  assert.equal(ok.code, 0, ok.stderr);
  const r = JSON.parse(ok.stdout);
  assert.equal(r.passed, true);
  assert.equal(r.status, 200);
  assert.equal(r.target, 'local/mock-small');

  assert.equal((await addProvider('beta-local', ['--tenant', 'beta', '--for', 'local', '--base-url',
    own.base, '--api-key-file', path.join(dir, 'beta.key')])).code, 0);
  const bad = await gw.ctl(['provider', 'test', 'beta-local']);
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout + bad.stderr, /beta-local: FAILED via local\/mock-small, status 401/);
  assert.ok(!bad.stdout.includes(BAD_KEY) && !gw.log().includes(BAD_KEY));
  // Bob's requests now carry his (wrong) credential, never the platform's.
  assert.equal((await gw.chat(bob, { model: 'demo' })).status, 401);
});

test('add refuses an unknown provider, another type, an unknown tenant and a second credential', async () => {
  const key = ['--api-key-file', path.join(dir, 'acme.key')];
  const cases = [
    [['x1', '--tenant', 'acme', '--for', 'nope', ...key], /no provider "nope"/],
    [['x2', '--tenant', 'acme', '--for', 'local', '--type', 'anthropic', ...key], /is of type openai, not anthropic/],
    [['x3', '--tenant', 'nobody', '--for', 'local', ...key], /no tenant "nobody"/],
    [['x4', '--tenant', 'acme', '--for', 'local', ...key], /already: "acme-local"/],
    [['x5', '--tenant', 'acme', '--for', 'local', '--base-url', 'ftp://x', ...key], /--base-url/],
    [['acme-local', '--tenant', 'acme', '--for', 'shared', ...key], /exists/],
  ];
  for (const [args, re] of cases) {
    const r = await gw.ctl(['provider', 'add', ...args.slice(0, 1), '--type', 'openai', ...args.slice(1)]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, re);
    assert.ok(!r.stderr.includes(TENANT_KEY));
  }
  const missing = await gw.ctl(['provider', 'add', 'x6', '--type', 'openai', '--tenant', 'acme']);
  assert.equal(missing.code, 2);
});

test('provider delete puts the provider credential back in force', async () => {
  assert.equal((await gw.ctl(['provider', 'delete', 'acme-shared'])).code, 0);
  assert.equal((await gw.chat(alice, { model: 'shared-model' })).status, 401);
  const r = await gw.ctl(['provider', 'delete', 'acme-shared']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no provider credential "acme-shared"/);
  const names = (await gw.ctlJson(['provider', 'list'])).map((p) => p.name);
  assert.ok(!names.includes('acme-shared'));
});

test('a provider key file that others may read is refused at start', async () => {
  const keyFile = path.join(dir, 'provider.key');
  fs.writeFileSync(keyFile, 'a'.repeat(64), { mode: 0o644 });
  fs.chmodSync(keyFile, 0o644);
  await assert.rejects(startGateway({ mock: platform, secrets: { provider_key_file: keyFile } }),
    /provider key .*provider\.key is open to others \(mode 0644\); refusing it/);
  // 0600: accepted, and the key is what the file says (64 hex digits).
  fs.chmodSync(keyFile, 0o600);
  const ok = await startGateway({ mock: platform, secrets: { provider_key_file: keyFile } });
  try {
    assert.match(ok.log(), /sealed with the key in .*provider\.key/);
  } finally {
    await ok.stop();
  }
});
