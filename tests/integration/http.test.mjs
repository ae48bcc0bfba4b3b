// http.test.mjs - HTTP/1.x on the client side of the gateway: keep-alive,
// pipelining, chunked request bodies, Expect: 100-continue, the size and
// time limits (413, 431, 408), HTTP/1.0, malformed requests, and slow or
// vanishing clients that must not hold up the others.

import assert from 'node:assert/strict';

import {
  HttpConn, assertError, chunked, formatRequest, raw, sleep, startGateway, test, useGateway,
} from './lib/harness.mjs';

const READ_TIMEOUT_MS = 800;
let key;
const ctx = useGateway({
  workers: 2,
  http: { max_header_size: '2k', max_body_size: '4k', keepalive_timeout: '1500ms', read_timeout: `${READ_TIMEOUT_MS}ms`, write_timeout: '1s' },
}, async (gw) => { ({ key } = await gw.createKey()); });

const auth = () => ({ Authorization: `Bearer ${key}` });
const chatBody = (extra = {}) => ({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], ...extra });
const chatReq = (headers = {}, extra = {}) => ({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), ...headers }, body: chatBody(extra) });

async function stillServes() {
  const res = await ctx.gw.chat(key, {});
  assert.equal(res.status, 200, res.text);
}

// ------------------------------------------------------------ keep-alive

test('two requests share one keep-alive connection', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'GET', path: '/healthz' });
    const a = await conn.readResponse();
    assert.equal(a.status, 200);
    assert.notEqual(a.headers.connection, 'close');
    await conn.send(chatReq());
    const b = await conn.readResponse();
    assert.equal(b.status, 200);
    assert.equal(b.json().choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
    assert.equal(conn.ended, false);
  } finally {
    conn.close();
  }
});

test('Connection: close is honoured', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'GET', path: '/healthz', headers: { Connection: 'close' } });
    const res = await conn.readResponse();
    assert.equal(res.status, 200);
    assert.equal(res.headers.connection, 'close');
    assert.equal(await conn.closedWithin(2000), true);
  } finally {
    conn.close();
  }
});

test('pipelined requests are answered in order', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.write(Buffer.concat([
      formatRequest({ method: 'GET', path: '/healthz', headers: { 'x-request-id': 'pipe-1' } }),
      formatRequest(chatReq({ 'x-request-id': 'pipe-2', 'x-mock-chunks': '2' })),
      formatRequest({ method: 'GET', path: '/v1/models', headers: { ...auth(), 'x-request-id': 'pipe-3' } }),
      formatRequest(chatReq({ 'x-request-id': 'pipe-4', 'x-mock-chunks': '3' })),
    ]));
    const res = [];
    for (let i = 0; i < 4; i++) res.push(await conn.readResponse());
    assert.deepEqual(res.map((r) => r.headers['x-request-id']), ['pipe-1', 'pipe-2', 'pipe-3', 'pipe-4']);
    assert.deepEqual(res.map((r) => r.status), [200, 200, 200, 200]);
    assert.equal(res[1].json().choices[0].message.content, 'tok0 tok1 ');
    assert.equal(res[2].json().object, 'list');
    assert.equal(res[3].json().choices[0].message.content, 'tok0 tok1 tok2 ');
  } finally {
    conn.close();
  }
});

test('a query string does not change the route', async () => {
  const res = await ctx.gw.request({ method: 'GET', path: '/healthz?probe=1&x=y' });
  assert.equal(res.status, 200);
  const models = await ctx.gw.request({ method: 'GET', path: '/v1/models?limit=5', headers: auth() });
  assert.equal(models.status, 200);
  assert.equal(models.json().object, 'list');
});

test('a request in absolute form is served by its path; other targets get 400', async () => {
  // RFC 9112, 3.2.2: a server must accept the absolute form too.
  const models = await ctx.gw.request({ method: 'GET', path: `http://127.0.0.1:${ctx.gw.port}/v1/models?limit=5`, headers: auth() });
  assert.equal(models.status, 200, models.text);
  assert.equal(models.json().object, 'list');
  for (const target of ['*', 'healthz', '']) {
    const r = await raw('127.0.0.1', ctx.gw.port, `OPTIONS ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.equal(r.responses.length, 1, `${target}: ${r.text}`);
    assertError(assert, r.responses[0], 400);
    assert.equal(r.closed, true);
  }
  await stillServes();
});

test('a HEAD request gets headers and no body', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'HEAD', path: '/healthz' });
    const head = await conn.readResponse({ head: true });
    assert.equal(head.status, 200);
    await conn.send({ method: 'GET', path: '/healthz', headers: { 'x-request-id': 'after-head' } });
    const get = await conn.readResponse();
    assert.equal(get.headers['x-request-id'], 'after-head', 'no body bytes were left between the answers');
    assert.deepEqual(get.json(), { status: 'ok' });
    assert.equal(head.headers['content-length'], get.headers['content-length']);
  } finally {
    conn.close();
  }
});

test('an idle keep-alive connection is closed after keepalive_timeout, without a response', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'GET', path: '/healthz' });
    assert.equal((await conn.readResponse()).status, 200);
    assert.equal(await conn.closedWithin(5000), true, 'closed after 1.5 s idle');
    assert.equal(conn.pending.length, 0, 'nothing was sent before the close');
  } finally {
    conn.close();
  }
});

test('a client that sends its last request with the end of its side gets the answer, and the connection closes then, not after keepalive_timeout', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'GET', path: '/healthz' });
    assert.equal((await conn.readResponse()).status, 200);
    // The request and the FIN arrive together, while the gateway waits for
    // the next request on this connection.
    await new Promise((resolve) => conn.sock.end(formatRequest(chatReq()), resolve));
    const res = await conn.readResponse();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
    // keepalive_timeout is 1.5 s: a close within 1 s is the client's end seen.
    assert.equal(await conn.closedWithin(1000), true, 'closed once the client had ended');
  } finally {
    conn.close();
  }
});

// ---------------------------------------------------------- request body

test('a chunked request body is read whole', async () => {
  const conn = await ctx.gw.conn();
  try {
    const body = JSON.stringify(chatBody({ messages: [{ role: 'user', content: 'sent in many small chunks' }] }));
    await conn.write(formatRequest({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'x-mock-echo': '1', 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } }));
    const bytes = chunked(body, [5, 11, 3]);
    for (let i = 0; i < bytes.length; i += 40) {
      await conn.write(bytes.subarray(i, i + 40));
      await sleep(5);
    }
    const res = await conn.readResponse();
    assert.equal(res.status, 200, res.text);
    const seen = JSON.parse(res.json().choices[0].message.content);
    assert.equal(seen.body.messages[0].content, 'sent in many small chunks');
    assert.equal(seen.headers['transfer-encoding'], undefined, 'the upstream gets a plain body');
    assert.equal(res.json().usage.prompt_tokens, 5);
  } finally {
    conn.close();
  }
});

test('Expect: 100-continue is answered with 100 Continue before the body', async () => {
  const conn = await ctx.gw.conn();
  try {
    const body = Buffer.from(JSON.stringify(chatBody()));
    await conn.write(formatRequest({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json', 'Content-Length': String(body.length), Expect: '100-continue' } }));
    const interim = await conn.readResponse({ timeoutMs: 3000 });
    assert.equal(interim.status, 100);
    await conn.write(body);
    const res = await conn.readResponse();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4 ');
  } finally {
    conn.close();
  }
});

test('Expect: 100-continue with a body over the limit gets 413 and no 100', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({
    method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json', 'Content-Length': '100000', Expect: '100-continue' },
  }));
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 413, 'request_too_large');
  assert.equal(r.closed, true);
});

test('a body over max_body_size declared by Content-Length gets 413 and the connection is closed', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({
    method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json', 'Content-Length': '5000' },
  }));
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 413, 'request_too_large');
  assert.equal(r.closed, true);
  await stillServes();
});

test('a body over max_body_size sent whole with its Content-Length gets a readable 413', async () => {
  const big = JSON.stringify(chatBody({ messages: [{ role: 'user', content: 'x'.repeat(60000) }] }));
  const conn = await ctx.gw.conn();
  try {
    await conn.write(formatRequest({ method: 'POST', path: '/v1/chat/completions', headers: auth(), body: big })).catch(() => {});
    const res = await conn.readResponse({ timeoutMs: 5000 });
    assertError(assert, res, 413, 'request_too_large');
  } finally {
    conn.close();
  }
  await stillServes();
});

test('a chunked body growing over max_body_size gets 413 and the connection is closed', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.write(formatRequest({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } }));
    const piece = Buffer.from(`400\r\n${'x'.repeat(0x400)}\r\n`);
    for (let i = 0; i < 8 && !conn.ended && conn.pending.length === 0; i++) {
      await conn.write(piece).catch(() => {});
      await sleep(20);
    }
    const res = await conn.readResponse({ timeoutMs: 5000 });
    assertError(assert, res, 413, 'request_too_large');
    assert.equal(await conn.closedWithin(2000), true);
  } finally {
    conn.close();
  }
  await stillServes();
});

test('a body just under max_body_size is accepted', async () => {
  const body = JSON.stringify(chatBody({ messages: [{ role: 'user', content: 'y'.repeat(3900) }] }));
  assert.ok(body.length < 4096);
  const res = await ctx.gw.request({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json' }, body });
  assert.equal(res.status, 200, res.text);
});

// --------------------------------------------------------------- headers

test('headers over max_header_size get 431 and the connection is closed', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ method: 'GET', path: '/healthz', headers: { 'X-Big': 'a'.repeat(3000) } }));
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 431, 'headers_too_large');
  assert.equal(r.closed, true);
  await stillServes();
});

test('a request refused before parsing is logged with its status and reason', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ method: 'GET', path: '/healthz', headers: { 'x-request-id': 'too-big-1', 'X-Big': 'a'.repeat(3000) } }));
  const id = r.responses[0].headers['x-request-id'];
  assert.ok(id);
  const rec = await ctx.gw.accessRecord(id);
  assert.equal(rec.status, 431, rec.line);
});

test('many small headers over max_header_size also get 431', async () => {
  const headers = Array.from({ length: 120 }, (_, i) => [`X-Header-${i}`, 'value-value']);
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ method: 'GET', path: '/healthz', headers }));
  assertError(assert, r.responses[0], 431, 'headers_too_large');
  assert.equal(r.closed, true);
});

test('whitespace before a header value counts toward max_header_size too', async () => {
  // The parser hands out no callback for the spaces after "X-Pad:", so
  // only the bytes themselves can be counted.
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ method: 'GET', path: '/healthz', headers: { 'X-Pad': `${' '.repeat(3000)}a` } }));
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 431, 'headers_too_large');
  assert.equal(r.closed, true);
  await stillServes();
});

test('a request line over max_header_size gets 431', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ method: 'GET', path: `/v1/models/${'m'.repeat(3000)}` }));
  assertError(assert, r.responses[0], 431, 'headers_too_large');
  assert.equal(r.closed, true);
});

test('headers just under max_header_size are accepted', async () => {
  const res = await ctx.gw.request({ method: 'GET', path: '/healthz', headers: { 'X-Big': 'a'.repeat(1700) } });
  assert.equal(res.status, 200);
});

// ------------------------------------------------------------------ 408

test('a request not finished within read_timeout gets 408 and the connection is closed', async () => {
  const t0 = Date.now();
  const r = await raw('127.0.0.1', ctx.gw.port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n', { timeoutMs: 5000 });
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 408, 'request_timeout');
  assert.equal(r.closed, true);
  assert.ok(Date.now() - t0 >= READ_TIMEOUT_MS - 50, 'not before read_timeout');
});

test('a body that stops short of its Content-Length gets 408', async () => {
  const head = formatRequest({ method: 'POST', path: '/v1/chat/completions', headers: { ...auth(), 'Content-Type': 'application/json', 'Content-Length': '200' } });
  const r = await raw('127.0.0.1', ctx.gw.port, Buffer.concat([head, Buffer.from('{"model":')]), { timeoutMs: 5000 });
  assertError(assert, r.responses[0], 408, 'request_timeout');
  assert.equal(r.closed, true);
});

test('a request trickled byte by byte still gets 408 once read_timeout has passed', async () => {
  // A client that sends one byte every 200 ms never lets the socket go
  // quiet for read_timeout (800 ms), but its request is not received
  // within read_timeout either: it must not hold a worker forever.
  const conn = await ctx.gw.conn();
  const bytes = Buffer.from(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ${'z'.repeat(200)}`);
  const t0 = Date.now();
  try {
    for (let i = 0; i < bytes.length && !conn.ended && conn.pending.length === 0 && Date.now() - t0 < READ_TIMEOUT_MS * 4; i++) {
      await conn.write(bytes.subarray(i, i + 1)).catch(() => {});
      await sleep(200);
    }
    const elapsed = Date.now() - t0;
    assert.ok(conn.pending.length > 0 || conn.ended, `still no answer after ${elapsed} ms of trickling (read_timeout ${READ_TIMEOUT_MS} ms)`);
    const res = await conn.readResponse({ timeoutMs: 1000 });
    assertError(assert, res, 408, 'request_timeout');
    assert.ok(elapsed < READ_TIMEOUT_MS * 3, `408 came after ${elapsed} ms`);
  } finally {
    conn.close();
  }
});

// --------------------------------------------------------------- HTTP/1.0

test('an HTTP/1.0 request is answered and the connection closed', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, 'GET /healthz HTTP/1.0\r\n\r\n');
  assert.equal(r.responses.length, 1, r.text);
  assert.equal(r.responses[0].status, 200);
  assert.deepEqual(r.responses[0].json(), { status: 'ok' });
  assert.equal(r.closed, true);
});

test('an HTTP/1.0 request with Connection: keep-alive keeps the connection', async () => {
  const conn = await ctx.gw.conn();
  try {
    await conn.send({ method: 'GET', path: '/healthz', version: '1.0', headers: { Connection: 'keep-alive' } });
    const a = await conn.readResponse();
    assert.equal(a.status, 200);
    assert.match(a.headers.connection ?? '', /keep-alive/i);
    await conn.send({ method: 'GET', path: '/healthz', version: '1.0' });
    assert.equal((await conn.readResponse()).status, 200);
    assert.equal(await conn.closedWithin(2000), true, 'the second one, without keep-alive, closes');
  } finally {
    conn.close();
  }
});

test('an HTTP/1.0 stream is sent whole and ended by the close', async () => {
  const r = await raw('127.0.0.1', ctx.gw.port, formatRequest({ ...chatReq({}, { stream: true }), version: '1.0' }), { timeoutMs: 5000 });
  assert.equal(r.closed, true);
  const res = r.responses[0];
  assert.equal(res.status, 200);
  assert.equal(res.headers['transfer-encoding'], undefined, 'no chunked coding in HTTP/1.0');
  assert.equal(res.events.map((e) => e.json?.choices?.[0]?.delta?.content ?? '').join(''), 'tok0 tok1 tok2 tok3 tok4 ');
  assert.equal(res.events.at(-1).data, '[DONE]');
});

// ------------------------------------------------------------- malformed

test('a malformed request gets 400 and the connection is closed', async () => {
  for (const bytes of ['GARBAGE\r\n\r\n', 'GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n']) {
    const r = await raw('127.0.0.1', ctx.gw.port, bytes);
    assert.equal(r.responses.length, 1, `${JSON.stringify(bytes)}: ${r.text}`);
    assertError(assert, r.responses[0], 400);
    assert.equal(r.closed, true);
  }
  await stillServes();
});

test('a request with both Content-Length and chunked coding is refused', async () => {
  const body = JSON.stringify(chatBody());
  const bytes = formatRequest({
    method: 'POST', path: '/v1/chat/completions',
    headers: { ...auth(), 'Content-Type': 'application/json', 'Content-Length': String(body.length), 'Transfer-Encoding': 'chunked' },
  });
  const r = await raw('127.0.0.1', ctx.gw.port, Buffer.concat([bytes, chunked(body, [64])]));
  assert.equal(r.responses.length, 1, r.text);
  assertError(assert, r.responses[0], 400);
  assert.equal(r.closed, true);
});

// ------------------------------------------------------- slow clients

test('a slow, partial client does not block other clients', async () => {
  const slow = await ctx.gw.conn();
  try {
    await slow.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n'); // and nothing more
    await sleep(50);
    const results = await Promise.all(Array.from({ length: 6 }, () => ctx.gw.chat(key, {})));
    for (const res of results) assert.equal(res.status, 200);
    assert.equal(slow.pending.length + (slow.ended ? 1 : 0), 0, 'served while the slow client was still waiting');
  } finally {
    slow.close();
  }
});

test('a client that goes away mid-stream leaves the gateway serving', async () => {
  const conns = [];
  for (let i = 0; i < 2; i++) {
    const c = await ctx.gw.conn();
    conns.push(c);
    await c.send(chatReq({ 'x-mock-chunk-delay-ms': '100', 'x-mock-chunks': '50' }, { stream: true }));
    await c.waitFor(() => c.pending.includes('tok0'), 3000, 'the first chunk');
  }
  for (const c of conns) c.close();
  // Both workers notice on their next write to the client.
  const results = await Promise.all(Array.from({ length: 4 }, () => ctx.gw.chat(key, {})));
  for (const res of results) assert.equal(res.status, 200);
});

test('a client that never reads a long stream does not hold up the others', async () => {
  const hog = await HttpConn.open(ctx.gw.port);
  try {
    hog.sock.pause(); // read nothing
    await hog.send(chatReq({ 'x-mock-chunks': '50000' }, { stream: true }));
    await sleep(200);
    const res = await ctx.gw.chat(key, {});
    assert.equal(res.status, 200);
  } finally {
    hog.close();
  }
  await stillServes();
});

test('a client that stops reading is dropped after write_timeout', async () => {
  const hog = await HttpConn.open(ctx.gw.port);
  hog.sock.pause(); // read nothing, ever
  try {
    await hog.send(chatReq({ 'x-mock-chunks': '100000' }, { stream: true }));
    await sleep(3000); // write_timeout is 1 s
    // Both workers are free again: two connections held at once are both served.
    const a = await ctx.gw.conn();
    const b = await ctx.gw.conn();
    try {
      for (const c of [a, b]) await c.send({ method: 'GET', path: '/healthz' });
      assert.equal((await a.readResponse({ timeoutMs: 3000 })).status, 200);
      assert.equal((await b.readResponse({ timeoutMs: 3000 })).status, 200);
    } finally {
      a.close();
      b.close();
    }
  } finally {
    hog.close();
  }
});

test('idle keep-alive connections do not starve new clients', async () => {
  // Clients with connection pools (the OpenAI SDKs among them) keep their
  // connections open between requests.  As many idle connections as there
  // are workers must not leave a new client waiting for keepalive_timeout.
  const gw = await startGateway({ workers: 2, http: { keepalive_timeout: '20s' } });
  const idle = [];
  try {
    for (let i = 0; i < 2; i++) {
      const c = await gw.conn();
      idle.push(c);
      await c.send({ method: 'GET', path: '/healthz' });
    }
    for (const c of idle) assert.equal((await c.readResponse()).status, 200);
    const res = await gw.request({ method: 'GET', path: '/healthz', timeoutMs: 4000 })
      .catch((err) => ({ status: 0, text: err.message }));
    assert.equal(res.status, 200, `a third client, with two idle keep-alive connections open: ${res.text}`);
  } finally {
    for (const c of idle) c.close();
    await gw.stop();
  }
});
