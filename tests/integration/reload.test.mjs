// reload.test.mjs - SIGHUP and `aigwctl reload` while clients keep
// working: new routing generations, refused configurations, listeners
// added and removed, and a pool resized, without failing a request.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after } from 'node:test';

import {
  BASE_MODELS, connectRefused, eventually, freePort, request, sleep, test, useGateway,
} from './lib/harness.mjs';

const ctx = useGateway({ workers: 4 }, async (gw, c) => { c.key = (await gw.createKey()).key; });

const CONTENT = 'tok0 tok1 tok2 tok3 tok4 ';

// Loads still running; stopped after the last test whatever happened.
const loads = new Set();
after(() => Promise.all([...loads].map((l) => l.stop())));

// Four clients in a loop, two streaming and two not, against port (the
// gateway's own by default), until stop() or for 30 s at most; stop()
// resolves to {ok, bad: [descriptions of the requests that did not
// succeed whole]}.
function startLoad(gw, key, port = gw.port) {
  const res = { ok: 0, bad: [] };
  const until = Date.now() + 30000;
  let stopped = false;
  const one = async (stream) => {
    while (!stopped && Date.now() < until) {
      const headers = {
        Authorization: `Bearer ${key}`,
        ...(stream ? { 'x-mock-chunk-delay-ms': '25' } : { 'x-mock-delay-ms': '20' }),
      };
      const body = { model: 'demo', messages: [{ role: 'user', content: 'hi' }], stream };
      try {
        const r = await request(port, { method: 'POST', path: '/v1/chat/completions', headers, body });
        let content;
        if (r.status === 200 && stream) {
          if (r.events.at(-1)?.data === '[DONE]') {
            content = r.events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');
          }
        } else if (r.status === 200) {
          content = r.json().choices[0].message.content;
        }
        if (content === CONTENT) res.ok++;
        else res.bad.push(`${stream ? 'stream' : 'plain'}: ${r.status} ${r.text.slice(0, 300)}`);
      } catch (err) {
        res.bad.push(`${stream ? 'stream' : 'plain'}: ${err.message}`);
        await sleep(20); // a gateway that is gone must not make this spin
      }
    }
  };
  const clients = [one(true), one(false), one(true), one(false)];
  const load = {
    res,
    stop: async () => { stopped = true; await Promise.all(clients); loads.delete(load); return res; },
  };
  loads.add(load);
  return load;
}

const added = (n) => ({ name: `added-${n}`, targets: [{ provider: 'local', model: 'mock-small' }] });

async function reloadBySignal(gw, generation) {
  gw.signal('SIGHUP');
  await eventually(async () => (await gw.status()).generation === generation,
    { timeoutMs: 5000, what: `generation ${generation} after SIGHUP` });
}

test('ten reloads by aigwctl and SIGHUP under streaming and plain load fail no request', { timeout: 60000 }, async () => {
  const { gw, key } = ctx;
  const st0 = await gw.status();
  const load = startLoad(gw, key);
  await eventually(() => load.res.ok >= 4, { what: 'the load runs' });
  try {
    for (let i = 1; i <= 10; i++) {
      // A model appears (and the one of the last reload goes), a timeout changes.
      gw.rewriteConfig({ models: [...BASE_MODELS, added(i)], timeouts: { total: `${60 + i}s` } });
      if (i % 2) {
        const r = await gw.ctl(['reload']);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`generation ${st0.generation + i}\\b`));
      } else {
        await reloadBySignal(gw, st0.generation + i);
      }
      const res = await gw.chat(key, { model: `added-${i}` });
      assert.equal(res.status, 200, `the model added by reload ${i} is served: ${res.text}`);
      if (i > 1) {
        const gone = await gw.chat(key, { model: `added-${i - 1}` });
        assert.equal(gone.status, 404, `the model removed by reload ${i} is gone: ${gone.text}`);
      }
      await sleep(60);
    }
  } finally {
    const res = await load.stop();
    assert.deepEqual(res.bad, [], `${res.bad.length} of ${res.ok + res.bad.length} requests failed`);
    assert.ok(res.ok >= 20, `the load kept running (${res.ok} requests)`);
  }
  const st = await gw.status();
  assert.equal(st.generation, st0.generation + 10);
  assert.equal(st.reloads, st0.reloads + 10);
  assert.equal(st.reload_failures, st0.reload_failures);
  assert.equal(st.models, BASE_MODELS.length + 1);
});

test('an invalid configuration is refused with FILE:LINE:COLUMN and the old one keeps serving', async () => {
  const { gw, key } = ctx;
  const st0 = await gw.status();
  const good = fs.readFileSync(gw.configPath, 'utf8');
  const lines = good.trimEnd().split('\n');
  fs.writeFileSync(gw.configPath, `${good}bogus_key: 1\n`);
  const where = `${gw.configPath}:${lines.length + 1}:1:`;
  try {
    const from = gw.log().length;
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 1, `aigwctl reload exits 1: ${r.stdout} ${r.stderr}`);
    assert.ok(r.stderr.includes(where), `stderr names ${where}: ${r.stderr}`);
    assert.match(r.stderr, /bogus_key/);
    await gw.waitLog(new RegExp(`error master: .*${where.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`), { from });

    // The same file on SIGHUP: logged, nothing changes.
    const from2 = gw.log().length;
    gw.signal('SIGHUP');
    await gw.waitLog(/SIGHUP: .*bogus_key/, { from: from2 });

    const st = await gw.status();
    assert.equal(st.generation, st0.generation, 'no new generation');
    assert.equal(st.reload_failures, st0.reload_failures + 2);
    assert.equal((await gw.chat(key, {})).status, 200);
    assert.equal((await gw.chat(key, { model: st0.models > 3 ? 'added-10' : 'demo' })).status, 200,
      'the models of the running configuration are still served');
  } finally {
    fs.writeFileSync(gw.configPath, good);
  }
});

test('a listen address added on reload serves; removed, it stops; the kept one never stops', { timeout: 30000 }, async () => {
  const { gw, key } = ctx;
  const extra = await freePort();
  const main = `127.0.0.1:${gw.port}`;
  const load = startLoad(gw, key);
  try {
    await eventually(() => load.res.ok >= 2, { what: 'the load runs' });
    gw.rewriteConfig({ listen: [main, `127.0.0.1:${extra}`] });
    let r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    const res = await request(extra, { method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${key}` }, body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(res.status, 200, `the new port serves: ${res.text}`);
    assert.equal((await request(gw.port, { path: '/healthz' })).status, 200);

    gw.rewriteConfig({ listen: [main] });
    r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(() => connectRefused(extra), { timeoutMs: 5000, what: `port ${extra} closed after its removal` });
    await sleep(300);
  } finally {
    const res = await load.stop();
    assert.deepEqual(res.bad, [], `${res.bad.length} of ${res.ok + res.bad.length} requests on the kept port failed`);
  }
});

test('a worker count changed on reload resizes the pool while requests keep succeeding', { timeout: 30000 }, async () => {
  const { gw, key } = ctx;
  const before = (await gw.ctlJson(['workers'])).map((w) => w.pid);
  const load = startLoad(gw, key);
  try {
    await eventually(() => load.res.ok >= 2, { what: 'the load runs' });
    gw.rewriteConfig({ workers: 2 });
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    let list;
    await eventually(async () => {
      list = await gw.ctlJson(['workers']);
      return list.length === 2 && list.every((w) => w.state !== 'stopping' && !before.includes(w.pid));
    }, { timeoutMs: 8000, what: () => `2 new workers in ${JSON.stringify(list)}` });
    assert.equal(gw.workerPids().length, 2, 'two worker processes');
    await sleep(300);
  } finally {
    const res = await load.stop();
    assert.deepEqual(res.bad, [], `${res.bad.length} of ${res.ok + res.bad.length} requests failed`);
  }
  const st = await gw.status();
  assert.equal(st.workers.configured, 2);
});

test('a connection accepted just before a reload that replaces the pool gets its request answered', async () => {
  const { gw, key } = ctx;
  // An idle worker accepts this connection at once; the request follows
  // only after the reload has told that worker to stop.
  const conn = await gw.conn();
  try {
    await sleep(150);
    gw.rewriteConfig({ workers: 3 });
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await sleep(200);
    await conn.send({
      method: 'POST', path: '/v1/chat/completions',
      headers: { Authorization: `Bearer ${key}`, Connection: 'close' },
      body: { model: 'demo', messages: [{ role: 'user', content: 'hi' }] },
    });
    const res = await conn.readResponse();
    assert.equal(res.status, 200, res.text);
  } finally {
    conn.close();
  }
  await gw.waitWorkers(3);
});
