// mixed.test.mjs - well- and ill-behaved clients at once on workers that
// serve many connections each: every client gets exactly its own answer,
// no worker dies, every connection is let go, and every authenticated
// request is in the usage records once.  The kinds of client are those an
// event loop gets wrong when it loses a readiness report or takes one meant
// for another socket: pipelined requests, a body in slow pieces or chunks,
// Expect: 100-continue, HTTP/1.0, a body over the limit, a client that
// half-closes, one that hangs up mid-stream, a provider that cuts a stream
// off, bad requests on a kept connection.

import assert from 'node:assert/strict';

import { HttpConn, chunked, eventually, formatRequest, sleep, startGateway, test } from './lib/harness.mjs';

const CLIENTS = 32;
const ROUNDS = 40;
const messages = [{ role: 'user', content: 'hello there' }];
const chatBody = (extra = {}) => JSON.stringify({ model: 'mixed', messages, ...extra });

// The text of a non-streamed mock completion of n tokens.
const tokens = (n) => Array.from({ length: n }, (_, i) => `tok${i} `).join('');

function chatRequest(key, { body = chatBody(), headers = {}, connection } = {}) {
  const h = { 'Content-Type': 'application/json', Authorization: `Bearer ${key}`, ...headers };
  if (connection) h.Connection = connection;
  return { method: 'POST', path: '/v1/chat/completions', headers: h, body };
}

// null when res is a 200 completion of n mock tokens, else what it is.
function notCompletion(res, n) {
  if (res.status !== 200) return `status ${res.status}: ${res.text}`;
  const got = res.json().choices?.[0]?.message?.content;
  return got === tokens(n) ? null : `content ${JSON.stringify(got)}`;
}

// fn(conn) on a connection of its own, closed after.
async function ownConnection(port, fn) {
  const conn = await HttpConn.open(port);
  try {
    return await fn(conn);
  } finally {
    conn.close();
  }
}

function errorCode(res) {
  try { return res.json().error?.code; } catch { return undefined; }
}

// Each kind: run(ctx) -> a description of what went wrong, or null.  ctx:
// {key, port, exchange(req): one request on the client's kept connection,
// opened again when the gateway closed it}.  authed: how many
// authenticated requests it makes.
const kinds = [
  {
    name: 'chat on the kept connection',
    authed: 1,
    async run(ctx) {
      return notCompletion(await ctx.exchange(chatRequest(ctx.key, { headers: { 'x-mock-chunks': '3' } })), 3);
    },
  },
  {
    name: 'stream to its end',
    authed: 1,
    async run(ctx) {
      const res = await ctx.exchange(chatRequest(ctx.key, {
        body: chatBody({ stream: true }), headers: { 'x-mock-chunks': '4', 'x-mock-chunk-delay-ms': '2' },
      }));
      if (res.status !== 200) return `status ${res.status}: ${res.text}`;
      const content = res.events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join('');
      if (content !== tokens(4)) return `content ${JSON.stringify(content)}`;
      return res.events.at(-1)?.data === '[DONE]' ? null : `last event ${JSON.stringify(res.events.at(-1))}`;
    },
  },
  {
    name: 'stream the provider cuts off',
    authed: 1,
    async run(ctx) {
      const res = await ctx.exchange(chatRequest(ctx.key, {
        body: chatBody({ stream: true }),
        headers: { 'x-mock-chunks': '20', 'x-mock-chunk-delay-ms': '1', 'x-mock-drop-after': '3' },
      }));
      if (res.status !== 200) return `status ${res.status}: ${res.text}`;
      const last = res.events.at(-1);
      return last?.json?.error?.code === 'upstream_disconnected' ? null : `last event ${JSON.stringify(last)}`;
    },
  },
  {
    name: 'client that hangs up mid-stream',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      await conn.send(chatRequest(ctx.key, {
        body: chatBody({ stream: true }), headers: { 'x-mock-chunks': '10', 'x-mock-chunk-delay-ms': '20' },
      }));
      await conn.waitFor(() => conn.pending.includes('tok0'), 5000, 'the first event');
      return null;
    }),
  },
  {
    name: 'malformed JSON on the kept connection',
    authed: 1,
    async run(ctx) {
      const res = await ctx.exchange(chatRequest(ctx.key, { body: '{"model": "mixed", "messages": [' }));
      return res.status === 400 && errorCode(res) === 'invalid_json' ? null : `status ${res.status}: ${res.text}`;
    },
  },
  {
    name: 'unknown model on the kept connection',
    authed: 1,
    async run(ctx) {
      const res = await ctx.exchange(chatRequest(ctx.key, { body: JSON.stringify({ model: 'no-such-model', messages }) }));
      return res.status === 404 && errorCode(res) === 'model_not_found' ? null : `status ${res.status}: ${res.text}`;
    },
  },
  {
    name: 'no key',
    authed: 0,
    async run(ctx) {
      const res = await ctx.exchange({ ...chatRequest(ctx.key), headers: { 'Content-Type': 'application/json' } });
      return res.status === 401 && errorCode(res) === 'missing_api_key' ? null : `status ${res.status}: ${res.text}`;
    },
  },
  {
    name: 'two requests pipelined in one write',
    authed: 2,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      await conn.write(Buffer.concat([
        formatRequest(chatRequest(ctx.key, { headers: { 'x-mock-chunks': '2' } })),
        formatRequest(chatRequest(ctx.key, { headers: { 'x-mock-chunks': '5' } })),
      ]));
      const first = notCompletion(await conn.readResponse(), 2);
      const second = notCompletion(await conn.readResponse(), 5);
      return first || second ? `first: ${first ?? 'ok'}; second: ${second ?? 'ok'}` : null;
    }),
  },
  {
    name: 'body in slow pieces',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      const bytes = formatRequest(chatRequest(ctx.key, { headers: { 'x-mock-chunks': '3' }, connection: 'close' }));
      const cuts = [0, bytes.indexOf('\r\n\r\n') - 5, bytes.length - 10, bytes.length];
      for (let i = 1; i < cuts.length; i++) {
        if (i > 1) await new Promise((r) => setTimeout(r, 15));
        await conn.write(bytes.subarray(cuts[i - 1], cuts[i]));
      }
      const why = notCompletion(await conn.readResponse(), 3);
      return why ?? ((await conn.closedWithin(5000)) ? null : 'not closed after "Connection: close"');
    }),
  },
  {
    name: 'client that half-closes after its request',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      await conn.send(chatRequest(ctx.key, { headers: { 'x-mock-chunks': '2' } }));
      conn.sock.end();
      const why = notCompletion(await conn.readResponse(), 2);
      return why ?? ((await conn.closedWithin(5000)) ? null : 'not closed after the client\'s end');
    }),
  },
];

kinds.push(
  {
    name: 'models listed on the kept connection',
    authed: 1,
    async run(ctx) {
      const res = await ctx.exchange({ method: 'GET', path: '/v1/models', headers: { Authorization: `Bearer ${ctx.key}` } });
      if (res.status !== 200) return `status ${res.status}: ${res.text}`;
      return res.json().data?.some((m) => m.id === 'mixed') ? null : `no "mixed" in ${res.text.slice(0, 200)}`;
    },
  },
  {
    name: 'chunked request body in pieces',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      const req = chatRequest(ctx.key, { headers: { 'x-mock-chunks': '2', 'Transfer-Encoding': 'chunked' } });
      await conn.write(formatRequest({ ...req, body: undefined }));
      const bytes = chunked(req.body, [7, 30, 3]);
      for (let i = 0; i < bytes.length; i += 25) {
        if (i > 0) await sleep(2);
        await conn.write(bytes.subarray(i, i + 25));
      }
      return notCompletion(await conn.readResponse(), 2);
    }),
  },
  {
    name: 'Expect: 100-continue',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      const req = chatRequest(ctx.key, { headers: { 'x-mock-chunks': '4', Expect: '100-continue' } });
      await conn.write(formatRequest({ ...req, body: undefined, headers: { ...req.headers, 'Content-Length': String(Buffer.byteLength(req.body)) } }));
      const interim = await conn.readResponse();
      if (interim.status !== 100) return `interim status ${interim.status}: ${interim.text}`;
      await conn.write(req.body);
      return notCompletion(await conn.readResponse(), 4);
    }),
  },
  {
    name: 'HTTP/1.0, closed after its answer',
    authed: 1,
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      await conn.send({ ...chatRequest(ctx.key, { headers: { 'x-mock-chunks': '1' } }), version: '1.0' });
      const why = notCompletion(await conn.readResponse(), 1);
      return why ?? ((await conn.closedWithin(5000)) ? null : 'not closed after an HTTP/1.0 answer');
    }),
  },
  {
    name: 'a body over max_body_size',
    authed: 0, // refused before the request is read, so before its key is looked at
    run: (ctx) => ownConnection(ctx.port, async (conn) => {
      const body = chatBody({ messages: [{ role: 'user', content: 'x'.repeat(40000) }] });
      await conn.send(chatRequest(ctx.key, { body })).catch(() => {});
      const res = await conn.readResponse();
      if (res.status !== 413 || errorCode(res) !== 'request_too_large') return `status ${res.status}: ${res.text}`;
      return (await conn.closedWithin(5000)) ? null : 'not closed after the 413';
    }),
  },
);

// A fixed shuffle of the kinds for each client and round, so that a run
// can be repeated: a linear congruential generator from the client number.
function schedule(client) {
  let s = 2654435761 * (client + 1) >>> 0;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
  return Array.from({ length: ROUNDS }, () => next() % kinds.length);
}

// The mixed load on a gateway started with env: the provider's plain-HTTP
// exchanges are the worker's own (worker/h1.c), or, with a proxy variable
// in the environment, all of them libcurl's transfers.
async function mixedLoad(env = {}) {
  const gw = await startGateway({
    env,
    workers: { start: 2, connections: 64 },
    http: { max_body_size: '16k' },
    models: [{
      name: 'mixed',
      targets: [{ provider: 'local', model: 'mock-small' }],
      // The cut streams are failures of the target; the others must not
      // find it shut off because of them.
      routing: { breaker: { failures: 0 } },
    }],
  });
  try {
    const { key, id } = await gw.createKey();
    const pids = await gw.waitWorkers();
    const failed = [];
    let authed = 0;

    await Promise.all(Array.from({ length: CLIENTS }, async (_, client) => {
      const ctx = {
        key,
        port: gw.port,
        conn: null,
        // One request on the client's kept connection (opened again
        // after the gateway closes it).
        async exchange(req) {
          if (!this.conn || this.conn.ended) this.conn = await HttpConn.open(gw.port);
          await this.conn.send(req);
          const res = await this.conn.readResponse();
          if (/\bclose\b/i.test(res.headers.connection ?? '')) { this.conn.close(); this.conn = null; }
          return res;
        },
      };
      for (const [round, k] of schedule(client).entries()) {
        const kind = kinds[k];
        authed += kind.authed;
        let why;
        try {
          why = await kind.run(ctx);
        } catch (err) {
          why = err.message.slice(0, 400);
          ctx.conn?.close();
          ctx.conn = null;
        }
        if (why) failed.push(`client ${client}, round ${round}, ${kind.name}: ${why}`);
      }
      ctx.conn?.close();
    }));

    assert.deepEqual(failed, []);
    assert.deepEqual(gw.workerPids(), pids, 'no worker died or was replaced');
    await eventually(async () => (await gw.ctlJson(['workers'])).every((w) => w.connections === 0),
      { what: 'every connection let go', timeoutMs: 10000 });
    assert.equal((await gw.status()).in_flight, 0);
    const usage = await gw.ctlJson(['usage', '--by', 'key']);
    const row = usage.rows?.find((r) => r.key === id);
    assert.equal(row?.requests, authed, JSON.stringify(usage));
  } finally {
    await gw.stop();
  }
}

test('a mixed load of well- and ill-behaved clients: each gets its answer, none is lost', { timeout: 120000 }, () =>
  mixedLoad());

// no_proxy alone names no proxy, but any proxy variable sends every
// transfer through libcurl (worker/upstream.c), which then goes direct.
test('the same mixed load through libcurl\'s transfers', { timeout: 120000 }, () =>
  mixedLoad({ no_proxy: '127.0.0.1' }));
