// moderation.test.mjs - safety.moderation: the request's text is sent to a
// moderations model of the configuration (the mock's /v1/moderations
// flags "hurt" as violence and "hate" as hate); a flagged configured
// category blocks (400 content_blocked naming the categories) or flags the
// request; other categories pass; a model with safety: [] is not asked;
// a moderation model that cannot answer lets requests through, or blocks
// them with on_error: block; an unknown model is a configuration error.

import assert from 'node:assert/strict';

import { assertError, freePort, test, useGateway } from './lib/harness.mjs';

const MODELS = [
  { name: 'mod', targets: [{ provider: 'local', model: 'omni-moderation-latest' }] },
  { name: 'open', safety: [], targets: [{ provider: 'local', model: 'mock-small' }] },
  { name: 'listed', safety: ['moderation'], targets: [{ provider: 'local', model: 'mock-small' }] },
];

const ctx = useGateway({
  workers: 2,
  safety: { moderation: { model: 'mod', categories: ['violence'], action: 'block' } },
  models: MODELS,
}, async (gw, c) => { c.key = (await gw.createKey()).key; });

const say = (text, model = 'demo') => ctx.gw.chat(ctx.key, { model, messages: [{ role: 'user', content: text }] });

test('a flagged configured category blocks the request, naming the categories', async () => {
  const r = await say('I will hurt them');
  const err = assertError(assert, r, 400, 'content_blocked');
  assert.match(err.message, /blocked by the moderation model \(categories: \["violence"\]\)/);
  await ctx.gw.waitLog(/moderation model mod flagged the input: \["violence"\] \(block\)/);
  assert.equal((await say('a calm request')).status, 200);
  // hate is flagged by the model but not configured: it passes.
  assert.equal((await say('I hate mondays')).status, 200);
  // Text parts and the later messages are read too.
  const parts = await ctx.gw.chat(ctx.key, {
    messages: [{ role: 'user', content: 'hello' }, { role: 'user', content: [{ type: 'text', text: 'then hurt him' }] }],
  });
  assertError(assert, parts, 400, 'content_blocked');
});

test('a model with safety: [] is not asked; one that lists moderation is', async () => {
  assert.equal((await say('I will hurt them', 'open')).status, 200);
  assertError(assert, await say('I will hurt them', 'listed'), 400, 'content_blocked');
});

test('action flag lets the request through and logs the verdict', async () => {
  const { gw } = ctx;
  gw.rewriteConfig({ safety: { moderation: { model: 'mod', action: 'flag' } } });
  assert.equal((await gw.ctl(['reload'])).code, 0);
  const r = await say('I will hurt them and I hate it');
  assert.equal(r.status, 200);
  await gw.waitLog(/moderation model mod flagged the input: \["hate","violence"\] \(flag\)|flagged the input: \["violence","hate"\] \(flag\)/);
});

test('a moderation model that cannot answer: on_error allow lets requests through, block answers 503', async () => {
  const { gw } = ctx;
  const dead = `http://127.0.0.1:${await freePort()}/v1`;
  // The moderation model moved to a provider nobody listens for.
  gw.rewriteConfig({
    providers: [...gw.cfg.providers, { name: 'gone', base_url: dead }],
    models: gw.cfg.models.map((m) => (m.name === 'mod' ? { name: 'mod', targets: [{ provider: 'gone', model: 'm' }] } : m)),
    safety: { moderation: { model: 'mod' } },
  });
  assert.equal((await gw.ctl(['reload'])).code, 0, 'reload');
  assert.equal((await say('I will hurt them')).status, 200);
  await gw.waitLog(/moderation model mod: .*; the request goes on/);
  gw.rewriteConfig({ safety: { moderation: { model: 'mod', on_error: 'block' } } });
  assert.equal((await gw.ctl(['reload'])).code, 0);
  assertError(assert, await say('anything at all'), 503, 'moderation_unavailable');
});

test('a moderation model that does not exist, or action mask, is refused with its position', async () => {
  const { gw } = ctx;
  gw.rewriteConfig({ safety: { moderation: { model: 'nope' } } });
  let r = await gw.ctl(['reload']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /aigw\.yaml:\d+:\d+: no model named "?nope"? for safety\.moderation/);
  gw.rewriteConfig({ safety: { moderation: { model: 'mod', action: 'mask' } } });
  r = await gw.ctl(['reload']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /"safety\.moderation\.action" must be block or flag \(got mask\)/);
});
