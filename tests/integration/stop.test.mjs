// stop.test.mjs - stopping: SIGTERM lets a stream in flight run to its end
// while new connections are refused, shutdown_timeout bounds that wait,
// and SIGQUIT stops at once.

import assert from 'node:assert/strict';

import { connectRefused, pidAlive, sleep, startGateway, test } from './lib/harness.mjs';

const contentOf = (res) => res.events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');
const tokens = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join('');

test('SIGTERM: a 2 s stream in flight completes, new connections are refused, exit 0', { timeout: 20000 }, async () => {
  const gw = await startGateway({ workers: 2 });
  try {
    const { key } = await gw.createKey();
    const stream = gw.chat(key, { stream: true }, { 'x-mock-chunks': '20', 'x-mock-chunk-delay-ms': '100' });
    await sleep(300);
    const workers = gw.workerPids();
    const t0 = Date.now();
    gw.signal('SIGTERM');
    await sleep(200);
    assert.equal(await connectRefused(gw.port), true, 'a new connection after the stop began is refused');
    const res = await stream;
    assert.equal(res.status, 200);
    assert.equal(res.events.at(-1).data, '[DONE]', 'the stream ran to its end');
    assert.equal(contentOf(res), tokens(20));
    const exit = await gw.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.ok(Date.now() - t0 >= 1000, 'aigwd waited for the stream');
    assert.ok(workers.every((pid) => !pidAlive(pid)), 'no worker outlives the master');
  } finally {
    await gw.stop();
  }
});

test('SIGTERM with shutdown_timeout 1s cuts a longer stream and still exits 0 in about 1 s', { timeout: 20000 }, async () => {
  const gw = await startGateway({ workers: 2, shutdownTimeout: '1s' });
  try {
    const { key } = await gw.createKey();
    // A 6 s stream: far longer than the 1 s allowed.
    const stream = gw.chat(key, { stream: true }, { 'x-mock-chunks': '60', 'x-mock-chunk-delay-ms': '100' })
      .catch((err) => ({ error: err }));
    await sleep(300);
    const t0 = Date.now();
    gw.signal('SIGTERM');
    const exit = await gw.exited;
    const took = Date.now() - t0;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.ok(took >= 900 && took < 3000, `exited ${took} ms after SIGTERM (shutdown_timeout 1s)`);
    const res = await stream;
    assert.ok(res.error || res.events?.at(-1)?.data !== '[DONE]', 'the stream was cut');
  } finally {
    await gw.stop();
  }
});

test('SIGQUIT stops at once, dropping a stream in flight', { timeout: 20000 }, async () => {
  const gw = await startGateway({ workers: 2 });
  try {
    const { key } = await gw.createKey();
    // A 6 s stream, which a graceful stop would wait for.
    const stream = gw.chat(key, { stream: true }, { 'x-mock-chunks': '60', 'x-mock-chunk-delay-ms': '100' })
      .catch((err) => ({ error: err }));
    await sleep(300);
    const workers = gw.workerPids();
    const t0 = Date.now();
    gw.signal('SIGQUIT');
    const exit = await gw.exited;
    const took = Date.now() - t0;
    assert.ok(took < 1500, `exited ${took} ms after SIGQUIT`);
    assert.equal(exit.signal, null);
    assert.equal(exit.code, 0);
    const res = await stream;
    assert.ok(res.error || res.events?.at(-1)?.data !== '[DONE]', 'the stream was dropped');
    assert.ok(workers.every((pid) => !pidAlive(pid)), 'the workers are gone');
  } finally {
    await gw.stop();
  }
});
