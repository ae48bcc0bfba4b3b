// control.test.mjs - the admin socket's every command with arguments of
// every JSON type.  The master parses what aigwctl sends, and, through
// the HTTP admin API, what an admin key's holder sends; whatever the
// shape, the master must answer each request with a reply or an error
// and go on serving.  json-c aborts on an array read of a non-array, so a
// single unchecked read would take the whole gateway down.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import { startGateway, test } from './lib/harness.mjs';

let gw; let key;

before(async () => {
  gw = await startGateway({ workers: 1 });
  ({ key } = await gw.createKey({ name: 'control' }));
});
after(async () => { await gw?.stop(); });

// Every command the master knows (master/control.c, master/accounts.c)
// and every argument any of them reads.
const COMMANDS = [
  'status', 'workers', 'reload', 'usage', 'usage.stats', 'usage.detail',
  'key.create', 'key.list', 'key.show', 'key.disable', 'key.enable', 'key.delete', 'key.rotate',
  'limit.set', 'limit.show', 'limit.clear', 'quota.set', 'quota.show', 'quota.clear',
  'breaker.list', 'breaker.reset', 'endpoint.test', 'provider.add', 'provider.list',
  'provider.delete', 'provider.test', 'model.list', 'model.show', 'cache.stats', 'cache.purge',
  'capture.info', 'tenant.add', 'tenant.list', 'tenant.show', 'tenant.delete', 'user.add',
  'user.list', 'user.show', 'user.delete', 'grant', 'revoke', 'audit', 'no.such.command',
];
const ARGS = [
  'alert_at', 'api_key', 'base_url', 'by', 'calls', 'expires', 'for', 'from', 'id', 'key', 'limit',
  'model', 'models', 'name', 'ok', 'period', 'role', 'route', 'route_header', 'rpm', 'since', 'skip',
  'target', 'tenant', 'tokens', 'totals', 'tpm', 'type', 'uid', 'until_us', 'user',
];
const VALUES = [7, -1, 1.5e300, true, false, null, [], [1, 'x', {}, null], {}, { a: [] }, '', 'x'.repeat(4096)];

// One request on a connection of its own; resolves the first reply line.
function ask(socket, request) {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let data = '';
    c.setEncoding('utf8');
    c.setTimeout(10000, () => { c.destroy(); reject(new Error(`no reply to ${request.slice(0, 200)}`)); });
    c.on('connect', () => c.write(`${request}\n`));
    c.on('data', (d) => {
      data += d;
      const nl = data.indexOf('\n');
      if (nl >= 0) { c.destroy(); resolve(data.slice(0, nl)); }
    });
    c.on('error', reject);
    c.on('end', () => resolve(data));
  });
}

test('every command with arguments of every JSON type gets a reply, and the master lives', async () => {
  let replies = 0;
  for (const cmd of COMMANDS) {
    for (const v of VALUES) {
      const req = { cmd };
      for (const a of ARGS) req[a] = v;
      const line = await ask(gw.socket, JSON.stringify(req));
      const reply = JSON.parse(line);
      assert.equal(typeof reply, 'object', `${cmd} with ${JSON.stringify(v).slice(0, 40)}: ${line}`);
      assert.ok('ok' in reply || 'error' in reply || Object.keys(reply).length > 0, line);
      replies++;
    }
  }
  assert.equal(replies, COMMANDS.length * VALUES.length);
  // Acting for someone else, with the same shapes.
  for (const v of VALUES) {
    const line = await ask(gw.socket, JSON.stringify({ cmd: 'key.list', as_user: v, via_key: v }));
    assert.equal(typeof JSON.parse(line), 'object', line);
  }
  // Not JSON objects at all.
  for (const raw of ['', '[]', '7', '"status"', '{"cmd": 7}', '{"cmd": ["status"]}', '{', '\u0000']) {
    const reply = JSON.parse(await ask(gw.socket, raw));
    assert.ok(reply.error, JSON.stringify(reply));
  }
  assert.equal(await Promise.race([gw.exited, Promise.resolve('running')]), 'running', 'the master exited');
  const st = await gw.status();
  assert.ok(st.workers, JSON.stringify(st));
  const res = await gw.chat(key, {});
  assert.equal(res.status, 200, res.text);
});
