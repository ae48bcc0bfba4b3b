// usage.test.mjs - usage is never lost: every request a client received
// whole is counted once in `aigwctl usage`, even when the master is killed
// with SIGKILL in the middle of a load and started again.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  eventually, pidAlive, sleep, startGateway, startMock, test,
} from './lib/harness.mjs';

let mock;
before(async () => { mock = await startMock(); });
after(async () => { await mock?.stop(); });

const STREAM = { stream: true, stream_options: { include_usage: true } };

// The usage the client saw in a complete answer, or null when the answer
// was not complete (an error, a cut stream, a refused connection).
function usageOf(res, stream) {
  if (res.status !== 200) return null;
  if (!stream) return res.json().usage ?? null;
  if (res.events?.at(-1)?.data !== '[DONE]') return null;
  return res.events.find((e) => e.json?.usage)?.json.usage ?? null;
}

function tally() {
  return { requests: 0, input_tokens: 0, output_tokens: 0, streams: 0, failed: 0 };
}

function add(t, u, stream) {
  t.requests++;
  t.input_tokens += u.prompt_tokens;
  t.output_tokens += u.completion_tokens;
  if (stream) t.streams++;
}

const totals = (t) => ({ requests: t.requests, input_tokens: t.input_tokens, output_tokens: t.output_tokens });

test('usage --json has exactly the totals requests, input_tokens and output_tokens', async () => {
  const gw = await startGateway({ workers: 2, mock });
  try {
    const empty = await gw.ctlJson(['usage']);
    assert.deepEqual(empty, { requests: 0, input_tokens: 0, output_tokens: 0 });
    const { key } = await gw.createKey();
    const want = tally();
    const plans = [
      [{}, {}], [{ messages: [{ role: 'user', content: 'one two three four' }] }, { 'x-mock-chunks': '7' }],
      [STREAM, { 'x-mock-chunks': '3' }],
    ];
    for (const [body, headers] of plans) {
      const res = await gw.chat(key, body, headers);
      const u = usageOf(res, !!body.stream);
      assert.ok(u, `a complete answer: ${res.status} ${res.text}`);
      add(want, u, !!body.stream);
    }
    // An unauthenticated request is no one's usage.
    assert.equal((await gw.chat('sk-not-a-key', {})).status, 401);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests === want.requests,
      { timeoutMs: 3000, what: 'usage counts the 3 requests' });
    const u = await gw.ctlJson(['usage']);
    assert.deepEqual(Object.keys(u).sort(), ['input_tokens', 'output_tokens', 'requests']);
    assert.deepEqual(u, totals(want));
  } finally {
    await gw.stop();
  }
});

test('a master killed with SIGKILL mid-load loses no usage and counts none twice once started again', { timeout: 60000 }, async () => {
  let gw = await startGateway({ workers: 3, mock });
  try {
    const { key } = await gw.createKey();
    const got = tally();
    let stop = false;
    // Four clients in a loop: two streaming, two not, each answer ~20 ms
    // late, streams a little longer.
    const client = async (stream) => {
      while (!stop) {
        const body = stream ? STREAM : {};
        const headers = { 'x-mock-delay-ms': '20', ...(stream ? { 'x-mock-chunk-delay-ms': '15' } : {}) };
        let res;
        try {
          res = await gw.chat(key, body, headers);
        } catch {
          got.failed++;
          continue;
        }
        const u = usageOf(res, stream);
        if (u) add(got, u, stream);
        else got.failed++;
      }
    };
    const clients = [client(true), client(false), client(true), client(false)];
    await eventually(() => got.requests >= 40 && got.streams >= 10, { timeoutMs: 10000, what: 'the load runs' });

    const workers = gw.workerPids();
    gw.signal('SIGKILL');
    stop = true; // no request starts after the kill
    await gw.exited;
    const { dir, port } = gw;
    await gw.stop({ keepDir: true });
    await Promise.all(clients);

    // Its workers finish what they hold, then exit by themselves.
    await eventually(() => workers.every((pid) => !pidAlive(pid)),
      { timeoutMs: 5000, what: () => `old workers gone (${workers.filter(pidAlive)})` });

    gw = await startGateway({ workers: 3, mock, dir, port });
    const want = totals(got);
    let seen;
    try {
      await eventually(async () => {
        seen = await gw.ctlJson(['usage']);
        return seen.requests >= want.requests;
      }, { timeoutMs: 5000 });
    } catch { /* compared below */ }
    // Two drain periods more: nothing counted twice arrives late.
    await sleep(1200);
    seen = await gw.ctlJson(['usage']);
    assert.deepEqual(seen, want, `usage after the crash vs what ${want.requests} complete answers ` +
      `reported (${got.streams} streams; ${got.failed} requests failed at the kill)`);
  } finally {
    await gw.stop();
  }
});

test('usage equals what the mock reported, streaming and not, across a reload and a worker killed with SIGKILL', { timeout: 60000 }, async () => {
  const gw = await startGateway({ workers: 2, mock, usage: { detail_days: 1, aggregate_days: 1 } });
  try {
    const { key } = await gw.createKey();
    const want = tally();
    const round = async (n) => {
      for (let i = 0; i < n; i++) {
        const stream = i % 2 === 1;
        const res = await gw.chat(key, stream ? STREAM : {}, { 'x-mock-chunks': String(2 + i) });
        const u = usageOf(res, stream);
        assert.ok(u, `a complete answer: ${res.status} ${res.text}`);
        add(want, u, stream);
      }
    };
    await round(4);
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await round(4);
    // Between requests: a worker dies hard; the master replaces it.
    const [victim] = gw.workerPids();
    process.kill(victim, 'SIGKILL');
    await eventually(() => !pidAlive(victim), { timeoutMs: 5000, what: 'the worker is gone' });
    await gw.waitWorkers(2);
    await round(4);
    assert.equal(want.streams, 6);
    await eventually(async () => (await gw.ctlJson(['usage'])).requests >= want.requests,
      { timeoutMs: 3000, what: `usage counts the ${want.requests} requests` });
    assert.deepEqual(await gw.ctlJson(['usage']), totals(want));
    // The statistics and the records say the same, and nothing of today
    // is pruned by a retention of one day.
    await sleep(1200);
    const byDay = await gw.ctlJson(['usage', '--by', 'day']);
    assert.deepEqual({ requests: byDay.totals.requests, input_tokens: byDay.totals.input_tokens,
      output_tokens: byDay.totals.output_tokens }, totals(want));
    const detail = await gw.ctlJson(['usage', '--detail', '--limit', '0']);
    assert.equal(detail.rows.length, want.requests);
    assert.equal(detail.rows.filter((x) => x.status === 200).length, want.requests);
  } finally {
    await gw.stop();
  }
});
