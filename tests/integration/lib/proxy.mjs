// proxy.mjs - a small HTTP proxy, in this test process, in front of one
// aigw-mock, to make one upstream differ from the others: the mock's
// x-mock-* headers reach every target alike, the proxy's settings only
// its own.
//
// The settings are fields of the proxy, changed at any time and read by
// each request as it arrives:
//   delayMs   wait this long before passing the request on (a slower
//             first byte)
//   status    answer this status itself, without asking the mock (0: pass
//             the request on), with an error body in OpenAI's shape
//   headers   extra headers of those answers, e.g. {'Retry-After': '7'}
// hits counts the requests that arrived.  stop() closes the listener and
// every connection (the upstream is down: connections are refused);
// start() listens again on the same port.

import http from 'node:http';

export async function startProxy(mock, { delayMs = 0, status = 0, headers = {} } = {}) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set();
  // Delays under way: stop() drops them, so that no request held back
  // goes on (or keeps this process alive) once the proxy is down.
  const timers = new Set();
  const wait = (ms) => new Promise((resolve) => {
    const t = setTimeout(() => { timers.delete(t); resolve(); }, ms);
    timers.add(t);
  });
  const proxy = {
    delayMs, status, headers, hits: 0, port: 0, server: null,
    get base() { return `http://127.0.0.1:${this.port}/v1`; },
  };

  const handle = (req, res) => {
    proxy.hits++;
    const body = [];
    req.on('data', (d) => body.push(d));
    req.on('end', async () => {
      if (proxy.delayMs > 0) await wait(proxy.delayMs);
      if (proxy.status) {
        const text = JSON.stringify({
          error: {
            message: `proxy injected status ${proxy.status}`, type: 'proxy_error', param: null,
            code: `proxy_status_${proxy.status}`,
          },
        });
        res.writeHead(proxy.status, { 'Content-Type': 'application/json', ...proxy.headers });
        res.end(text);
        return;
      }
      const up = http.request({
        host: '127.0.0.1', port: mock.port, method: req.method, path: req.url, headers: req.headers, agent,
      }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
        ur.on('error', () => res.destroy());
      });
      up.on('error', () => res.destroy());
      up.end(Buffer.concat(body));
    });
  };

  proxy.start = () => new Promise((resolve, reject) => {
    const srv = http.createServer(handle);
    srv.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    srv.once('error', reject);
    srv.listen(proxy.port, '127.0.0.1', () => {
      proxy.port = srv.address().port;
      proxy.server = srv;
      resolve(proxy);
    });
  });

  proxy.stop = () => new Promise((resolve) => {
    const srv = proxy.server;
    proxy.server = null;
    if (!srv) { resolve(); return; }
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const s of sockets) s.destroy();
    srv.close(() => resolve());
  });

  proxy.close = async () => {
    await proxy.stop();
    agent.destroy();
  };

  return proxy.start();
}
