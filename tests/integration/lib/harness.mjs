// harness.mjs - run the real binaries for a test file: aigw-mock on a port
// of its own, aigwd on free loopback ports with a configuration written
// into a fresh temporary directory, and aigwctl against its admin socket.
//
// Every wait is bounded.  Processes started here are stopped by stop(), by
// the after() hooks of useGateway(), and, whatever happens, when this test
// process exits (and, where setpriv(1) exists, when it dies).  A failing
// test gets the tail of every live aigwd's log appended to its error.

import { after, before, test as nodeTest } from 'node:test';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { HttpConn, raw, request } from './http.mjs';

export { HttpConn, raw, request };
export { chunked, formatRequest, parseSse } from './http.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BUILD = path.resolve(process.env.AIGW_BUILD ?? path.join(here, '../../../build'));
export const AIGWD = path.join(BUILD, 'aigwd');
export const AIGWCTL = path.join(BUILD, 'aigwctl');
export const MOCK = path.join(BUILD, 'aigw-mock');

// The credential aigwd sends upstream for the provider "local".
export const UPSTREAM_KEY = 'sk-upstream-provider-credential-0123';
export const UPSTREAM_KEY_ENV = 'AIGW_TEST_UPSTREAM_KEY';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------ processes

const children = new Set();
const liveGateways = new Set();

function killAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAll(); process.exit(128 + os.constants.signals[sig]); });
}

// setpriv --pdeathsig makes a child die with this process even if it is
// killed outright; where setpriv is missing, the exit hook above must do.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => {
  try {
    execFileSync(p, ['--pdeathsig', 'KILL', '--', '/bin/true'], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch { return false; }
});

// Start a tracked child; stdout and stderr are collected as text.
function launch(file, args, { env = {}, stdin = 'ignore' } = {}) {
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
  const proc = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: [stdin, 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  proc.stdout.setEncoding('utf8').on('data', (d) => { out.stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { out.stderr += d; });
  children.add(proc);
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => { children.delete(proc); resolve({ code, signal }); });
    proc.on('error', (err) => { children.delete(proc); resolve({ code: null, signal: null, error: err }); });
  });
  // 'close': exited and its output pipes drained.
  const closed = new Promise((resolve) => {
    proc.on('close', (code, signal) => resolve({ code, signal }));
    proc.on('error', (err) => resolve({ code: null, signal: null, error: err }));
  });
  return { proc, out, exited, closed };
}

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// Run a program to completion: {code, signal, stdout, stderr}.
export async function run(file, args, { env = {}, timeoutMs = 10000 } = {}) {
  const { proc, out, closed } = launch(file, args, { env });
  let res;
  try {
    res = await within(closed, timeoutMs, `${path.basename(file)} ${args.join(' ')}`);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  if (res.error) throw res.error;
  return { code: res.code, signal: res.signal, stdout: out.stdout, stderr: out.stderr };
}

// Stop a process: signal, wait, and SIGKILL if it is still there.
async function terminate(p, signal = 'SIGTERM', timeoutMs = 15000) {
  if (p.proc.exitCode !== null || p.proc.signalCode !== null) return p.exited;
  p.proc.kill(signal);
  try {
    return await within(p.exited, timeoutMs, 'stop');
  } catch {
    p.proc.kill('SIGKILL');
    const r = await p.exited;
    return { ...r, timedOut: true };
  }
}

// A loopback port nobody listens on (right now).
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Is a TCP connection to 127.0.0.1:port refused?  (false: accepted.)
export function connectRefused(port, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(false); });
    s.once('error', (err) => { clearTimeout(timer); resolve(err.code === 'ECONNREFUSED'); });
  });
}

// Is process pid alive (not gone, not a zombie)?
export function pidAlive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

// Poll fn() until it returns a truthy value; returns it.  Throws after
// timeoutMs with what(last value) in the message.
export async function eventually(fn, { timeoutMs = 5000, every = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`${typeof what === 'function' ? what() : what}: not true within ${timeoutMs} ms`);
    }
    await sleep(every);
  }
}

export function tempDir(prefix = 'aigw-it-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// A full disk: a tmpfs of `size` mounted on the directory dir (made),
// and fill() to take all its room, undone by .unfill(); .unmount() at the
// end.  null and .why where it cannot be: mounting needs root (the suite
// runs as root, README) and CAP_SYS_ADMIN, which a container may not give.
function smallDisk(dir, size) {
  fs.mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    return { why: String(err.stderr ?? '').trim() || err.message };
  }
  const filler = path.join(dir, '.filler');
  return {
    fill() {
      // dd ends with "No space left on device": that is the point.
      try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' }); } catch { /* full */ }
    },
    unfill() { fs.rmSync(filler, { force: true }); },
    unmount() { execFileSync('umount', [dir]); },
  };
}

// Run fn({ root, dir, disk }) with dir = root/sub on a smallDisk of size
// (a gateway started with { dir: root } has its state directory there
// when sub is 'state'); the test is skipped, with the reason, where
// mounting is not allowed.  fn stops what it started; afterwards the
// disk is unmounted and root removed, with the segment of a gateway
// whose state directory it was.
export async function onSmallDisk(t, size, fn, sub = 'state') {
  const root = tempDir();
  const dir = path.join(root, sub);
  const disk = smallDisk(dir, size);
  if (disk.why) {
    fs.rmSync(root, { recursive: true, force: true });
    t.skip(`cannot mount a tmpfs here: ${disk.why}`);
    return;
  }
  try {
    await fn({ root, dir, disk });
  } finally {
    disk.unmount();
    const seg = shmPath(dir);
    if (seg) fs.rmSync(seg, { force: true });
    fs.rmSync(root, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ mock

// Start aigw-mock on a free port (or on port, to start one again where
// a stopped one was): {port, base, log(), stop()}.  requireKey: the
// credential every request must carry; awsKey: "ID:SECRET" that Bedrock
// requests must be signed with.
export async function startMock({ requireKey, awsKey, port = 0 } = {}) {
  const args = ['--port', String(port)];
  if (requireKey) args.push('--require-key', requireKey);
  if (awsKey) args.push('--aws-key', awsKey);
  const p = launch(MOCK, args);
  const m = await within(new Promise((resolve, reject) => {
    const check = () => {
      const hit = /listening 127\.0\.0\.1:(\d+)/.exec(p.out.stdout);
      if (hit) resolve(Number(hit[1]));
    };
    p.proc.stdout.on('data', check);
    p.exited.then((r) => reject(new Error(`aigw-mock exited early (${JSON.stringify(r)}): ${p.out.stderr}`)));
    check();
  }), 10000, 'aigw-mock start');
  return {
    port: m,
    base: `http://127.0.0.1:${m}/v1`,
    proc: p.proc,
    log: () => p.out.stderr,
    stop: () => terminate(p, 'SIGTERM', 5000),
  };
}

// Start n aigw-mock instances (see startMock), in parallel.
export function startMocks(n, opts = {}) {
  return Promise.all(Array.from({ length: n }, () => startMock(opts)));
}

// ---------------------------------------------------------------- config

const q = (s) => JSON.stringify(String(s));

// A YAML flow value: numbers and booleans as they are, objects as flow
// mappings (nested ones too), arrays as flow sequences, the rest quoted.
function flowValue(v) {
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map(flowValue).join(', ')}]`;
  if (v !== null && typeof v === 'object') return flow(v);
  return q(v);
}

function flow(obj) {
  return `{ ${Object.entries(obj).map(([k, v]) => `${k}: ${flowValue(v)}`).join(', ')} }`;
}

// The YAML text of a configuration.  providers: [{name, base_url, ...}];
// models: [{name, targets: [{provider, model, weight}], timeouts, routing,
// fallbacks, limits, safety}]; limits (top level: {key: {rpm, tpm}, model: {...}});
// safety (top level: {rules: [...], allow: {...}})
// fallbacks, limits, cache, capture}]; limits (top level: {key: {rpm, tpm}, model: {...}});
// cache and capture (the top-level mappings)
// (nested values such as a provider's health or a model's routing are written
// as flow mappings); workers: a
// number or a mapping ({start, min_spare, max_spare, max, max_requests, connections});
// logFile, accessFile (log.file, log.access_file), shutdownTimeout,
// metrics (the metrics.listen address) and adminListen (admin.listen, the
// HTTP admin API's addresses) when given.
// AIGW_TEST_CONNECTIONS=N runs every gateway with workers.connections N
// (each worker serving N connections at once) where a test does not set it.
export const TEST_CONNECTIONS = Number(process.env.AIGW_TEST_CONNECTIONS || 1);
function workersYaml(w) {
  const conns = TEST_CONNECTIONS > 1 ? TEST_CONNECTIONS : 0;
  if (w !== null && typeof w === 'object')
    return flow(conns && w.connections === undefined ? { ...w, connections: conns } : w);
  return conns ? flow({ start: w ?? 2, connections: conns }) : String(w ?? 2);
}

export function configYaml(o) {
  const lines = [
    '# written by tests/integration/lib/harness.mjs',
    `listen: [${o.listen.map(q).join(', ')}]`,
    `state_dir: ${q(o.stateDir)}`,
    `admin: { socket: ${q(o.socket)}, mode: ${q(o.adminMode ?? '0600')}` +
      `${o.adminListen ? `, listen: [${o.adminListen.map(q).join(', ')}]` : ''} }`,
    `workers: ${workersYaml(o.workers)}`,
    `log: { level: ${o.logLevel ?? 'info'}, access: ${o.access ?? true}` +
      `${o.logFile ? `, file: ${q(o.logFile)}` : ''}${o.accessFile ? `, access_file: ${q(o.accessFile)}` : ''}` +
      `${o.accessBuffer ? `, access_buffer: ${o.accessBuffer}` : ''}${o.accessFlush ? `, access_flush: ${o.accessFlush}` : ''} }`,
  ];
  if (o.shutdownTimeout) lines.push(`shutdown_timeout: ${o.shutdownTimeout}`);
  if (o.metrics) lines.push(`metrics: { listen: ${q(o.metrics)} }`);
  if (o.http) lines.push(`http: ${flow(o.http)}`);
  if (o.upstream) lines.push(`upstream: ${flow(o.upstream)}`);
  if (o.timeouts) lines.push(`timeouts: ${flow(o.timeouts)}`);
  if (o.limits) lines.push(`limits: ${flow(o.limits)}`);
  if (o.quotas) lines.push(`quotas: ${flow(o.quotas)}`);
  for (const kind of ['mcp', 'agents', 'sandboxes']) {
    if (o[kind]) lines.push(`${kind}: [${o[kind].map(flow).join(', ')}]`);
  }
  if (o.usage) lines.push(`usage: ${flow(o.usage)}`);
  if (o.safety) lines.push(`safety: ${flow(o.safety)}`);
  if (o.secrets) lines.push(`secrets: ${flow(o.secrets)}`);
  if (o.cache) lines.push(`cache: ${flow(o.cache)}`);
  if (o.capture) lines.push(`capture: ${flow(o.capture)}`);
  lines.push('providers:');
  for (const p of o.providers) lines.push(`  - ${flow({ type: 'openai', ...p })}`);
  lines.push('models:');
  for (const m of o.models) {
    lines.push(`  - name: ${q(m.name)}`);
    if (m.type) lines.push(`    type: ${m.type}`);
    if (m.context_length) lines.push(`    context_length: ${m.context_length}`);
    if (m.timeouts) lines.push(`    timeouts: ${flow(m.timeouts)}`);
    if (m.routing) lines.push(`    routing: ${flow(m.routing)}`);
    if (m.fallbacks) lines.push(`    fallbacks: ${flowValue(m.fallbacks)}`);
    if (m.limits) lines.push(`    limits: ${flow(m.limits)}`);
    if (m.safety) lines.push(`    safety: ${flowValue(m.safety)}`);
    if (m.cache) lines.push(`    cache: ${flow(m.cache)}`);
    if (m.capture !== undefined) lines.push(`    capture: ${m.capture}`);
    lines.push('    targets:');
    for (const t of m.targets) lines.push(`      - ${flow(t)}`);
  }
  return lines.join('\n') + '\n';
}

// The models every gateway serves, besides those a test adds.
export const BASE_MODELS = [
  { name: 'demo', targets: [{ provider: 'local', model: 'mock-small' }] },
  { name: 'other', targets: [{ provider: 'local', model: 'mock-large' }] },
  { name: 'demo-embed', targets: [{ provider: 'local', model: 'mock-embed-v1' }] },
];

// --------------------------------------------------------------- gateway

const dash = (v) => (v === '-' || v === undefined ? null : v);

// One access-log line as a record (see Gateway.accessRecord), or null.
export function parseAccessLine(line) {
  const brace = line.indexOf('{');
  if (brace >= 0 && /"request_id"/.test(line)) {
    let j;
    try { j = JSON.parse(line.slice(brace)); } catch { return null; }
    return {
      id: j.request_id, method: j.method, path: j.path, status: j.status,
      key: j.key_id ?? null, model: j.model ?? null, target: j.target ?? null,
      stream: j.stream ? 1 : 0, in: j.input_tokens, out: j.output_tokens,
      ttfb_ms: j.ttfb_ms, ms: j.duration_ms, reason: j.reason, byok: j.byok, line,
    };
  }
  const short = /\breq=(\S+) status=(\d+) \((.*)\)$/.exec(line);
  if (short) return { id: short[1], status: Number(short[2]), reason: short[3], line };
  const m = /\breq=(\S+) (\S+) (\S+) (status=.*)$/.exec(line);
  if (!m) return null;
  const f = Object.fromEntries(m[4].split(' ').map((kv) => kv.split('=')));
  return {
    id: m[1], method: m[2], path: m[3], status: Number(f.status),
    key: dash(f.key), model: dash(f.model), target: dash(f.target),
    stream: Number(f.stream), in: Number(f.in), out: Number(f.out),
    ttfb_ms: Number(f.ttfb_ms), ms: Number(f.ms), line,
  };
}

// {configured, alive} from `aigwctl status --json`: the documented
// "workers" and "workers_alive" numbers, or a "workers" object of counts
// by state.
export function workerCounts(st) {
  const w = st.workers;
  if (w !== null && typeof w === 'object') {
    // Every state of a running worker counts, not starting or stopping
    // (configured and max are sizes of the pool, not states).
    const alive = Object.entries(w)
      .filter(([state]) => !['configured', 'max', 'starting', 'stopping'].includes(state))
      .reduce((sum, [, n]) => sum + n, 0);
    return { configured: w.configured, alive };
  }
  return { configured: w, alive: st.workers_alive };
}

export class Gateway {
  // Use startGateway().
  constructor(fields) {
    Object.assign(this, fields);
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.p.proc.pid;
  }

  log() {
    return this.p.out.stderr;
  }

  // Wait until the log matches re (from offset `from`); returns the match.
  async waitLog(re, { timeoutMs = 5000, from = 0 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.log().slice(from));
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`log did not match ${re} within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  // The access-log record of request id, once written, as
  // {id, method, path, status, key, model, target, stream, in, out,
  // ttfb_ms, ms, reason, line}.  Reads the documented line
  //   req=ID METHOD PATH status=N key=K model=M target=P/M stream=0|1 in=N out=N ttfb_ms=N ms=N
  // (or "req=ID status=N (Reason)" for a request that could not be parsed),
  // and also a JSON line with request_id, key_id, input_tokens, ...
  async accessRecord(id, { timeoutMs = 5000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const line of this.log().split('\n')) {
        const rec = parseAccessLine(line);
        if (rec && rec.id === id) return rec;
      }
      if (Date.now() > deadline) throw new Error(`no access-log record for request ${id} within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  // aigwctl -s SOCKET args...: {code, stdout, stderr}.
  ctl(args, { env = {}, socket = this.socket } = {}) {
    return run(AIGWCTL, socket === null ? args : ['-s', socket, ...args], { env });
  }

  async ctlJson(args) {
    const r = await this.ctl([...args, '--json']);
    if (r.code !== 0) throw new Error(`aigwctl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  // Create a key: {id, key, name}.  route: the routing strategy the key
  // is bound to (--route); routeHeader: it may choose one per request with
  // x-aigw-route (--route-header).
  async createKey({ name = `test-${Math.random().toString(36).slice(2, 8)}`, models, route, routeHeader } = {}) {
    const args = ['key', 'create', '--name', name];
    if (models) args.push('--models', models.join(','));
    if (route) args.push('--route', route);
    if (routeHeader) args.push('--route-header');
    return this.ctlJson(args);
  }

  status() {
    return this.ctlJson(['status']);
  }

  // Write the configuration file again with the fields of change (those
  // of configYaml) replacing the running ones; takes effect on a reload.
  // Returns the new configuration object.
  rewriteConfig(change = {}) {
    this.cfg = { ...this.cfg, ...change };
    fs.writeFileSync(this.configPath, configYaml(this.cfg));
    return this.cfg;
  }

  // Process ids of the master's children, from /proc.
  workerPids() {
    const pids = [];
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      let stat;
      try { stat = fs.readFileSync(`/proc/${name}/stat`, 'latin1'); } catch { continue; }
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === this.pid && fields[0] !== 'Z') pids.push(Number(name));
    }
    return pids.sort((a, b) => a - b);
  }

  // Wait until `count` workers are alive (per the master and /proc).
  async waitWorkers(count = this.workers, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.status().catch(() => null);
      const pids = this.workerPids();
      if (st && workerCounts(st).alive === count && pids.length === count) return pids;
      if (Date.now() > deadline) {
        throw new Error(`expected ${count} workers; status ${JSON.stringify(st)}, /proc children ${pids}`);
      }
      await sleep(50);
    }
  }

  // An HTTP request on a connection of its own (see http.mjs request()).
  request(opts) {
    return request(this.port, opts);
  }

  // POST body to path with the key; body objects are sent as JSON.
  post(path, key, body, headers = {}) {
    const h = { ...headers };
    if (key) h.Authorization = `Bearer ${key}`;
    return this.request({ method: 'POST', path, headers: h, body });
  }

  chat(key, body, headers) {
    return this.post('/v1/chat/completions', key, { model: 'demo', messages: [{ role: 'user', content: 'hello there' }], ...body }, headers);
  }

  get(path, key, headers = {}) {
    const h = { ...headers };
    if (key) h.Authorization = `Bearer ${key}`;
    return this.request({ method: 'GET', path, headers: h });
  }

  conn() {
    return HttpConn.open(this.port);
  }

  // A request to the HTTP admin API (the first admin.listen address, see
  // startGateway's adminApi): method, path under /admin/v1, the API key,
  // and a body (objects are sent as JSON).
  admin(method, path, key, body) {
    if (!this.adminPort) throw new Error('this gateway has no admin.listen (startGateway adminApi)');
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    return request(this.adminPort, { method, path: `/admin/v1${path}`, headers, body });
  }

  // Has the master exited?  Resolves {code, signal}.
  get exited() {
    return this.p.exited;
  }

  signal(sig) {
    process.kill(this.pid, sig);
  }

  // Stop aigwd (SIGTERM; SIGKILL after timeoutMs), its mock if it owns
  // it, and remove the temporary directory.  Returns aigwd's exit.
  async stop({ signal = 'SIGTERM', timeoutMs = 15000, keepDir = false } = {}) {
    const r = await terminate(this.p, signal, timeoutMs);
    liveGateways.delete(this);
    if (this.ownMock) await this.mock.stop();
    if (!keepDir) {
      // A master that was killed leaves its segment for the next one; no
      // next one comes for a test directory, so remove it with the rest.
      const seg = shmPath(this.stateDir);
      if (seg) fs.rmSync(seg, { force: true });
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    // Under `make asan` a sanitizer report from any aigwd process (master,
    // worker, endpoint-test child) fails the test that stopped it.
    const report = /^(==\d+==ERROR: \w+Sanitizer|.*runtime error: |SUMMARY: \w+Sanitizer)/m.exec(this.log());
    if (report) throw new Error(`aigwd sanitizer report: ${report[0]}\n${logTail(this.log())}`);
    return r;
  }
}

// Write a configuration and start aigwd on it; resolves once aigwctl
// status answers and every worker runs.
//
// opts: workers (a number or a mapping, see configYaml), http, timeouts, limits, secrets,
// upstream, logFile, accessFile, shutdownTimeout, metrics, adminApi (true: an
// admin.listen address on a free port, gw.adminPort; gw.admin() calls it),
// usage (retention: {detail_days, aggregate_days}), models (added to BASE_MODELS),
// opts: workers (a number or a mapping, see configYaml), http, timeouts, limits, cache, capture,
// upstream, logFile, accessFile, shutdownTimeout, metrics, models (added to BASE_MODELS),
// providers (added to "local"), mock (an aigw-mock to use; else one is
// started and owned), requireKey (for an owned mock), adminMode, pidfile
// (true: -p DIR/aigwd.pid), env, listen (extra addresses); dir and port to
// start again on the state of a gateway stopped with keepDir.
export async function startGateway(opts = {}) {
  const dir = opts.dir ?? tempDir();
  const mock = opts.mock ?? await startMock({ requireKey: opts.requireKey });
  const port = opts.port ?? await freePort();
  const adminPort = opts.adminApi ? (opts.adminPort ?? await freePort()) : undefined;
  const socket = path.join(dir, 'aigw.sock');
  const stateDir = path.join(dir, 'state');
  const configPath = path.join(dir, 'aigw.yaml');
  // A mapping starts `start` workers (the harness's default 2 if unsaid).
  const pool = opts.workers !== null && typeof opts.workers === 'object' ? opts.workers : null;
  const workers = pool ? (pool.start ?? 2) : (opts.workers ?? 2);
  const cfg = {
    listen: [`127.0.0.1:${port}`, ...(opts.listen ?? [])],
    stateDir,
    socket,
    adminMode: opts.adminMode,
    workers: pool ?? workers,
    logLevel: opts.logLevel,
    logFile: opts.logFile,
    accessFile: opts.accessFile,
    accessBuffer: opts.accessBuffer,
    accessFlush: opts.accessFlush,
    shutdownTimeout: opts.shutdownTimeout,
    metrics: opts.metrics,
    adminListen: adminPort ? [`127.0.0.1:${adminPort}`] : undefined,
    http: opts.http,
    upstream: opts.upstream,
    timeouts: opts.timeouts,
    limits: opts.limits,
    quotas: opts.quotas,
    mcp: opts.mcp,
    agents: opts.agents,
    sandboxes: opts.sandboxes,
    usage: opts.usage,
    safety: opts.safety,
    secrets: opts.secrets,
    cache: opts.cache,
    capture: opts.capture,
    providers: [
      { name: 'local', base_url: mock.base, api_key_env: UPSTREAM_KEY_ENV },
      ...(opts.providers ?? []),
    ],
    models: [...BASE_MODELS, ...(opts.models ?? [])],
  };
  fs.writeFileSync(configPath, configYaml(cfg));
  const args = ['-c', configPath];
  const pidfile = opts.pidfile ? path.join(dir, 'aigwd.pid') : undefined;
  if (pidfile) args.push('-p', pidfile);
  const p = launch(AIGWD, args, { env: { [UPSTREAM_KEY_ENV]: UPSTREAM_KEY, ...(opts.env ?? {}) } });
  const gw = new Gateway({
    dir, port, adminPort, socket, stateDir, configPath, pidfile, workers, mock, ownMock: !opts.mock, p, cfg,
  });
  liveGateways.add(gw);
  try {
    const deadline = Date.now() + 10000;
    for (;;) {
      if (p.proc.exitCode !== null) throw new Error(`aigwd exited with ${p.proc.exitCode}`);
      const r = await gw.ctl(['status']).catch(() => ({ code: -1 }));
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error('aigwctl status did not answer within 10 s');
      await sleep(50);
    }
    await gw.waitWorkers(workers);
  } catch (err) {
    err.message += `\n--- ${configPath} ---\n${fs.readFileSync(configPath, 'utf8')}--- aigwd log ---\n${gw.log()}`;
    await gw.stop();
    throw err;
  }
  return gw;
}

// A gateway for the whole test file: started before the first test,
// stopped after the last.  Returns an object whose .gw is the gateway;
// setup(gw, ctx), if given, runs once it is up (in the same hook: node:test
// does not promise to finish one before() before starting the next).
export function useGateway(opts = {}, setup = undefined) {
  const ctx = { gw: null };
  before(async () => {
    ctx.gw = await startGateway(opts);
    if (setup) await setup(ctx.gw, ctx);
  });
  after(async () => { if (ctx.gw) await ctx.gw.stop(); });
  return ctx;
}

// --------------------------------------------------------------- tests

// /dev/shm path of the segment aigwd names after state_dir (shm/segment.c:
// "/aigw-" and the first 8 bytes of the SHA-256 of the real path, in hex).
export function shmPath(stateDir) {
  let real;
  try { real = fs.realpathSync(stateDir); } catch { return null; }
  return `/dev/shm/aigw-${crypto.createHash('sha256').update(real).digest('hex').slice(0, 16)}`;
}

function logTail(text, lines = 60) {
  return text.split('\n').slice(-lines - 1).join('\n');
}

// node:test's test() with a default timeout, and, when the test fails, the
// tail of every live aigwd's log attached to the error.
export function test(name, opts, fn) {
  if (typeof opts === 'function') [opts, fn] = [{}, opts];
  return nodeTest(name, { timeout: 30000, ...opts }, async (t) => {
    try {
      return await fn(t);
    } catch (err) {
      const dumps = [...liveGateways].map((gw) =>
        `--- aigwd log (${gw.configPath}), last lines ---\n${logTail(gw.log())}`);
      if (dumps.length) {
        const text = `\n${dumps.join('\n')}`;
        let attached = false;
        if (err instanceof Error) {
          try { err.message += text; attached = true; } catch { /* read-only */ }
        }
        if (!attached) process.stderr.write(`\n# ${name}: failed${text}\n`);
      }
      throw err;
    }
  });
}

// An error answer in OpenAI's shape, checked field by field.
export function assertError(assert, res, status, code, { type, param } = {}) {
  assert.equal(res.status, status, `status: ${res.status} ${res.text}`);
  assert.match(res.headers['content-type'] ?? '', /application\/json/);
  const body = res.json();
  assert.ok(body.error, `no "error" in ${res.text}`);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  assert.equal(typeof body.error.type, 'string');
  assert.ok('param' in body.error, `no "param" in ${res.text}`);
  assert.ok('code' in body.error, `no "code" in ${res.text}`);
  if (code !== undefined) assert.equal(body.error.code, code, res.text);
  if (type !== undefined) assert.equal(body.error.type, type, res.text);
  if (param !== undefined) assert.equal(body.error.param, param, res.text);
  assert.ok(res.headers['x-request-id'], 'every response has x-request-id');
  return body.error;
}
