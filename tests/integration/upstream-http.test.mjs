// upstream-http.test.mjs - HTTP/1.1 to a plain-HTTP upstream, which the
// worker speaks itself (worker/h1.c): the request as the upstream gets it,
// one kept connection for many requests, a kept connection the upstream
// closed meanwhile, and the answers that are hard to read: cut into single
// bytes, chunked, without a length, after an interim 100, cut short, not
// HTTP at all, or followed by bytes that belong to no request.
//
// The upstream is a scripted server on a real socket in this process:
// each test says how it answers, and it counts connections and requests.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import { assertError, chunked, parseSse, sleep, startGateway, test } from './lib/harness.mjs';

const ctx = {};

// A completion body in OpenAI's shape.
const completion = (text) => JSON.stringify({
  id: 'chatcmpl-scripted', object: 'chat.completion', created: 1, model: 'scripted',
  choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
});
const ok = (body, extra = '') =>
  `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

// Reads each request whole (head and Content-Length body), records it,
// and hands it to up.answer(socket, request).
function startScripted() {
  const up = { conns: 0, requests: [], answer: null, port: 0, sockets: new Set() };
  const srv = net.createServer((s) => {
    const conn = ++up.conns;
    up.sockets.add(s);
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        // up.onHead answers from the head alone and takes no more bytes.
        if (up.onHead) {
          up.requests.push({ head, body: '', conn });
          buf = Buffer.alloc(0);
          s.removeAllListeners('data');
          s.on('data', () => {});
          up.onHead(s, head);
          return;
        }
        const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const req = { head, body: buf.subarray(end + 4, end + 4 + len).toString(), conn };
        buf = buf.subarray(end + 4 + len);
        up.requests.push(req);
        up.answer(s, req);
      }
    });
    s.on('error', () => {});
    s.on('close', () => up.sockets.delete(s));
  });
  up.reset = (answer, onHead = null) => {
    for (const s of up.sockets) s.destroy();
    up.conns = 0;
    up.requests = [];
    up.answer = answer;
    up.onHead = onHead;
  };
  up.close = () => {
    for (const s of up.sockets) s.destroy();
    return new Promise((r) => srv.close(r));
  };
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => {
    up.port = srv.address().port;
    resolve(up);
  }));
}

// Write bytes one at a time, each in a write of its own a tick apart.
async function dribble(s, text) {
  for (const b of Buffer.from(text)) {
    if (s.destroyed) return;
    s.write(Buffer.from([b]));
    await sleep(1);
  }
}

before(async () => {
  ctx.up = await startScripted();
  ctx.gw = await startGateway({
    workers: { start: 1, connections: 8 },
    http: { max_body_size: '40m' },
    providers: [{ name: 'scripted', base_url: `http://127.0.0.1:${ctx.up.port}/v1` }],
    models: [{
      name: 'scripted', routing: { retries: 0, breaker: { failures: 0 } },
      timeouts: { first_byte: '2s' }, targets: [{ provider: 'scripted', model: 'up-model' }],
    }],
  });
  ctx.key = (await ctx.gw.createKey({ models: ['scripted'] })).key;
});

after(async () => {
  await ctx.gw?.stop();
  await ctx.up?.close();
});

const ask = (body = {}, headers = {}) =>
  ctx.gw.chat(ctx.key, { model: 'scripted', ...body }, headers);

// n requests one after another on one client connection (so on one
// context of the worker, which keeps the upstream connections), pauseMs
// apart; their responses.
async function onOneConnection(n, { pauseMs = 0 } = {}) {
  const conn = await ctx.gw.conn();
  const responses = [];
  try {
    for (let i = 0; i < n; i++) {
      await conn.send({
        method: 'POST', path: '/v1/chat/completions', headers: { Authorization: `Bearer ${ctx.key}` },
        body: { model: 'scripted', messages: [{ role: 'user', content: `n${i}` }] },
      });
      responses.push(await conn.readResponse());
      if (pauseMs > 0) await sleep(pauseMs);
    }
  } finally {
    conn.close();
  }
  return responses;
}

test('the request reaches a plain-HTTP upstream as HTTP/1.1 with its length, host and headers', async () => {
  ctx.up.reset((s) => s.write(ok(completion('fine'))));
  const res = await ask({}, { 'x-team': 'blue' });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json().choices[0].message.content, 'fine');
  const [req] = ctx.up.requests;
  const lines = req.head.split('\r\n');
  assert.equal(lines[0], 'POST /v1/chat/completions HTTP/1.1');
  const header = (name) => lines.filter((l) => l.toLowerCase().startsWith(`${name}:`));
  assert.deepEqual(header('host'), [`Host: 127.0.0.1:${ctx.up.port}`]);
  assert.deepEqual(header('content-length'), [`Content-Length: ${Buffer.byteLength(req.body)}`]);
  assert.deepEqual(header('x-team'), ['x-team: blue']);
  assert.deepEqual(header('expect'), [], 'no Expect, and no empty header line');
  assert.equal(header('x-request-id').length, 1);
  assert.equal(JSON.parse(req.body).model, 'up-model');
});

test('one kept connection serves request after request', async () => {
  ctx.up.reset((s) => s.write(ok(completion('again'))));
  for (const res of await onOneConnection(5)) {
    assert.equal(res.status, 200, res.text);
  }
  assert.equal(ctx.up.requests.length, 5);
  assert.equal(ctx.up.conns, 1, 'the five requests went over one upstream connection');
});

test('a kept connection the upstream closed meanwhile: the request goes on a new one', async () => {
  // Each answer is followed by the upstream closing the connection, without
  // saying so ("Connection: close" would have told the gateway).  Reused
  // within a second, the connection is not looked at first: the request
  // finds it closed and goes once more on a new one.
  ctx.up.reset((s) => { s.write(ok(completion('then closed'))); setTimeout(() => s.destroy(), 20); });
  for (const res of await onOneConnection(3, { pauseMs: 100 })) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'then closed');
  }
  assert.equal(ctx.up.requests.length, 3, 'each request answered once');
  assert.equal(ctx.up.conns, 3);
});

test('a kept connection unused for over a second is looked at first, and one the upstream closed is not used', async () => {
  ctx.up.reset((s) => { s.write(ok(completion('then closed'))); setTimeout(() => s.destroy(), 20); });
  for (const res of await onOneConnection(2, { pauseMs: 1300 })) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'then closed');
  }
  assert.deepEqual(ctx.up.requests.map((r) => r.conn), [1, 2]);
});

test('a kept connection dropped with the request unanswered: it goes once more on a new one', async () => {
  // The second request on the first connection is read and dropped, as
  // when the upstream closes a kept connection just as a request arrives.
  ctx.up.reset((s, req) => {
    if (req.conn === 1 && ctx.up.requests.filter((r) => r.conn === 1).length === 2) s.destroy();
    else s.write(ok(completion('answered')));
  });
  for (const res of await onOneConnection(2)) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'answered');
  }
  assert.deepEqual(ctx.up.requests.map((r) => r.conn), [1, 1, 2]);
  assert.equal(JSON.parse(ctx.up.requests[2].body).messages[0].content, 'n1', 'the same request again');
});

test('an answer cut into single bytes, headers and chunks alike, arrives whole', async () => {
  const body = completion('byte by byte');
  ctx.up.reset((s) => dribble(s,
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n' +
    chunked(body, [5, 1, 17]).toString('latin1')));
  const res = await ask();
  assert.equal(res.status, 200, res.text);
  assert.equal(res.text, body);
  assert.equal(res.headers['content-type'], 'application/json');
});

test('a stream cut into single bytes is relayed event by event', async () => {
  const events = ['tok0 ', 'tok1 ', 'tok2 '].map((t) => `data: ${JSON.stringify({
    id: 'c', object: 'chat.completion.chunk', created: 1, model: 'scripted',
    choices: [{ index: 0, delta: { content: t }, finish_reason: null }],
  })}\n\n`).join('') + 'data: [DONE]\n\n';
  ctx.up.reset((s) => dribble(s,
    'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n' +
    chunked(events, [3, 40]).toString('latin1')));
  const res = await ask({ stream: true });
  assert.equal(res.status, 200, res.text);
  const got = parseSse(res.text).filter((e) => e.json?.choices?.[0]?.delta?.content)
    .map((e) => e.json.choices[0].delta.content);
  assert.deepEqual(got, ['tok0 ', 'tok1 ', 'tok2 ']);
  assert.equal(parseSse(res.text).at(-1).data, '[DONE]');
});

test('an answer without a length ends with the connection, which is not kept', async () => {
  const body = completion('until close');
  ctx.up.reset((s) => s.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n${body}`));
  for (let i = 0; i < 2; i++) {
    const res = await ask();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, body);
  }
  assert.equal(ctx.up.conns, 2);
});

test('an interim 100 Continue before the answer is passed over', async () => {
  const body = completion('after continue');
  ctx.up.reset((s) => s.write(`HTTP/1.1 100 Continue\r\nContent-Type: text/plain\r\n\r\n${ok(body)}`));
  const res = await ask();
  assert.equal(res.status, 200, res.text);
  assert.equal(res.text, body);
  assert.equal(res.headers['content-type'], 'application/json', 'the final answer\'s content type');
});

test('an answer cut short is a 502 saying so, and its connection is not used again', async () => {
  ctx.up.reset((s, req) => {
    if (ctx.up.requests.length === 1) s.end('HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"id":');
    else s.write(ok(completion('whole')));
  });
  const res = await ask();
  assertError(assert, res, 502, 'upstream_unreachable');
  assert.match(res.json().error.message, /"scripted".*outstanding read data/);
  const next = await ask();
  assert.equal(next.status, 200, next.text);
  assert.equal(ctx.up.conns, 2);
});

test('an answer that is not HTTP is a 502 naming the upstream', async () => {
  ctx.up.reset((s) => s.end('SSH-2.0-OpenSSH_9.2\r\n\r\n'));
  const res = await ask();
  assertError(assert, res, 502, 'upstream_unreachable');
  assert.match(res.json().error.message, /provider "scripted".*not HTTP\/1\.1/);
});

test('bytes past the answer: the connection is not used again', async () => {
  ctx.up.reset((s) => s.write(ok(completion('one')) + 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
  for (let i = 0; i < 2; i++) {
    const res = await ask();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'one');
  }
  assert.equal(ctx.up.conns, 2);
});

test('an upstream error status comes back with its body, and the connection is kept', async () => {
  ctx.up.reset((s) => {
    const body = JSON.stringify({ error: { message: 'bad temperature', type: 'invalid_request_error', param: 'temperature', code: null } });
    s.write(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  });
  for (const res of await onOneConnection(2)) {
    assert.equal(res.status, 400, res.text);
    assert.equal(res.json().error.message, 'bad temperature');
  }
  assert.equal(ctx.up.conns, 1);
});

test('a 408 on a kept connection is not taken for the next answer: the request goes on a new one', async () => {
  // A 408 on the idle connection, as some servers send before they close.
  // Reused within a second, the connection is not looked at first; the
  // 408 read in place of the answer sends the request once more on a new
  // connection (RFC 9110, 15.5.9).
  ctx.up.reset((s) => {
    s.write(ok(completion('fresh')));
    setTimeout(() => s.write('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n'), 20);
  });
  for (const res of await onOneConnection(2, { pauseMs: 100 })) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'fresh');
  }
  assert.deepEqual(ctx.up.requests.map((r) => r.conn), [1, 1, 2]);
  assert.equal(JSON.parse(ctx.up.requests[2].body).messages[0].content, 'n1', 'the same request again');
});

test('a 408 as the answer on a new connection reaches the client', async () => {
  ctx.up.reset((s) => s.write('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n'));
  const [res] = await onOneConnection(1);
  assert.equal(res.status, 408, res.text);
  assert.equal(ctx.up.requests.length, 1, 'not repeated');
});

test('what an upstream says on a kept connection unused for over a second is seen before it is used', async () => {
  ctx.up.reset((s) => {
    s.write(ok(completion('fresh')));
    setTimeout(() => s.write('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n'), 20);
  });
  for (const res of await onOneConnection(2, { pauseMs: 1300 })) {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json().choices[0].message.content, 'fresh');
  }
  assert.deepEqual(ctx.up.requests.map((r) => r.conn), [1, 2], 'the connection that spoke out of turn was not used again');
});

test('an upstream that refuses a large body before taking it all: its answer reaches the client', async () => {
  // As a server with a body limit does: it answers 413 from the head and
  // closes, with most of the body unread (the close resets the connection).
  const refusal = JSON.stringify({ error: { message: 'request body too large', type: 'invalid_request_error', param: null, code: null } });
  ctx.up.reset(null, (s) => {
    s.write(`HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nContent-Length: ${refusal.length}\r\nConnection: close\r\n\r\n${refusal}`);
    setTimeout(() => s.destroy(), 20);
  });
  const res = await ask({ messages: [{ role: 'user', content: 'x'.repeat(24 * 1024 * 1024) }] });
  assert.equal(res.status, 413, res.text.slice(0, 300));
  assert.equal(res.json().error.message, 'request body too large');
  assert.equal(ctx.up.requests.length, 1);
});
