// media.test.mjs - the media endpoints through aigwd: transcriptions (a
// multipart upload spooled, never held in the worker's memory, its model
// field rewritten), speech relayed as binary, images with their resolution
// tier, videos created and fetched back through their id, and the usage
// of each capability in aigwctl usage.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import OpenAI, { toFile } from 'openai';

import { assertError, test, useGateway } from './lib/harness.mjs';

const MIB = 1024 * 1024;
let client; let key; let keyId;

const ctx = useGateway({
  workers: 2,
  http: { keepalive_timeout: '5s', max_upload_size: '52m' },
  models: [
    { name: 'whisper', type: 'audio', targets: [{ provider: 'local', model: 'mock-whisper-large-v3' }] },
    { name: 'tts', type: 'audio', targets: [{ provider: 'local', model: 'mock-tts' }] },
    { name: 'painter', type: 'images', targets: [{ provider: 'local', model: 'mock-image' }] },
    { name: 'sora', type: 'video', targets: [{ provider: 'local', model: 'mock-video' }] },
  ],
}, async (gw) => {
  ({ key, id: keyId } = await gw.createKey({ name: 'media' }));
  client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0, timeout: 60000 });
});

// A WAV file of n bytes: a canonical 44-byte header (16 kHz, 16-bit mono:
// 32,000 bytes a second), then noise.
function wav(n) {
  const b = crypto.randomBytes(n);
  b.write('RIFF', 0, 'latin1');
  b.writeUInt32LE(n - 8, 4);
  b.write('WAVEfmt ', 8, 'latin1');
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(16000, 24);
  b.writeUInt32LE(32000, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write('data', 36, 'latin1');
  b.writeUInt32LE(n - 44, 40);
  return b;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

// VmHWM (peak resident memory, kB) of each worker of the gateway.
function workerPeaks() {
  return Object.fromEntries(ctx.gw.workerPids().map((pid) => {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return [pid, Number(/VmHWM:\s+(\d+) kB/.exec(status)[1])];
  }));
}

async function usageRows(by) {
  return (await ctx.gw.ctlJson(['usage', '--by', by, '--key', keyId])).rows;
}

function post(path, body, headers = {}) {
  return fetch(`${ctx.gw.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, ...headers },
    body,
  });
}

test('a multi-MiB transcription arrives whole at the upstream, model rewritten', async () => {
  const audio = wav(6 * MIB + 123);
  const res = await client.audio.transcriptions.create({
    file: await toFile(audio, 'speech.wav', { type: 'audio/wav' }),
    model: 'whisper',
    response_format: 'verbose_json',
  });
  assert.equal(res.text, `received ${audio.length} bytes sha256 ${sha256(audio)} model mock-whisper-large-v3`);
  assert.equal(res.duration, audio.length / 32000);
});

test('the model field may come before the file, and text answers come back as text', async () => {
  const audio = wav(100000);
  const form = new FormData();
  form.append('model', 'whisper');
  form.append('response_format', 'text');
  form.append('file', new Blob([audio], { type: 'audio/wav' }), 'a.wav');
  const res = await post('/v1/audio/transcriptions', form);
  assert.equal(res.status, 200, await res.clone().text());
  assert.match(res.headers.get('content-type'), /^text\/plain/);
  assert.equal(await res.text(), `received ${audio.length} bytes sha256 ${sha256(audio)} model mock-whisper-large-v3`);
});

test('a 50 MiB upload does not grow the worker memory with its size', async () => {
  const audio = wav(50 * MIB);
  const before = workerPeaks();
  const res = await client.audio.transcriptions.create({
    file: await toFile(audio, 'long.wav', { type: 'audio/wav' }),
    model: 'whisper',
    response_format: 'json',
  });
  assert.equal(res.text, `received ${audio.length} bytes sha256 ${sha256(audio)} model mock-whisper-large-v3`);
  const after = workerPeaks();
  for (const [pid, kb] of Object.entries(after)) {
    const grown = (kb - (before[pid] ?? 0)) * 1024;
    assert.ok(grown < audio.length / 4, `worker ${pid} peak memory grew by ${grown} bytes`);
    if (process.env.AIGW_MEDIA_DEBUG) console.log(`worker ${pid}: peak grew ${grown} bytes`);
  }
});

test('an upload over http.max_upload_size gets 413 in the OpenAI error shape', async () => {
  const audio = wav(53 * MIB);
  await assert.rejects(
    client.audio.transcriptions.create({ file: await toFile(audio, 'big.wav'), model: 'whisper' }),
    (err) => err.status === 413 && err.code === 'request_too_large' && /max_upload_size/.test(err.message),
  );
});

test('a transcription without a model, or not multipart, is refused with 400', async () => {
  const form = new FormData();
  form.append('file', new Blob([wav(1000)]), 'a.wav');
  let res = await post('/v1/audio/transcriptions', form);
  assertError(assert, await wrap(res), 400, 'missing_required_parameter', { param: 'model' });
  res = await post('/v1/audio/transcriptions', JSON.stringify({ model: 'whisper' }), { 'content-type': 'application/json' });
  assertError(assert, await wrap(res), 400, 'invalid_content_type');
});

// A fetch Response as the harness's assertError wants it.
async function wrap(res) {
  const text = await res.text();
  return { status: res.status, headers: Object.fromEntries(res.headers), text, json: () => JSON.parse(text) };
}

test('transcriptions record audio seconds and calls', async () => {
  const rows = await usageRows('capability');
  const t = rows.find((r) => r.capability === 'transcription');
  assert.ok(t, JSON.stringify(rows));
  // 6 MiB + 123 (verbose_json duration), 100,000 bytes (text: the WAV
  // header's estimate), 50 MiB (json: usage seconds, rounded up), and the
  // refused ones (413, 400) with none.
  const want = (6 * MIB + 123) / 32000 + Math.floor((100000 - 44) * 1000 / 32000) / 1000 + Math.ceil(50 * MIB / 32000);
  assert.ok(Math.abs(t.audio_seconds - want) < 0.01, `${t.audio_seconds} vs ${want}`);
  assert.ok(t.requests >= 3);
});

test('speech streams the audio bytes with their content type', async () => {
  const res = await post('/v1/audio/speech', JSON.stringify({ model: 'tts', input: 'Hello, wörld', voice: 'alloy' }),
    { 'content-type': 'application/json', 'x-mock-speech-bytes': '300000' });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'audio/mpeg');
  const bytes = Buffer.from(await res.arrayBuffer());
  assert.equal(bytes.length, 300000);
  assert.equal(bytes.subarray(0, 3).toString('latin1'), 'ID3');
  const sdk = await client.audio.speech.create({ model: 'tts', input: 'hi', voice: 'alloy', response_format: 'wav' });
  assert.equal(sdk.headers.get('content-type'), 'audio/wav');
  assert.equal((await sdk.arrayBuffer()).byteLength, 100000);
  const s = (await usageRows('capability')).find((r) => r.capability === 'speech');
  assert.equal(s.requests, 2);
  assert.equal(s.characters, 12 + 2);
});

test('speech without input is refused with 400', async () => {
  const res = await post('/v1/audio/speech', JSON.stringify({ model: 'tts', voice: 'alloy' }), { 'content-type': 'application/json' });
  assertError(assert, await wrap(res), 400, 'missing_required_parameter', { param: 'input' });
});

test('images are counted with their resolution tier', async () => {
  const a = await client.images.generate({ model: 'painter', prompt: 'a cat', n: 2, size: '1024x1792', quality: 'hd' });
  assert.equal(a.data.length, 2);
  assert.ok(a.data[0].b64_json);
  const b = await client.images.generate({ model: 'painter', prompt: 'a dog', response_format: 'url' });
  assert.equal(b.data.length, 1);
  assert.match(b.data[0].url, /^https:/);
  const rows = (await usageRows('capability,tier')).filter((r) => r.capability === 'images');
  assert.deepEqual(rows.map((r) => [r.tier, r.requests, r.images]),
    [['1024x1024/standard', 1, 1], ['1024x1792/hd', 1, 2]]);
});

// The tier is what the client asked for, kept to 11 and 10 bytes: cut
// between characters, since it is stored and exported.
test('an image tier a client made long is cut between characters', async () => {
  const res = await post('/v1/images/generations',
    JSON.stringify({ model: 'painter', prompt: 'a cow', size: 'xxxxxxxxxxé', quality: 'qqqqqqqqq€' }),
    { 'content-type': 'application/json' });
  assert.equal(res.status, 200);
  const tiers = (await usageRows('capability,tier')).map((r) => r.tier);
  assert.ok(tiers.includes('xxxxxxxxxx/qqqqqqqqq'), JSON.stringify(tiers));
  assert.ok(tiers.every((t) => !t.includes('\ufffd')), JSON.stringify(tiers));
});

test('a video is created, then fetched and downloaded through its id', async () => {
  let res = await post('/v1/videos', JSON.stringify({ model: 'sora', prompt: 'waves' }), { 'content-type': 'application/json' });
  assert.equal(res.status, 200);
  const created = await res.json();
  assert.equal(created.status, 'queued');
  assert.equal(created.model, 'mock-video');
  assert.match(created.id, /^video_mock_\d+\./);
  res = await fetch(`${ctx.gw.url}/v1/videos/${created.id}`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(res.status, 200);
  const got = await res.json();
  assert.equal(got.id, created.id);
  assert.equal(got.status, 'completed');
  res = await fetch(`${ctx.gw.url}/v1/videos/${created.id}/content`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'video/mp4');
  assert.equal((await res.arrayBuffer()).byteLength, 4096);
  // A multipart create (what newer SDKs send) works the same way.
  const form = new FormData();
  form.append('model', 'sora');
  form.append('prompt', 'clouds');
  form.append('input_reference', new Blob([Buffer.alloc(2048, 1)], { type: 'image/png' }), 'ref.png');
  res = await post('/v1/videos', form);
  assert.equal(res.status, 200, await res.clone().text());
  assert.equal((await res.json()).model, 'mock-video');
  const v = (await usageRows('capability')).find((r) => r.capability === 'video');
  assert.equal(v.requests, 4);
  assert.equal(v.videos, 2);
});

test('an unknown or forged video id is 404', async () => {
  let res = await fetch(`${ctx.gw.url}/v1/videos/video_123`, { headers: { authorization: `Bearer ${key}` } });
  assertError(assert, await wrap(res), 404, 'video_not_found');
  const forged = `video_1.${Buffer.from('nosuch\x1flocal\x1fmock-video').toString('base64url')}`;
  res = await fetch(`${ctx.gw.url}/v1/videos/${forged}`, { headers: { authorization: `Bearer ${key}` } });
  assertError(assert, await wrap(res), 404, 'video_not_found');
});

test('aigwctl usage shows the media columns', async () => {
  const r = await ctx.gw.ctl(['usage', '--by', 'capability', '--key', keyId]);
  assert.equal(r.code, 0, r.stderr);
  const [header, ...lines] = r.stdout.trim().split('\n');
  for (const col of ['capability', 'audio_seconds', 'characters', 'images', 'videos']) assert.match(header, new RegExp(col));
  for (const cap of ['transcription', 'speech', 'images', 'video']) assert.ok(lines.some((l) => l.startsWith(cap)), r.stdout);
});
