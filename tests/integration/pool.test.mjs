// pool.test.mjs - the worker pool: a fixed pool that replaces a killed
// worker, max_requests recycling, spare workers that follow the load as in
// Apache's prefork, process titles, and a scoreboard that shows only live
// workers.

import assert from 'node:assert/strict';
import fs from 'node:fs';

import {
  eventually, pidAlive, sleep, startGateway, startMock, test,
} from './lib/harness.mjs';

const cmdline = (pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0+$/, '').replace(/\0/g, ' ');

test('a fixed pool replaces a worker killed with SIGKILL and keeps serving; titles show role and state', async () => {
  const gw = await startGateway({ workers: 3 });
  try {
    const { key } = await gw.createKey();
    assert.match(cmdline(gw.pid), /^aigwd: master\b/);
    let list = await gw.ctlJson(['workers']);
    assert.equal(list.length, 3);
    for (const w of list) {
      assert.match(cmdline(w.pid), new RegExp(`^aigwd: worker\\[${w.slot}\\] \\((idle|busy|keepalive)\\)`));
    }
    const victim = list[0].pid;
    process.kill(victim, 'SIGKILL');
    await eventually(async () => {
      list = await gw.ctlJson(['workers']);
      return list.length === 3 && !list.some((w) => w.pid === victim) && list.every((w) => pidAlive(w.pid));
    }, { timeoutMs: 5000, what: () => `a replacement for ${victim} in ${JSON.stringify(list)}` });
    for (let i = 0; i < 6; i++) assert.equal((await gw.chat(key, {})).status, 200);
  } finally {
    await gw.stop();
  }
});

test('a busy worker says so in its process title', async () => {
  const gw = await startGateway({ workers: 1 });
  try {
    const { key } = await gw.createKey();
    const slow = gw.chat(key, {}, { 'x-mock-delay-ms': '1000' });
    const [pid] = gw.workerPids();
    await eventually(() => /\(busy\)/.test(cmdline(pid)), { timeoutMs: 2000, what: () => `busy title: ${cmdline(pid)}` });
    assert.equal((await slow).status, 200);
    await eventually(() => /\(idle\)/.test(cmdline(pid)), { timeoutMs: 2000, what: () => `idle title: ${cmdline(pid)}` });
  } finally {
    await gw.stop();
  }
});

test('workers.max_requests 5 recycles the workers and every request succeeds', async () => {
  const gw = await startGateway({ workers: { start: 2, max_requests: 5 } });
  try {
    const { key } = await gw.createKey();
    const first = (await gw.ctlJson(['workers'])).map((w) => w.pid);
    const seen = new Set(first);
    for (let i = 0; i < 20; i++) {
      const res = await gw.chat(key, {});
      assert.equal(res.status, 200, `request ${i + 1}: ${res.text}`);
      for (const w of await gw.ctlJson(['workers'])) {
        seen.add(w.pid);
        assert.ok(w.requests <= 5, `worker ${w.pid} served ${w.requests} requests`);
      }
    }
    const now = (await gw.ctlJson(['workers'])).map((w) => w.pid);
    assert.ok(first.every((pid) => !now.includes(pid)), `the first workers ${first} were recycled (now ${now})`);
    assert.ok(seen.size >= 4, `20 requests at 5 per worker took at least 4 workers (saw ${[...seen]})`);
    await gw.waitWorkers(2);
  } finally {
    await gw.stop();
  }
});

test('spare workers: the pool grows while connections are held busy and trims back after', { timeout: 30000 }, async () => {
  const pool = { start: 2, min_spare: 2, max_spare: 4, max: 8, connections: 1 };
  const gw = await startGateway({ workers: pool });
  try {
    const { key } = await gw.createKey();
    const count = async () => (await gw.ctlJson(['workers'])).filter((w) => w.state !== 'stopping').length;
    // Four requests held for a while: the idle workers run short.  The
    // master looks once a second and grows by 1, then 2: the requests are
    // held long enough for a late second look (2.5 s was not, once, in a
    // clean-clone run).
    const slow = Array.from({ length: 4 }, () => gw.chat(key, {}, { 'x-mock-delay-ms': '4000' }));
    let most = 0;
    await eventually(async () => {
      most = Math.max(most, await count());
      return most >= 5;
    }, { timeoutMs: 6000, every: 100, what: () => `the pool grew past 4 workers (most seen ${most})` });
    for (const res of await Promise.all(slow)) assert.equal(res.status, 200, res.text);
    assert.ok(gw.workerPids().length <= pool.max, 'never more than max');
    // All idle now: more than max_spare, so it trims, one a second.
    let n;
    await eventually(async () => (n = await count()) <= pool.max_spare,
      { timeoutMs: 8000, every: 200, what: () => `trimmed to max_spare ${pool.max_spare} (now ${n})` });
    await sleep(1100);
    assert.ok(await count() >= pool.min_spare, 'not below min_spare');
  } finally {
    await gw.stop();
  }
});

test('after a master is killed and started again, the scoreboard lists only live workers', async () => {
  const mock = await startMock();
  let gw = await startGateway({ workers: 2, mock });
  try {
    const old = gw.workerPids();
    gw.signal('SIGKILL');
    await gw.exited;
    const { dir, port } = gw;
    await gw.stop({ keepDir: true });
    await eventually(() => old.every((pid) => !pidAlive(pid)), { what: 'the old workers exit' });
    gw = await startGateway({ workers: 2, mock, dir, port });
    // The master looks for dead entries once a second.
    let list;
    await eventually(async () => {
      list = await gw.ctlJson(['workers']);
      return JSON.stringify(list.map((w) => w.pid).sort((a, b) => a - b)) === JSON.stringify(gw.workerPids());
    }, { timeoutMs: 3000, what: () => `workers --json lists the live workers only: ${JSON.stringify(list)}` });
    const st = await gw.status();
    assert.equal(st.workers.stopping, 0, `no dead workers counted as stopping: ${JSON.stringify(st.workers)}`);
  } finally {
    await gw.stop();
    await mock.stop();
  }
});

// The CPUs a process may run on, from /proc: "0-2,5", and as [0, 1, 2, 5].
const cpusList = (pid) => fs.readFileSync(`/proc/${pid}/status`, 'latin1').match(/^Cpus_allowed_list:\s*(\S+)/m)[1];
const cpusOf = (pid) => cpusList(pid).split(',').flatMap((r) => {
  const [a, b = a] = r.split('-').map(Number);
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
});

test('workers.cpu_affinity puts a worker on a CPU of its own and the master on the others; a reload without it undoes that', async (t) => {
  const all = cpusOf(process.pid);
  if (all.length < 2) {
    t.skip(`needs 2 CPUs, this process may use ${all.length}`);
    return;
  }
  const gw = await startGateway({ workers: { start: 1, connections: 8, cpu_affinity: true } });
  try {
    const { key } = await gw.createKey();
    const [worker] = await gw.waitWorkers(1);
    assert.deepEqual(cpusOf(worker), [all[all.length - 1]], 'the worker: the last CPU');
    assert.deepEqual(cpusOf(gw.pid), all.slice(0, -1), 'the master: the CPUs left over');
    assert.equal((await gw.ctlJson(['workers']))[0].cpus, String(all[all.length - 1]), 'aigwctl workers shows it');
    assert.equal((await gw.chat(key, {})).status, 200);
    await gw.waitLog(new RegExp(`workers\\.cpu_affinity: 1 worker slots on CPUs ${all[all.length - 1]}, one each; the master on CPUs ${cpusList(gw.pid)}\n`));

    gw.rewriteConfig({ workers: { start: 1, connections: 8 } });
    const r = await gw.ctl(['reload']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(() => {
      const pids = gw.workerPids();
      return pids.length === 1 && pids[0] !== worker;
    }, { timeoutMs: 5000, what: () => `a new worker in place of ${worker}: ${gw.workerPids()}` });
    assert.deepEqual(cpusOf(gw.workerPids()[0]), all, 'the new worker: every CPU');
    assert.deepEqual(cpusOf(gw.pid), all, 'the master: every CPU again');
    assert.equal((await gw.chat(key, {})).status, 200);
  } finally {
    await gw.stop();
  }
});
