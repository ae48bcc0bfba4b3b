// http.mjs - a small HTTP/1.x client on raw TCP (node:net), for tests that
// need what fetch hides: one request per connection or many on one,
// pipelining, partial requests, hop-by-hop headers, HTTP/1.0, and the time
// at which each piece of a streamed answer arrived.
//
// Every wait is bounded: a read that does not complete in time rejects.

import net from 'node:net';

const CRLF = '\r\n';

// A request as bytes.  headers: an object or a list of [name, value] (for
// repeated names); body: a string, a Buffer, or an object sent as JSON.
// Host is added when missing; Content-Length when there is a body and no
// Transfer-Encoding.
export function formatRequest({
  method = 'GET', path = '/', headers = {}, body, version = '1.1', host = 'aigw.test',
} = {}) {
  const list = Array.isArray(headers) ? [...headers] : Object.entries(headers);
  const has = (name) => list.some(([k]) => k.toLowerCase() === name);
  let payload = body;
  if (payload !== undefined && payload !== null && !Buffer.isBuffer(payload) &&
      typeof payload !== 'string') {
    payload = JSON.stringify(payload);
    if (!has('content-type')) list.push(['Content-Type', 'application/json']);
  }
  if (payload !== undefined && payload !== null && typeof payload === 'string')
    payload = Buffer.from(payload);
  if (!has('host')) list.unshift(['Host', host]);
  if (payload && !has('content-length') && !has('transfer-encoding'))
    list.push(['Content-Length', String(payload.length)]);
  const head = `${method} ${path} HTTP/${version}${CRLF}` +
    list.map(([k, v]) => `${k}: ${v}${CRLF}`).join('') + CRLF;
  return payload ? Buffer.concat([Buffer.from(head, 'latin1'), payload]) : Buffer.from(head, 'latin1');
}

// Encode a body in the chunked transfer coding, in pieces of the sizes given.
export function chunked(body, sizes = [7]) {
  const data = Buffer.from(body);
  const parts = [];
  let off = 0;
  for (let i = 0; off < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - off);
    parts.push(Buffer.from(n.toString(16) + CRLF), data.subarray(off, off + n), Buffer.from(CRLF));
    off += n;
  }
  parts.push(Buffer.from('0' + CRLF + CRLF));
  return Buffer.concat(parts);
}

// Parse one response at the start of buf.  Returns null when more bytes are
// needed (eof: the peer has closed, so a body without a length ends here),
// or {version, status, reason, headers, body, chunks, consumed}.  chunks are
// the body's pieces as framed on the wire: [{data, end}] with end the offset
// in buf just past the piece (for a close-delimited body, one piece).
export function parseResponse(buf, { head = false, eof = false } = {}) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split(CRLF);
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new Error(`malformed status line: ${JSON.stringify(lines[0])}`);
  const headers = {};
  const rawHeaders = [];
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const status = Number(m[2]);
  const res = { version: m[1], status, reason: m[3] ?? '', headers, rawHeaders };
  let pos = end + 4;
  const chunks = [];
  if (head || status === 204 || status === 304 || (status >= 100 && status < 200)) {
    // no body
  } else if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
    for (;;) {
      const eol = buf.indexOf(CRLF, pos);
      if (eol < 0) return null;
      const size = parseInt(buf.subarray(pos, eol).toString('latin1').split(';')[0], 16);
      if (Number.isNaN(size)) throw new Error('malformed chunk size');
      if (size === 0) {
        // trailers, then an empty line
        let p = eol + 2;
        for (;;) {
          const e = buf.indexOf(CRLF, p);
          if (e < 0) return null;
          if (e === p) { pos = e + 2; break; }
          p = e + 2;
        }
        break;
      }
      if (buf.length < eol + 2 + size + 2) return null;
      chunks.push({ data: buf.subarray(eol + 2, eol + 2 + size), end: eol + 2 + size + 2 });
      pos = eol + 2 + size + 2;
    }
  } else if (headers['content-length'] !== undefined) {
    const len = Number(headers['content-length']);
    if (buf.length < pos + len) return null;
    if (len > 0) chunks.push({ data: buf.subarray(pos, pos + len), end: pos + len });
    pos += len;
  } else {
    // delimited by the close of the connection
    if (!eof) return null;
    if (buf.length > pos) chunks.push({ data: buf.subarray(pos), end: buf.length });
    pos = buf.length;
  }
  res.chunks = chunks;
  res.body = Buffer.concat(chunks.map((c) => c.data));
  res.consumed = pos;
  return res;
}

// Server-sent events in text; each event is {data, json} with data the
// joined "data:" lines and json its parse (undefined for [DONE] or non-JSON).
export function parseSse(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    if (block.trim() === '') continue;
    const data = block.split(/\r?\n/).filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
    let json;
    try { json = JSON.parse(data); } catch { json = undefined; }
    events.push({ data, json });
  }
  return events;
}

function decorate(res, arrivalOf) {
  const text = res.body.toString('utf8');
  res.text = text;
  res.json = () => JSON.parse(text);
  // Each wire piece of the body with the time its last byte arrived.
  res.pieces = res.chunks.map((c) => ({ data: c.data.toString('utf8'), t: arrivalOf(c.end) }));
  if (/text\/event-stream/.test(res.headers['content-type'] ?? '')) {
    // Events stamped with the arrival of the piece that completed them.
    res.events = [];
    let pending = '';
    for (const p of res.pieces) {
      pending += p.data;
      const cut = pending.lastIndexOf('\n\n');
      if (cut < 0) continue;
      for (const ev of parseSse(pending.slice(0, cut + 2))) res.events.push({ ...ev, t: p.t });
      pending = pending.slice(cut + 2);
    }
    for (const ev of parseSse(pending)) res.events.push({ ...ev, t: res.pieces.at(-1)?.t });
  }
  delete res.chunks;
  return res;
}

// One client connection.  Bytes received are kept until a response is
// read from them; each arrival is time-stamped.
export class HttpConn {
  static open(port, { host = '127.0.0.1', timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host });
      const timer = setTimeout(() => { sock.destroy(); reject(new Error(`connect ${host}:${port}: timed out`)); }, timeoutMs);
      sock.once('connect', () => { clearTimeout(timer); resolve(new HttpConn(sock)); });
      sock.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.base = 0;        // stream offset of buf[0]
    this.total = 0;       // bytes received so far
    this.arrivals = [];   // [{t, end}] end: stream offset after that read
    this.ended = false;   // the peer closed (or the connection failed)
    this.error = null;
    this.waiters = new Set();
    sock.setNoDelay(true);
    sock.on('data', (d) => {
      this.total += d.length;
      this.arrivals.push({ t: performance.now(), end: this.total });
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    const done = () => { this.ended = true; this.wake(); };
    sock.on('end', done);
    sock.on('close', done);
    sock.on('error', (err) => { this.error = err; done(); });
  }

  wake() {
    for (const w of this.waiters) w();
  }

  // Wait until pred() is true; rejects after timeoutMs.
  waitFor(pred, timeoutMs, what = 'condition') {
    return new Promise((resolve, reject) => {
      const check = () => {
        let ok;
        try { ok = pred(); } catch (err) { cleanup(); reject(err); return; }
        if (ok) { cleanup(); resolve(ok); }
      };
      const cleanup = () => { clearTimeout(timer); this.waiters.delete(check); };
      const timer = setTimeout(() => { cleanup(); reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received so far: ${JSON.stringify(this.buf.toString('latin1').slice(0, 600))}`)); }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  write(data) {
    return new Promise((resolve, reject) => {
      if (this.sock.destroyed) { reject(new Error('write on a closed connection')); return; }
      this.sock.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  send(req) {
    return this.write(formatRequest(req));
  }

  // Read the next complete response.  head: it answers a HEAD request.
  async readResponse({ head = false, timeoutMs = 10000 } = {}) {
    let res = null;
    await this.waitFor(() => {
      res = parseResponse(this.buf, { head, eof: this.ended });
      if (res) return true;
      if (this.ended) {
        throw new Error(`connection closed before a complete response (${this.error?.code ?? 'closed'}); received: ` +
          JSON.stringify(this.buf.toString('latin1').slice(0, 600)));
      }
      return false;
    }, timeoutMs, 'a response');
    const base = this.base;
    const arrivalOf = (end) => this.arrivals.find((a) => a.end >= base + end)?.t;
    this.buf = this.buf.subarray(res.consumed);
    this.base += res.consumed;
    return decorate(res, arrivalOf);
  }

  // true when the peer closes within timeoutMs, false if still open then.
  async closedWithin(timeoutMs) {
    try {
      await this.waitFor(() => this.ended, timeoutMs, 'the close');
      return true;
    } catch {
      return false;
    }
  }

  // Bytes received but not yet taken by readResponse.
  get pending() {
    return this.buf;
  }

  close() {
    this.sock.destroy();
  }
}

// One request on a connection of its own ("Connection: close" unless the
// headers name a Connection).  Returns the response (see decorate).
export async function request(port, opts = {}) {
  const { timeoutMs = 15000 } = opts;
  const headers = Array.isArray(opts.headers) ? [...(opts.headers ?? [])] : Object.entries(opts.headers ?? {});
  if (!headers.some(([k]) => k.toLowerCase() === 'connection')) headers.push(['Connection', 'close']);
  const conn = await HttpConn.open(port, { timeoutMs });
  try {
    await conn.send({ ...opts, headers });
    return await conn.readResponse({ head: opts.method === 'HEAD', timeoutMs });
  } finally {
    conn.close();
  }
}

// Send bytes as they are, then collect everything the server sends until
// it closes or timeoutMs passes.  bytes may be a list of pieces with delays
// between them: [bytes, {delayMs}, bytes, ...].
export async function raw(host, port, bytes, { timeoutMs = 3000 } = {}) {
  const conn = await HttpConn.open(port, { host });
  try {
    for (const piece of Array.isArray(bytes) ? bytes : [bytes]) {
      if (piece && typeof piece === 'object' && 'delayMs' in piece) {
        await new Promise((r) => setTimeout(r, piece.delayMs));
      } else if (!conn.ended) {
        await conn.write(piece).catch(() => {});
      }
    }
    const closed = await conn.closedWithin(timeoutMs);
    const data = conn.pending;
    const responses = [];
    let off = 0;
    for (;;) {
      const r = parseResponse(data.subarray(off), { eof: closed });
      if (!r || r.consumed === 0) break;
      responses.push(decorate(r, () => undefined));
      off += r.consumed;
      if (off >= data.length) break;
    }
    return { data, text: data.toString('latin1'), closed, responses, error: conn.error };
  } finally {
    conn.close();
  }
}
