// passthru.test.mjs - the pass-through proxies /v1/mcp/NAME/...,
// /v1/agent/NAME/... and /v1/sandboxes/NAME/...: any method, query and
// body reach the declared upstream as they came, with the provider's
// credential instead of the client's key; answers (status, headers such as
// Mcp-Session-Id, SSE streams) come back as the upstream sent them; keys,
// grants, limits and the access log apply as for models.

import assert from 'node:assert/strict';

import { UPSTREAM_KEY, UPSTREAM_KEY_ENV, assertError, startGateway, startMock, test } from './lib/harness.mjs';

const ctx = {};

test('setup: a gateway with an MCP server, an agent and a sandbox', async () => {
  ctx.mock = await startMock();
  const upstream = { name: 'tools', base_url: `http://127.0.0.1:${ctx.mock.port}`, api_key_env: UPSTREAM_KEY_ENV };
  ctx.gw = await startGateway({
    workers: 2,
    mock: ctx.mock,
    providers: [upstream],
    mcp: [{ name: 'github', provider: 'tools', path: '/pt/mcp' }],
    agents: [{ name: 'coder', provider: 'tools', path: '/pt/agent' }],
    sandboxes: [{ name: 'py', provider: 'tools', path: '/pt/sbx' }],
  });
  ctx.key = (await ctx.gw.createKey()).key;
});

const auth = () => ({ Authorization: `Bearer ${ctx.key}` });

test('an MCP POST reaches the server with its body, query and headers; the session header comes back', async () => {
  const { gw } = ctx;
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} });
  const r = await gw.request({
    method: 'POST',
    path: '/v1/mcp/github/mcp?x=1&y=two',
    headers: { ...auth(), 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'X-Custom': 'kept' },
    body,
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers['mcp-session-id'], 'sess-0042');
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.ok(r.headers['x-request-id']);
  const echo = JSON.parse(r.body.toString());
  assert.equal(echo.method, 'POST');
  assert.equal(echo.path, '/pt/mcp/mcp');
  assert.equal(echo.query, 'x=1&y=two');
  assert.equal(echo.body, body);
  assert.equal(echo['content-type'], 'application/json');
  assert.equal(echo['x-custom'], 'kept');
  assert.equal(echo['x-request-id'], r.headers['x-request-id']);
  assert.equal(echo.authorization, `Bearer ${UPSTREAM_KEY}`, 'the provider credential, never the client key');

  // The session header the client sends back reaches the server.
  const r2 = await gw.request({ method: 'DELETE', path: '/v1/mcp/github/mcp', headers: { ...auth(), 'Mcp-Session-Id': 'sess-0042' } });
  assert.equal(r2.status, 200);
  const e2 = JSON.parse(r2.body.toString());
  assert.equal(e2.method, 'DELETE');
  assert.equal(e2['mcp-session-id'], 'sess-0042');
});

test('an SSE stream from the server is relayed event by event, unbuffered', async () => {
  const { gw } = ctx;
  const res = await gw.request({
    method: 'GET',
    path: '/v1/mcp/github/mcp',
    headers: { ...auth(), Accept: 'text/event-stream', 'x-mock-chunk-delay-ms': '150' },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/event-stream/);
  assert.deepEqual(res.events.map((e) => JSON.parse(e.data).seq), [0, 1, 2]);
  // Three pieces on the wire, as the server sent them (not one buffered body).
  assert.ok(res.pieces.length >= 3, `${res.pieces.length} pieces`);
});

test('agents and sandboxes: any method, bodiless answers, upstream errors passed as they are', async () => {
  const { gw } = ctx;
  let r = await gw.request({ method: 'PUT', path: '/v1/agent/coder/tasks/7', headers: { ...auth(), 'Content-Type': 'text/plain' }, body: 'go' });
  assert.equal(r.status, 200);
  let e = JSON.parse(r.body.toString());
  assert.equal(e.method, 'PUT');
  assert.equal(e.path, '/pt/agent/tasks/7');
  assert.equal(e.body, 'go');
  r = await gw.request({ method: 'GET', path: '/v1/sandboxes/py/files?glob=*.py', headers: auth() });
  e = JSON.parse(r.body.toString());
  assert.equal(e.method, 'GET');
  assert.equal(e.query, 'glob=*.py');
  assert.equal(e.body, '');
  r = await gw.request({ method: 'POST', path: '/v1/sandboxes/py/status/204', headers: auth(), body: '{}' });
  assert.equal(r.status, 204);
  assert.equal(r.headers['x-upstream'], 'mock');
  r = await gw.request({ method: 'POST', path: '/v1/agent/coder/run', headers: { ...auth(), 'x-mock-status': '409' }, body: '{}' });
  assert.equal(r.status, 409, 'the upstream\'s own answer, not a gateway error');
});

test('unknown names, missing keys and keys not allowed are refused; the upstream down is a 502', async () => {
  const { gw } = ctx;
  assertError(assert, await gw.request({ method: 'POST', path: '/v1/mcp/nope/x', headers: auth(), body: '{}' }), 404, 'unknown_url');
  assertError(assert, await gw.request({ method: 'POST', path: '/v1/mcp/github/x', body: '{}' }), 401, 'missing_api_key');
  const narrow = await gw.createKey({ models: ['demo'] });
  const r = await gw.request({ method: 'POST', path: '/v1/mcp/github/x', headers: { Authorization: `Bearer ${narrow.key}` }, body: '{}' });
  assertError(assert, r, 403, 'model_not_allowed');
  assert.match(r.json().error.message, /mcp\/github/);
  const allowed = await gw.createKey({ models: ['demo', 'mcp/github'] });
  const ok = await gw.request({ method: 'POST', path: '/v1/mcp/github/x', headers: { Authorization: `Bearer ${allowed.key}` }, body: '{}' });
  assert.equal(ok.status, 200);
  assert.equal((await gw.request({ method: 'POST', path: '/v1/agent/coder/x', headers: { Authorization: `Bearer ${allowed.key}` }, body: '{}' })).status, 403);
  // An unknown resource in --models is refused when the key is made.
  const bad = await gw.ctl(['key', 'create', '--name', 'x', '--models', 'mcp/nope']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /unknown model "mcp\/nope"/);
});

test('grants on mcp/NAME let a user\'s key call it; limits and the access log apply', async () => {
  const { gw } = ctx;
  const tenant = `t-${Date.now()}`;
  await gw.ctl(['tenant', 'add', tenant]);
  await gw.ctl(['user', 'add', 'mcpuser', '--tenant', tenant]);
  const g = await gw.ctl(['grant', 'mcpuser', 'endpoint-user', '--model', 'mcp/github']);
  assert.equal(g.code, 0, g.stderr);
  const k = await gw.ctlJson(['key', 'create', '--name', 'mcpk', '--user', 'mcpuser']);
  const h = { Authorization: `Bearer ${k.key}` };
  const r = await gw.request({ method: 'POST', path: '/v1/mcp/github/mcp', headers: h, body: '{}' });
  assert.equal(r.status, 200);
  assert.equal((await gw.request({ method: 'POST', path: '/v1/agent/coder/x', headers: h, body: '{}' })).status, 403);
  const rec = await gw.accessRecord(r.headers['x-request-id']);
  assert.equal(rec.model, 'mcp/github');
  assert.equal(rec.target, 'tools');
  assert.equal(rec.status, 200);
  assert.equal(rec.key, k.id);
  // The user's RPM limit counts pass-through calls too.
  await gw.ctlJson(['limit', 'set', '--user', 'mcpuser', '--rpm', '2']);
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await gw.request({ method: 'POST', path: '/v1/mcp/github/mcp', headers: h, body: '{}' })).status);
  assert.deepEqual(statuses, [200, 200, 429]);
});

test('the upstream unreachable: 502 in OpenAI\'s shape', async () => {
  await ctx.mock.stop();
  const r = await ctx.gw.request({ method: 'POST', path: '/v1/sandboxes/py/x', headers: auth(), body: '{}' });
  assertError(assert, r, 502, 'upstream_error');
  assert.match(r.json().error.message, /sandbox\/py could not be reached/);
});

test('a bad pass-through section is refused with its position', async () => {
  ctx.gw.rewriteConfig({ mcp: [{ name: 'bad name', provider: 'tools' }] });
  const r = await ctx.gw.ctl(['reload']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /aigw\.yaml:\d+:\d+: "mcp\[0\]\.name" must be letters, digits/);
  ctx.gw.rewriteConfig({ mcp: [{ name: 'x', provider: 'nowhere' }] });
  const r2 = await ctx.gw.ctl(['reload']);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /no provider named "?nowhere"?/);
  await ctx.gw.stop();
});
