// segment.test.mjs - the shared-memory segment the master owns: named in
// `aigwctl status`, private to its owner while aigwd runs, and removed by a
// clean stop.

import assert from 'node:assert/strict';
import fs from 'node:fs';

import { startGateway, test } from './lib/harness.mjs';

test('the segment named by status exists with mode 0600 and is removed by a clean SIGTERM stop', async () => {
  const gw = await startGateway({ workers: 2 });
  try {
    const st = await gw.status();
    assert.equal(typeof st.shm, 'string', `"shm" in ${JSON.stringify(st)}`);
    assert.match(st.shm, /^\/[^/]+$/, 'a POSIX shm name: one leading slash');
    const file = `/dev/shm${st.shm}`;
    const stat = fs.statSync(file);
    assert.ok(stat.isFile());
    assert.equal(stat.mode & 0o777, 0o600);
    assert.ok(stat.size > 0, 'the segment is sized');

    const { key } = await gw.createKey();
    assert.equal((await gw.chat(key, {})).status, 200);
    gw.signal('SIGTERM');
    const exit = await gw.exited;
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.equal(fs.existsSync(file), false, `${file} is removed after a clean stop`);
  } finally {
    await gw.stop();
  }
});

test('two gateways on different state directories get different segments', async () => {
  const a = await startGateway({ workers: 1 });
  try {
    const b = await startGateway({ workers: 1, mock: a.mock });
    try {
      const [sa, sb] = [await a.status(), await b.status()];
      assert.notEqual(sa.shm, sb.shm);
      assert.ok(fs.existsSync(`/dev/shm${sa.shm}`) && fs.existsSync(`/dev/shm${sb.shm}`));
    } finally {
      await b.stop();
    }
  } finally {
    await a.stop();
  }
});
