// systemd.test.mjs - aigwd under systemd's ways: listening sockets passed
// by socket activation (systemd-socket-activate(1) plays systemd: it binds,
// and on the first connection execs aigwd with LISTEN_FDS), reused across a
// reload; dropping root for the configured user; and the unit files in etc/
// as systemd-analyze verify sees them.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  AIGWD, BASE_MODELS, Gateway, UPSTREAM_KEY, UPSTREAM_KEY_ENV, configYaml, freePort, request,
  run, sleep, startMock, tempDir, test,
} from './lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const TOP = path.resolve(here, '../..');

const which = (...paths) => paths.find((p) => {
  try { fs.accessSync(p, fs.constants.X_OK); return true; } catch { return false; }
});
const SOCKET_ACTIVATE = which('/usr/bin/systemd-socket-activate', '/lib/systemd/systemd-socket-activate');
const ANALYZE = which('/usr/bin/systemd-analyze', '/bin/systemd-analyze');
const SETPRIV = which('/usr/bin/setpriv', '/bin/setpriv');
const NOBODY = (() => {
  try { return execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim(); } catch { return null; }
})();

// --------------------------------------------------------------- helpers

const started = new Set();
process.on('exit', () => {
  for (const p of started) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
});

// Start argv[0] with argv[1..] in the shape harness.mjs's Gateway expects
// ({proc, out, exited}); it dies with this process where setpriv exists.
function launch(argv, env) {
  const [cmd, args] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', ...argv]] : [argv[0], argv.slice(1)];
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  proc.stdout.setEncoding('utf8').on('data', (d) => { out.stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });
  started.add(proc);
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { started.delete(proc); resolve({ code, signal }); });
    proc.on('error', (error) => { started.delete(proc); resolve({ code: null, signal: null, error }); });
  });
  return { proc, out, exited };
}

function writeConfig(gw, listen, extra = '') {
  fs.writeFileSync(gw.configPath, configYaml({
    listen: listen.map((port) => `127.0.0.1:${port}`),
    stateDir: gw.stateDir,
    socket: gw.socket,
    workers: gw.workers,
    providers: [{ name: 'local', base_url: gw.mock.base, api_key_env: UPSTREAM_KEY_ENV }],
    models: BASE_MODELS,
  }) + extra);
}

// A Gateway whose aigwd is started by argv (a function of the config
// path); the caller waits for it to come up.
async function prepare({ listen, extra, dir = tempDir('aigw-sd-'), argv }) {
  const mock = await startMock();
  const gw = new Gateway({
    dir,
    port: listen[0],
    socket: path.join(dir, 'aigw.sock'),
    stateDir: path.join(dir, 'state'),
    configPath: path.join(dir, 'aigw.yaml'),
    workers: 2,
    mock,
    ownMock: true,
  });
  writeConfig(gw, listen, extra);
  gw.p = launch(argv(gw.configPath), { [UPSTREAM_KEY_ENV]: UPSTREAM_KEY });
  return gw;
}

// Wait until aigwctl status answers and the workers run.
async function ready(gw) {
  const deadline = Date.now() + 10000;
  for (;;) {
    if (gw.p.proc.exitCode !== null) throw new Error(`aigwd exited with ${gw.p.proc.exitCode}:\n${gw.log()}`);
    if ((await gw.ctl(['status']).catch(() => ({ code: -1 }))).code === 0) break;
    if (Date.now() > deadline) throw new Error(`aigwctl status did not answer within 10 s:\n${gw.log()}`);
    await sleep(50);
  }
  await gw.waitWorkers(gw.workers);
}

function connectRefused(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => { s.destroy(); resolve(false); });
    s.once('error', (err) => resolve(err.code === 'ECONNREFUSED'));
  });
}

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ------------------------------------------------------ socket activation

// Ports: http is passed by "systemd" and configured; stray is passed but
// configured nowhere; own is configured but not passed, so aigwd binds it.
const ports = {};
let gw = null;

before(async () => {
  if (!SOCKET_ACTIVATE) return;
  for (const name of ['http', 'stray', 'own', 'added']) ports[name] = await freePort();
  gw = await prepare({
    listen: [ports.http, ports.own],
    argv: (conf) => [SOCKET_ACTIVATE,
      '-l', `127.0.0.1:${ports.http}`, '-l', `127.0.0.1:${ports.stray}`, '--fdname=http:stray',
      '-E', UPSTREAM_KEY_ENV, AIGWD, '-c', conf],
  });
  // systemd-socket-activate says when it listens; aigwd is not running
  // until the first connection arrives.
  await gw.waitLog(new RegExp(`Listening on 127\\.0\\.0\\.1:${ports.stray} `), { timeoutMs: 5000 });
});

after(async () => {
  if (gw) await gw.stop();
});

const activation = { skip: SOCKET_ACTIVATE ? false : 'systemd-socket-activate is not installed' };

test('the connection that starts aigwd is answered on the socket systemd passed', activation, async () => {
  assert.doesNotMatch(gw.log(), /aigwd [\d.]+ started/, 'aigwd runs before any connection');
  const res = await request(ports.http, { path: '/v1/models' });
  assert.equal(res.status, 401, res.text);
  await ready(gw);
  assert.match(gw.log(), /systemd passed 2 sockets/);
  assert.match(gw.log(), new RegExp(`listening on 127\\.0\\.0\\.1:${ports.http}: inherited from systemd \\(fd \\d+ "http"`));
});

test('a chat request through the inherited socket succeeds', activation, async () => {
  const { key } = await gw.createKey();
  const res = await gw.chat(key);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json().object, 'chat.completion');
});

test('an address no passed socket serves is bound by aigwd itself', activation, async () => {
  assert.match(gw.log(), new RegExp(`listening on 127\\.0\\.0\\.1:${ports.own}\\n`));
  const { key } = await gw.createKey();
  const res = await request(ports.own, {
    method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${key}` },
    body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] },
  });
  assert.equal(res.status, 200, res.text);
});

test('a passed socket that matches no listen address is closed with a warning', activation, async () => {
  assert.match(gw.log(), new RegExp(`warn master: socket 127\\.0\\.0\\.1:${ports.stray} \\(fd \\d+ "stray"\\) ` +
    'from systemd matches no listen address'));
  assert.ok(await connectRefused(ports.stray), 'nobody listens on the stray socket any more');
});

test('a reload that changes the listeners keeps serving the inherited socket', activation, async () => {
  const from = gw.log().length;
  writeConfig(gw, [ports.http, ports.own, ports.added]);
  gw.signal('SIGHUP');
  await gw.waitLog(/reloaded /, { from, timeoutMs: 10000 });
  const log = gw.log().slice(from);
  assert.doesNotMatch(log, /bind\(|reload failed/);
  assert.match(log, new RegExp(`listening on 127\\.0\\.0\\.1:${ports.added}\\n`));
  await gw.waitWorkers(gw.workers);
  const { key } = await gw.createKey();
  for (const port of [ports.http, ports.added]) {
    const res = await request(port, {
      method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${key}` },
      body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(res.status, 200, `port ${port}: ${res.text}`);
  }
});

test('SIGTERM stops a socket-activated aigwd cleanly', activation, async () => {
  const r = await gw.stop();
  gw = null;
  assert.equal(r.code, 0, JSON.stringify(r));
});

// ------------------------------------------------------------- privileges

test('started as root with user: set, aigwd and its workers run as that user', {
  skip: process.getuid() !== 0 ? 'needs root' : NOBODY === null ? 'no user nobody' : false,
}, async () => {
  const port = await freePort();
  const dir = tempDir('aigw-sd-');
  fs.chmodSync(dir, 0o755); // the user must reach state_dir inside it
  const g = await prepare({ dir, listen: [port], extra: 'user: "nobody"\n', argv: (conf) => [AIGWD, '-c', conf] });
  try {
    await ready(g);
    assert.match(g.log(), /dropped privileges to user nobody \(uid \d+/);
    const uids = (pid) => /^Uid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'))[1].split(/\s+/);
    assert.deepEqual(uids(g.pid), [NOBODY, NOBODY, NOBODY, NOBODY], 'master');
    for (const w of g.workerPids()) assert.deepEqual(uids(w), [NOBODY, NOBODY, NOBODY, NOBODY], `worker ${w}`);
    assert.equal(String(fs.statSync(g.stateDir).uid), NOBODY, 'state_dir handed to the user');
    for (const f of fs.readdirSync(g.stateDir)) {
      assert.equal(String(fs.statSync(path.join(g.stateDir, f)).uid), NOBODY, f);
    }
    const { key } = await g.createKey();
    const res = await g.chat(key);
    assert.equal(res.status, 200, res.text);
  } finally {
    await g.stop();
  }
});

// ------------------------------------------------------------- unit files

test('systemd-analyze verify accepts etc/aigw.service and etc/aigw.socket', {
  skip: ANALYZE ? false : 'systemd-analyze is not installed',
}, async () => {
  const dir = tempDir('aigw-units-');
  try {
    // As make install does, with the binary that exists here.
    const service = fs.readFileSync(path.join(TOP, 'etc/aigw.service'), 'utf8');
    assert.match(service, /^ExecStart=\/usr\/local\/sbin\/aigwd -c \/etc\/aigw\/aigw\.yaml$/m);
    fs.writeFileSync(path.join(dir, 'aigw.service'), service.replaceAll('/usr/local/sbin/aigwd', AIGWD));
    fs.copyFileSync(path.join(TOP, 'etc/aigw.socket'), path.join(dir, 'aigw.socket'));
    const r = await run(ANALYZE, ['verify', '--man=no', path.join(dir, 'aigw.service'), path.join(dir, 'aigw.socket')],
      { timeoutMs: 20000 });
    // verify exits 0 even for unknown keys and bad values; it names them.
    const complaints = r.stderr.split('\n').filter((l) => /aigw\.(service|socket)/.test(l));
    assert.deepEqual(complaints, [], r.stderr);
    assert.equal(r.code, 0, r.stderr);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the socket unit listens where the example configuration does', async () => {
  const socket = fs.readFileSync(path.join(TOP, 'etc/aigw.socket'), 'utf8');
  const yaml = fs.readFileSync(path.join(TOP, 'etc/aigw.yaml'), 'utf8');
  const listen = [...socket.matchAll(/^ListenStream=(.*)$/gm)].map((m) => m[1]);
  assert.ok(listen.length > 0);
  for (const a of listen) assert.match(yaml, new RegExp(`^\\s*- "${esc(a)}"$`, 'm'), `${a} in etc/aigw.yaml`);
});
