// logs.test.mjs - the error log with levels and the JSON access log, in
// files of their own that reopen on SIGUSR1 (logrotate), never holding a
// secret or a prompt.

import assert from 'node:assert/strict';
import { after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';

import {
  HttpConn, UPSTREAM_KEY, eventually, onSmallDisk, sleep, startGateway, tempDir, test, useGateway,
} from './lib/harness.mjs';

const PROMPT = 'the secret plan is xylophone-quartz-7731';
const FIELDS = ['time', 'request_id', 'key_id', 'tenant', 'model', 'target', 'status',
  'input_tokens', 'output_tokens', 'ttfb_ms', 'duration_ms', 'bytes'];

const logDir = tempDir('aigw-logs-');
const errorLog = path.join(logDir, 'error.log');
const accessLog = path.join(logDir, 'access.log');
const ctx = useGateway({ workers: 2, logFile: errorLog, accessFile: accessLog },
  async (gw, c) => { c.k = await gw.createKey(); });
after(() => fs.rmSync(logDir, { recursive: true, force: true }));

const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '');
const records = (file) => read(file).split('\n').filter(Boolean).map((l) => JSON.parse(l));

// Wait until file has a record of request id; returns it.
function recordOf(file, id) {
  return eventually(() => records(file).find((r) => r.request_id === id),
    { timeoutMs: 3000, what: `access record ${id} in ${file}` });
}

test('each request is one JSON line in log.access_file with the documented fields', async () => {
  const { gw, k } = ctx;
  const res = await gw.chat(k.key, { messages: [{ role: 'user', content: PROMPT }] }, { 'x-request-id': 'logs-plain-1' });
  assert.equal(res.status, 200);
  const streamed = await gw.chat(k.key, { stream: true, stream_options: { include_usage: true } }, { 'x-request-id': 'logs-stream-1' });
  assert.equal(streamed.status, 200);
  const rec = await recordOf(accessLog, 'logs-plain-1');
  for (const f of FIELDS) assert.ok(f in rec, `"${f}" in ${JSON.stringify(rec)}`);
  assert.ok(!Number.isNaN(Date.parse(rec.time)), rec.time);
  assert.equal(rec.key_id, k.id);
  assert.equal(rec.model, 'demo');
  assert.equal(rec.target, 'local/mock-small');
  assert.equal(rec.status, 200);
  const u = res.json().usage;
  assert.equal(rec.input_tokens, u.prompt_tokens);
  assert.equal(rec.output_tokens, u.completion_tokens);
  assert.ok(rec.ttfb_ms >= 0 && rec.duration_ms >= rec.ttfb_ms);
  assert.ok(rec.bytes > 0);
  const srec = await recordOf(accessLog, 'logs-stream-1');
  assert.equal(srec.output_tokens, streamed.events.find((e) => e.json?.usage).json.usage.completion_tokens);
  // One line per request, nothing else in the file.
  const lines = read(accessLog).split('\n').filter(Boolean);
  assert.equal(lines.length, records(accessLog).length);
  assert.equal(new Set(records(accessLog).map((r) => r.request_id)).size, lines.length);
  assert.equal(gw.log().includes('logs-plain-1'), false, 'the access log does not go to stderr too');
});

test('a request on a keep-alive connection is timed from its first byte, not from the wait for it', async () => {
  const { gw, k } = ctx;
  const conn = await HttpConn.open(gw.port);
  try {
    for (const id of ['logs-ka-1', 'logs-ka-2']) {
      await conn.send({
        method: 'POST', path: '/v1/chat/completions',
        headers: { Authorization: `Bearer ${k.key}`, 'x-request-id': id },
        body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] },
      });
      const res = await conn.readResponse();
      assert.equal(res.status, 200);
      // The connection then sits idle for 1.2 s before the next request.
      if (id === 'logs-ka-1') await sleep(1200);
    }
  } finally {
    conn.close();
  }
  const second = await recordOf(accessLog, 'logs-ka-2');
  assert.ok(second.duration_ms < 600, `duration_ms ${second.duration_ms} counts the idle time`);
  assert.ok(second.ttfb_ms < 600, `ttfb_ms ${second.ttfb_ms} counts the idle time`);
});

test('the error log goes to log.file with a level and who logs on each line', async () => {
  const text = await eventually(() => (/ started: /.test(read(errorLog)) ? read(errorLog) : null), { what: 'the start in error.log' });
  for (const line of text.split('\n').filter(Boolean)) {
    assert.match(line, /^\S+ (error|warn|info|debug) (master|worker\[\d+\]): /, line);
  }
});

test('neither log holds the API key, the upstream credential or the prompt', async () => {
  const { gw, k } = ctx;
  // A failed attempt with a wrong key is logged too, and must not echo it.
  assert.equal((await gw.chat(`${k.key}x`, {}, { 'x-request-id': 'logs-badkey-1' })).status, 401);
  await recordOf(accessLog, 'logs-badkey-1');
  for (const [name, text] of [['access log', read(accessLog)], ['error log', read(errorLog)], ['stderr', ctx.gw.log()]]) {
    assert.equal(text.includes(k.key), false, `the ${name} holds the API key`);
    assert.equal(text.includes(k.key.slice(-20)), false, `the ${name} holds part of the API key`);
    assert.equal(text.includes(UPSTREAM_KEY), false, `the ${name} holds the upstream credential`);
    assert.equal(text.includes('xylophone-quartz'), false, `the ${name} holds the prompt`);
  }
});

test('after mv and SIGUSR1, new lines go to new files at the original paths', async () => {
  const { gw, k } = ctx;
  fs.renameSync(accessLog, `${accessLog}.1`);
  fs.renameSync(errorLog, `${errorLog}.1`);
  gw.signal('SIGUSR1');
  await eventually(() => /SIGUSR1/.test(read(`${errorLog}.1`)) || /SIGUSR1/.test(read(errorLog)),
    { what: 'the master saw SIGUSR1' });
  await sleep(200);
  assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'logs-rotated-1' })).status, 200);
  await recordOf(accessLog, 'logs-rotated-1');
  assert.equal(records(`${accessLog}.1`).some((r) => r.request_id === 'logs-rotated-1'), false,
    'the rotated access log gets no new line');
  assert.equal((await gw.ctl(['reload'])).code, 0);
  await eventually(() => /reloaded/.test(read(errorLog)), { what: 'the error log reopened at its path' });
  assert.equal(/reloaded/.test(read(`${errorLog}.1`)), false, 'the rotated error log gets no new line');
  assert.equal(fs.statSync(accessLog).mode & 0o007, 0, 'the access log is not open to others');
});

test('log.access_file set on reload moves the access log there', async () => {
  const gw = await startGateway({ workers: 1 });
  const dir = tempDir('aigw-logs-');
  try {
    const k = await gw.createKey();
    assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'before-move' })).status, 200);
    await gw.accessRecord('before-move');
    const file = path.join(dir, 'moved-access.log');
    gw.rewriteConfig({ accessFile: file });
    assert.equal((await gw.ctl(['reload'])).code, 0);
    assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'after-move' })).status, 200);
    await recordOf(file, 'after-move');
  } finally {
    await gw.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('log.access_buffer: lines are written in batches, access_flush late at most, into the rotated file on SIGUSR1, and all of them when the worker stops', async () => {
  const dir = tempDir('aigw-logs-');
  const file = path.join(dir, 'access.log');
  const gw = await startGateway({ workers: 1, accessFile: file, accessBuffer: '64k', accessFlush: '1s' });
  try {
    const k = await gw.createKey();
    // Held back at first, written once the line is a second old.
    assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'buf-1' })).status, 200);
    assert.equal(records(file).some((r) => r.request_id === 'buf-1'), false,
      'the line is held back, not written at once');
    await eventually(() => records(file).find((r) => r.request_id === 'buf-1'),
      { timeoutMs: 4000, what: 'the held line written after access_flush' });

    // Lines held when the file is rotated go to the file rotated out.
    assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'buf-before-rotation' })).status, 200);
    fs.renameSync(file, `${file}.1`);
    gw.signal('SIGUSR1');
    await eventually(() => records(`${file}.1`).find((r) => r.request_id === 'buf-before-rotation'),
      { timeoutMs: 4000, what: 'the held line in the rotated file' });
    assert.equal((await gw.chat(k.key, {}, { 'x-request-id': 'buf-after-rotation' })).status, 200);
    await eventually(() => records(file).find((r) => r.request_id === 'buf-after-rotation'),
      { timeoutMs: 4000, what: 'the next line in the new file' });

    // A graceful stop writes every line held.
    const ids = Array.from({ length: 20 }, (_, i) => `buf-burst-${i}`);
    for (const id of ids) assert.equal((await gw.chat(k.key, {}, { 'x-request-id': id })).status, 200);
  } finally {
    await gw.stop();
  }
  try {
    const seen = new Set(records(file).map((r) => r.request_id));
    for (let i = 0; i < 20; i++) assert.ok(seen.has(`buf-burst-${i}`), `buf-burst-${i} written at the stop`);
    assert.equal(records(file).length, 21, 'each line once, whole');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// log.access_file on a full disk (a tmpfs of its own, filled; skipped,
// with the reason, where mounting is not allowed).
test('a full disk under log.access_file: requests are served and the failure is logged once, not per line', (t) =>
  onSmallDisk(t, '1m', async ({ dir, disk }) => {
    const file = path.join(dir, 'access.log');
    const errFile = path.join(logDir, 'error-full.log');
    let gw;
    try {
      gw = await startGateway({ workers: 1, accessFile: file, logFile: errFile });
      const { key } = await gw.createKey();
      assert.equal((await gw.chat(key, {}, { 'x-request-id': 'full-before' })).status, 200);
      await recordOf(file, 'full-before');

      disk.fill();
      for (let i = 0; i < 50; i++) assert.equal((await gw.chat(key, {})).status, 200);
      const failures = () => read(errFile).split('\n').filter((l) => /access log write failed/.test(l));
      await eventually(() => failures().length > 0, { what: 'the failure logged' });
      await sleep(200);
      assert.equal(failures().length, 1, failures().join('\n'));
      assert.match(failures()[0], /access log write failed: No space left on device \(\d+ bytes of lines lost\) \(the next like it comes a minute later at the earliest\)/);

      // The line the disk filled up in is cut short; every other is whole.
      disk.unfill();
      assert.equal((await gw.chat(key, {}, { 'x-request-id': 'full-after' })).status, 200);
      const lines = () => read(file).split('\n').filter(Boolean).map((l) => {
        try { return JSON.parse(l); } catch { return null; }
      });
      await eventually(() => lines().some((r) => r?.request_id === 'full-after'), { what: 'the line after' });
      assert.ok(lines().filter((r) => r === null).length <= 1, read(file));
      assert.equal(lines().filter((r) => r?.request_id === 'full-before').length, 1);
    } finally {
      await gw?.stop();
    }
  }, 'small'));
