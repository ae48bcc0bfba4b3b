// load.mjs - many requests through the gateway from a few clients at
// once, each on a keep-alive connection of its own, and what answered
// each: status, x-aigw-target, x-aigw-attempts, when it was sent.

import { HttpConn } from './http.mjs';

// Send requests from `concurrency` clients until n have been sent (or,
// with until, until until() is true when a client is about to send).
// make(i) gives request i as {path, headers, body, method} (see
// formatRequest).  Resolves to the list of results, in the order they
// were sent:
//   {i, status, target, attempts, sent, done, text, error}
// sent and done are performance.now() times; text is the body of an answer
// other than 200; error is set, and status 0, when no answer came (the
// connection failed).
export async function load(port, { n = Infinity, until, concurrency = 8, make, timeoutMs = 15000 }) {
  const results = [];
  let next = 0;
  const more = () => next < n && !(until && until());

  const client = async () => {
    let conn = null;
    while (more()) {
      const i = next++;
      const req = make(i);
      const r = { i, status: 0, target: null, attempts: null, sent: performance.now() };
      results.push(r);
      try {
        if (!conn || conn.ended) conn = await HttpConn.open(port);
        r.sent = performance.now();
        await conn.send({ method: 'POST', ...req });
        const res = await conn.readResponse({ timeoutMs });
        r.status = res.status;
        r.target = res.headers['x-aigw-target'] ?? null;
        r.attempts = res.headers['x-aigw-attempts'] ? Number(res.headers['x-aigw-attempts']) : null;
        if (res.status !== 200) r.text = res.text.slice(0, 300);
        if (/\bclose\b/i.test(res.headers.connection ?? '')) { conn.close(); conn = null; }
      } catch (err) {
        r.error = err.message.slice(0, 300);
        if (conn) conn.close();
        conn = null;
      }
      r.done = performance.now();
    }
    if (conn) conn.close();
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  return results;
}

// {target: count} over results.
export function countTargets(results) {
  const seen = {};
  for (const r of results) if (r.target) seen[r.target] = (seen[r.target] ?? 0) + 1;
  return seen;
}

// The results that did not succeed, as short descriptions.
export function failures(results) {
  return results.filter((r) => r.status !== 200)
    .map((r) => `#${r.i}: ${r.error ?? `${r.status} ${r.text ?? ''}`}`);
}
