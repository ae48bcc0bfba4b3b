// config.test.mjs - aigwd's command line and the configuration check:
// -t accepts a good file and names FILE:LINE:COLUMN for a bad one, -h
// prints the usage, and a bad file stops aigwd before it starts anything.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';

import { AIGWD, run, tempDir, test } from './lib/harness.mjs';

const dir = tempDir('aigw-config-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function writeConfig(text) {
  const file = path.join(dir, `case${++n}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

// A complete, valid configuration; its state_dir and socket are never made
// by -t.
const good = (extra = '') => `\
listen: ["127.0.0.1:18080"]
state_dir: ${dir}/state
admin: { socket: ${dir}/aigw.sock, mode: "0600" }
workers: 2
log: { level: info, access: true }
http: { max_header_size: 16k, max_body_size: 8m, keepalive_timeout: 75s, read_timeout: 30s, write_timeout: 30s }
upstream: { max_response_size: 64m }
timeouts: { connect: 5s, first_byte: 120s, idle: 60s, total: 600s }
providers:
  - { name: local, type: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: AIGW_TEST_NOT_SET }
models:
  - name: demo
    timeouts: { first_byte: 500ms }
    targets: [ { provider: local, model: mock-small } ]
${extra}`;

// Where `needle` starts in text (its n-th occurrence), 1-based.
function position(text, needle, nth = 1) {
  let at = -1;
  for (let i = 0; i < nth; i++) at = text.indexOf(needle, at + 1);
  assert.ok(at >= 0, `"${needle}" is in the test's own file`);
  const before = text.slice(0, at).split('\n');
  return { line: before.length, column: before.at(-1).length + 1 };
}

async function check(text) {
  const file = writeConfig(text);
  return { file, ...(await run(AIGWD, ['-t', '-c', file])) };
}

// The one-line diagnostic FILE:LINE:COLUMN: message.
function diagnostic(r) {
  const lines = r.stderr.trim().split('\n');
  const m = /^(.*):(\d+):(\d+): (.+)$/.exec(lines.at(-1));
  assert.ok(m, `a FILE:LINE:COLUMN: message diagnostic, got ${JSON.stringify(r.stderr)}`);
  return { file: m[1], line: Number(m[2]), column: Number(m[3]), message: m[4] };
}

test('-t accepts a valid configuration and exits 0', async () => {
  const r = await check(good());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /valid/);
});

test('-t creates neither the state directory nor the admin socket', async () => {
  const r = await check(good());
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.existsSync(`${dir}/state`), false);
  assert.equal(fs.existsSync(`${dir}/aigw.sock`), false);
});

test('-t names file, line and column of an unknown key', async () => {
  const text = good().replace('workers: 2', 'wrokers: 2');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.equal(d.file, r.file);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, 'wrokers'));
  assert.match(d.message, /unknown key "wrokers"/);
  assert.match(d.message, /workers/, 'the message lists the keys that are allowed');
});

test('-t names an unknown key inside a nested section', async () => {
  const text = good().replace('read_timeout: 30s', 'read_timeuot: 30s');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, 'read_timeuot'));
  assert.match(d.message, /read_timeuot/);
});

test('-t points at a target whose provider is not declared', async () => {
  const text = good().replace('{ provider: local, model: mock-small }', '{ provider: nowhere, model: mock-small }');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, 'nowhere'));
  assert.match(d.message, /nowhere/);
  assert.match(d.message, /local/, 'the message lists the declared providers');
});

test('-t reports a YAML syntax error with its position', async () => {
  // An unterminated flow sequence.
  const text = good().replace('listen: ["127.0.0.1:18080"]', 'listen: ["127.0.0.1:18080"');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.equal(d.file, r.file);
  assert.match(d.message, /YAML syntax error/);
  assert.ok(d.line >= 1 && d.line <= 3, `line ${d.line} is near the unterminated list`);
  assert.ok(d.column >= 1);
});

test('-t reports bad indentation at the line where it happens', async () => {
  const text = good().replace('  - name: demo\n', '  - name: demo\n   bad: indentation\n');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.match(d.message, /YAML syntax error/);
  assert.equal(d.line, position(text, 'bad: indentation').line);
});

// Values that are refused, each at the position of the value.
const badValues = [
  ['a worker count of 0', 'workers: 2', 'workers: 0', 'workers: 0', /between 1 and/, 9],
  ['a duration that is not one', 'first_byte: 120s', 'first_byte: soon', 'soon', /duration/],
  ['a size that is not one', 'max_body_size: 8m', 'max_body_size: big', 'big', /size/],
  ['an admin socket open to every user', 'mode: "0600"', 'mode: "0666"', '"0666"', /0666/],
  ['a base_url without http(s)', 'base_url: "http://127.0.0.1:9/v1"', 'base_url: "ftp://127.0.0.1:9/v1"', '"ftp:', /http/],
  ['an unknown provider type', 'type: openai', 'type: carrier-pigeon', 'carrier-pigeon', /not supported/],
  ['an unknown log level', 'level: info', 'level: loud', 'loud', /error, warn, info, debug/],
];
for (const [what, from, to, needle, re, skip = 0] of badValues) {
  test(`-t refuses ${what} and points at the value`, async () => {
    const text = good().replace(from, to);
    const r = await check(text);
    assert.equal(r.code, 1, r.stderr);
    const d = diagnostic(r);
    const at = position(text, needle);
    assert.deepEqual({ line: d.line, column: d.column }, { line: at.line, column: at.column + skip });
    assert.match(d.message, re);
  });
}

test('-t refuses a duplicate model name and names the first one', async () => {
  const text = good('  - name: demo\n    targets: [ { provider: local, model: other } ]\n');
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, 'demo', 2));
  assert.match(d.message, /duplicate model name "demo"/);
  assert.match(d.message, new RegExp(`line ${position(text, 'demo').line}`));
});

test('-t refuses a configuration without models', async () => {
  const text = good().replace(/models:[\s\S]*$/, '');
  const r = await check(text);
  assert.equal(r.code, 1);
  assert.match(diagnostic(r).message, /missing required key "models"/);
});

test('-t refuses an api_key_file that cannot be read, without quoting a secret', async () => {
  const text = good().replace('api_key_env: AIGW_TEST_NOT_SET', `api_key_file: ${dir}/no-such-key`);
  const r = await check(text);
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, `${dir}/no-such-key`));
  assert.match(d.message, /api_key_file/);
});

test('-t reads a secret from api_key_file and never prints it', async () => {
  const keyFile = path.join(dir, 'provider.key');
  fs.writeFileSync(keyFile, 'sk-provider-file-secret-123\n', { mode: 0o600 });
  const text = good().replace('api_key_env: AIGW_TEST_NOT_SET', `api_key_file: ${keyFile}`);
  const r = await check(text);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr + r.stdout, /sk-provider-file-secret-123/);
});

test('-t on a missing file names the file and exits 1', async () => {
  const file = path.join(dir, 'does-not-exist.yaml');
  const r = await run(AIGWD, ['-t', '-c', file]);
  assert.equal(r.code, 1);
  assert.ok(r.stderr.includes(file), r.stderr);
});

test('-t refuses an empty file', async () => {
  const r = await check('');
  assert.equal(r.code, 1);
  assert.match(diagnostic(r).message, /empty/);
});

test('aigwd refuses to start on a bad configuration, with the same diagnostic', async () => {
  const text = good().replace('workers: 2', 'wrokers: 2');
  const file = writeConfig(text);
  const r = await run(AIGWD, ['-c', file], { timeoutMs: 10000 });
  assert.equal(r.code, 1);
  const d = diagnostic(r);
  assert.deepEqual({ line: d.line, column: d.column }, position(text, 'wrokers'));
  assert.equal(fs.existsSync(`${dir}/aigw.sock`), false);
});

test('-h prints the usage on stdout and exits 0', async () => {
  const r = await run(AIGWD, ['-h']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^usage: aigwd \[-ht\] \[-c file\] \[-p pidfile\]\n/);
  for (const opt of ['-c', '-h', '-p', '-t']) assert.match(r.stdout, new RegExp(`\\n\\s+${opt}\\b`));
});

test('an unknown option prints the usage on stderr and exits 1', async () => {
  const r = await run(AIGWD, ['-x']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /usage: aigwd/);
  assert.equal(r.stdout, '');
});

test('a stray argument is a usage error', async () => {
  const r = await run(AIGWD, ['-t', '-c', writeConfig(good()), 'extra']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /usage: aigwd/);
});
