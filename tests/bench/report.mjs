// report.mjs META RAW OUT - turn the raw figures of tests/bench/run.sh into
// medians, ratios against nginx and the targets of issue 4; print a table
// and write OUT (JSON).
//
// RAW has one JSON object a line, by "kind":
//   rps      one wrk run: scenario (load: 64 connections, serial: 1), target
//            (mock, nginx, plain, checks, prefork), round, CPU of the target's process
//            tree, and wrk's figures (latencies in microseconds); scenario
//            fixed, light: sse_client rate's open loop at meta.fixed.rps and
//            meta.light.rps, its figures in the same shape, latency from
//            when each request was due;
//   stream   one stream timed by sse_client (event arrival times, us);
//   conc     N streams at once against one target, with PSS samples;
//   alloc    malloc_count snapshots around a serial run and some streams;
//   syscalls the workers' system calls by name (counter: perf or strace);
//   usage    aigwctl usage --json before and after the chat runs.
import { readFileSync, writeFileSync } from 'node:fs';

const [metaFile, rawFile, outFile] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
const raw = readFileSync(rawFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const of = (kind) => raw.filter((x) => x.kind === kind);

// ---------------------------------------------------------------- stats

function pct(values, p) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const i = (p / 100) * (v.length - 1);
  const lo = Math.floor(i), hi = Math.ceil(i);
  return v[lo] + (v[hi] - v[lo]) * (i - lo);
}
const median = (v) => pct(v, 50);
const r1 = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? null : +x.toFixed(d));
const max = (v) => (v.length ? Math.max(...v) : null);

// ------------------------------------------------------ chat completions

// plain and checks: aigwd with an event loop per worker (workers.connections);
// prefork: all checks, one connection per worker process.
const TARGETS = ['mock', 'nginx', 'plain', 'checks', 'prefork'];
const PROXIES = ['nginx', 'plain', 'checks', 'prefork'];

function chat(scenario) {
  const runs = of('rps').filter((x) => x.scenario === scenario);
  const rounds = [...new Set(runs.map((x) => x.round))].sort((a, b) => a - b);
  const by = (t, r) => runs.find((x) => x.target === t && x.round === r);
  const out = { conns: runs[0]?.conns ?? null, rounds: rounds.length, targets: {}, added: {}, ratio: {} };
  for (const t of TARGETS) {
    const rs = runs.filter((x) => x.target === t);
    if (!rs.length) continue;
    const errs = rs.map((x) => Object.values(x.wrk.errors).reduce((a, b) => a + b, 0));
    out.targets[t] = {
      rps: r1(median(rs.map((x) => x.wrk.rps))),
      p50_ms: r1(median(rs.map((x) => x.wrk.lat_us.p50 / 1e3)), 3),
      p90_ms: r1(median(rs.map((x) => x.wrk.lat_us.p90 / 1e3)), 3),
      p99_ms: r1(median(rs.map((x) => x.wrk.lat_us.p99 / 1e3)), 3),
      requests: rs.reduce((a, x) => a + x.wrk.requests, 0),
      errors: errs.reduce((a, b) => a + b, 0),
      // CPU of the target's whole process tree over its requests.
      // utime+stime of /proc/PID/stat; cpu_us_per_req_sched from schedstat.
      cpu_us_per_req: r1(median(rs.map((x) => (x.cpu_ticks * 1e6) / meta.hz / (x.cpu_requests ?? x.wrk.requests))), 2),
      cpu_us_per_req_sched: t === 'mock' ? null : r1(median(rs.map((x) => x.cpu_ns / 1e3 / (x.cpu_requests ?? x.wrk.requests))), 2),
      cpu_sys_share: r1(median(rs.map((x) => x.cpu_stime / Math.max(1, x.cpu_ticks))), 2),
      // Per task figures lose the tasks that ended during the run: the
      // mock's connection threads do, so they are left out for it.
      ctx_switches_per_req: t === 'mock' ? null : r1(median(rs.map((x) => x.csw / (x.cpu_requests ?? x.wrk.requests))), 2),
      mock_cpu_us_per_req: r1(median(rs.map((x) => (x.mock_cpu_ticks * 1e6) / meta.hz / (x.cpu_requests ?? x.wrk.requests))), 2),
      rps_rounds: rs.map((x) => r1(x.wrk.rps)),
    };
    // sse_client rate: the time outside the mock (its x-mock-stamp),
    // where every run had stamped answers (a percentile of none is -1).
    if (rs.every((x) => x.wrk.path_us && x.wrk.path_us.p50 >= 0)) {
      out.targets[t].path_p50_ms = r1(median(rs.map((x) => x.wrk.path_us.p50 / 1e3)), 3);
      out.targets[t].path_p99_ms = r1(median(rs.map((x) => x.wrk.path_us.p99 / 1e3)), 3);
      out.targets[t].upstream_p99_ms = r1(median(rs.map((x) => x.wrk.upstream_us?.p99 / 1e3)), 3);
      out.targets[t].unstamped = rs.reduce((a, x) => a + x.wrk.unstamped, 0);
    }
  }
  // Added latency and throughput ratios, paired within each round.
  for (const t of PROXIES) {
    const a50 = [], a99 = [], rr = [], p50 = [], p99 = [];
    for (const r of rounds) {
      const m = by('mock', r), x = by(t, r), n = by('nginx', r);
      if (!m || !x) continue;
      a50.push((x.wrk.lat_us.p50 - m.wrk.lat_us.p50) / 1e3);
      a99.push((x.wrk.lat_us.p99 - m.wrk.lat_us.p99) / 1e3);
      if (x.wrk.path_us?.p50 >= 0 && m.wrk.path_us?.p50 >= 0) {
        p50.push((x.wrk.path_us.p50 - m.wrk.path_us.p50) / 1e3);
        p99.push((x.wrk.path_us.p99 - m.wrk.path_us.p99) / 1e3);
      }
      if (n) rr.push(x.wrk.rps / n.wrk.rps);
    }
    if (!a50.length) continue;
    out.added[t] = { p50_ms: r1(median(a50), 3), p99_ms: r1(median(a99), 3) };
    // The same over the time outside the mock: its own stalls left out.
    if (p50.length) Object.assign(out.added[t], { path_p50_ms: r1(median(p50), 3), path_p99_ms: r1(median(p99), 3) });
    out.ratio[t] = { rps_vs_nginx: r1(median(rr), 3) };
  }
  for (const t of ['plain', 'checks', 'prefork']) {
    if (out.added[t] && out.added.nginx)
      out.ratio[t].added_p50_vs_nginx =
        out.added.nginx.p50_ms > 0 ? r1(out.added[t].p50_ms / out.added.nginx.p50_ms, 2) : null;
  }
  return out;
}

// ------------------------------------------------------------ streaming

function streaming() {
  const all = of('stream');
  const delay = meta.stream.delay_ms, expect = meta.stream.chunks + 3;
  const out = { chunks: meta.stream.chunks, delay_ms: delay, events_expected: expect, mock: { targets: {}, added: {} }, tap: { targets: {}, added: {} } };

  // From the mock: first byte, gaps between events, events held back.
  const runs = all.filter((x) => (x.upstream ?? 'mock') === 'mock');
  const per = {};
  for (const t of ['mock', 'nginx', 'checks']) {
    const rs = runs.filter((x) => x.target === t);
    const ok = rs.filter((x) => x.s.ok && x.s.events_us.length === expect);
    if (!rs.length) continue;
    const gaps = [];
    for (const x of ok)
      for (let i = 1; i < x.s.events_us.length; i++)
        gaps.push((x.s.events_us[i] - x.s.events_us[i - 1]) / 1e3 - delay);
    const byIndex = [];
    for (let i = 0; i < expect; i++) byIndex.push(median(ok.map((x) => x.s.events_us[i] / 1e3)));
    per[t] = byIndex;
    out.mock.targets[t] = {
      streams: rs.length,
      streams_ok: ok.length,
      batched_events: rs.reduce((a, x) => a + x.s.batched, 0),
      head_ms: r1(median(ok.map((x) => x.s.head_us / 1e3)), 3),
      first_event_ms: r1(byIndex[0], 3),
      last_event_ms: r1(byIndex[expect - 1], 3),
      gap_excess_ms: { p50: r1(pct(gaps, 50), 3), p99: r1(pct(gaps, 99), 3), max: r1(max(gaps), 3) },
    };
  }
  for (const t of ['nginx', 'checks']) {
    if (!per.mock || !per[t]) continue;
    const added = per[t].map((v, i) => v - per.mock[i]);
    out.mock.added[t] = {
      head_ms: r1(out.mock.targets[t].head_ms - out.mock.targets.mock.head_ms, 3),
      first_event_ms: r1(added[0], 3),
      // Event i through the proxy minus event i direct (medians).  This
      // grows along the stream when the mock's own 5 ms sleeps stretch
      // (they are relative, so CPU the proxy takes from the mock's core
      // adds up); the tap below measures the forwarding itself.
      by_index_ms: { p50: r1(pct(added, 50), 3), max: r1(max(added), 3), last: r1(added[expect - 1], 3) },
    };
  }

  // From the tap: every event carries the moment it was written, so its
  // arrival minus that is exactly how long the path took to forward it.
  const taps = all.filter((x) => x.upstream === 'tap');
  const fwd = {};
  for (const t of ['mock', 'nginx', 'checks']) {
    const rs = taps.filter((x) => x.target === t);
    if (!rs.length) continue;
    const ok = rs.filter((x) => x.s.ok);
    const f = ok.flatMap((x) => x.s.fwd_us.map((v) => v / 1e3));
    const first = ok.map((x) => x.s.events_us[0] / 1e3);
    fwd[t] = f;
    out.tap.targets[t] = {
      streams: rs.length,
      streams_ok: ok.length,
      events: f.length,
      batched_events: rs.reduce((a, x) => a + x.s.batched, 0),
      // Written by the tap itself within 1 ms of the event before (a late
      // tap): they arrive together through any path, and are not counted
      // as held back.
      tap_batched_events: rs.reduce((a, x) => a + (x.s.tap_batched ?? 0), 0),
      first_event_ms: r1(median(first), 3),
      forward_ms: { p50: r1(pct(f, 50), 3), p90: r1(pct(f, 90), 3), p99: r1(pct(f, 99), 3), max: r1(max(f), 3) },
      over_1ms: f.filter((v) => v > 1).length,
    };
  }
  const d = out.tap.targets.mock;
  for (const t of ['nginx', 'checks']) {
    const x = out.tap.targets[t];
    if (!d || !x) continue;
    out.tap.added[t] = {
      first_event_ms: r1(x.first_event_ms - d.first_event_ms, 3),
      forward_ms: {
        p50: r1(x.forward_ms.p50 - d.forward_ms.p50, 3),
        p99: r1(x.forward_ms.p99 - d.forward_ms.p50, 3),
        max: r1(x.forward_ms.max - d.forward_ms.p50, 3),
      },
    };
  }
  return out;
}

// ----------------------------------------------------------- concurrency

function concurrency() {
  const rows = [];
  for (const x of of('conc')) {
    let row = rows.find((y) => y.n === x.n);
    if (!row) rows.push((row = { n: x.n }));
    const r = x.r || {};
    // Served at once: every stream, or one per worker process when each
    // serves one connection.
    const served = x.workers ? Math.min(x.n, x.workers * (x.connections ?? 1)) : x.n;
    row[x.target] = {
      ok: r.ok ?? 0,
      errors: r.errors ?? { client: 'no result' },
      first_byte_within_1s: r.first_byte_within_1s ?? null,
      first_byte_ms: r.first_byte_ms ?? null,
      done_ms: r.done_ms ?? null,
      workers: x.workers ?? null,
      connections: x.connections ?? null,
      pss_idle_mib: r1(x.pss_idle_kb / 1024, 1),
      pss_peak_mib: r1(x.pss_peak_kb / 1024, 1),
      pss_per_stream_kib: r1(x.pss_peak_kb / x.n, 1),
      pss_per_concurrent_stream_kib: r1(x.pss_peak_kb / served, 1),
    };
  }
  return rows.sort((a, b) => a.n - b.n);
}

// ------------------------------------------------------------------ cost

function cost() {
  const out = {};
  const a = of('alloc')[0];
  if (a) {
    const d = (x, y, i) => y[i] - x[i];
    const req = a.requests || 1, n = a.streams, [cl, cs] = a.chunks;
    const long = d(a.a1, a.a2, 0) / n, short = d(a.a2, a.a3, 0) / n;
    out.allocs = {
      requests: a.requests,
      per_request: r1(d(a.a0, a.a1, 0) / req, 1),
      reallocs_per_request: r1(d(a.a0, a.a1, 1) / req, 1),
      frees_per_request: r1(d(a.a0, a.a1, 2) / req, 1),
      bytes_per_request: r1(d(a.a0, a.a1, 3) / req, 0),
      streams: n,
      [`per_stream_${cl}_chunks`]: r1(long, 1),
      [`per_stream_${cs}_chunks`]: r1(short, 1),
      bytes_per_stream: r1(d(a.a1, a.a2, 3) / n, 0),
      per_event: r1((long - short) / (cl - cs), 3),
    };
  }
  const s = of('syscalls')[0];
  if (s && (s.counter ?? (s.strace ? 'strace' : 'none')) !== 'none') {
    const [cl, cs] = s.chunks;
    const byCall = (j, div) =>
      j && j.calls
        ? Object.fromEntries(Object.entries(j.calls).sort((x, y) => y[1] - x[1]).filter(([, v]) => v / div >= 0.05).map(([k, v]) => [k, r1(v / div, 2)]))
        : null;
    const perEvent = (l, sh) => {
      if (!l || !sh) return null;
      const names = new Set([...Object.keys(l.calls), ...Object.keys(sh.calls)]);
      const o = {};
      for (const k of names) {
        const v = ((l.calls[k] || 0) - (sh.calls[k] || 0)) / s.streams / (cl - cs);
        if (Math.abs(v) >= 0.05) o[k] = r1(v, 2);
      }
      return o;
    };
    out.syscalls = { counter: s.counter ?? 'strace', streams: s.streams, chunks: s.chunks };
    for (const who of ['aigw', 'nginx']) {
      const x = s[who];
      if (!x) continue;
      out.syscalls[who] = {
        chat_requests: x.chat_requests,
        per_request: x.chat && x.chat_requests ? r1(x.chat.total / x.chat_requests, 2) : null,
        per_request_by_call: byCall(x.chat, x.chat_requests || 1),
        [`per_stream_${cl}_chunks`]: x.long ? r1(x.long.total / s.streams, 1) : null,
        per_event: x.long && x.short ? r1((x.long.total - x.short.total) / s.streams / (cl - cs), 2) : null,
        per_event_by_call: perEvent(x.long, x.short),
      };
    }
  }
  return out;
}

function usageCheck(...scenarios) {
  const u = of('usage')[0];
  if (!u || !u.before || !u.after) return null;
  const count = (j) => {
    // aigwctl usage --json: take the largest "requests" number in it (the total).
    let best = 0;
    const walk = (o) => {
      if (o && typeof o === 'object')
        for (const [k, v] of Object.entries(o)) {
          if (k === 'requests' && typeof v === 'number') best = Math.max(best, v);
          else walk(v);
        }
    };
    walk(j);
    return best;
  };
  const served = scenarios.reduce((a, c) => a + (c.targets.checks?.requests ?? 0), 0);
  const [t0, t1] = u.through ?? [null, null];
  const through = t0 != null && t1 != null ? t1 - t0 : null;
  return { recorded: count(u.after) - count(u.before), wrk_completed: served, written_through: through };
}

// --------------------------------------------------------------- targets

const load = chat('load');
const serial = chat('serial');
const large = chat('large');
const fixed = chat('fixed');
const light = chat('light');
const stream = streaming();
const conc = concurrency();
const costs = cost();
const usage = usageCheck(load, serial, large);

const targets = [];
function target(name, value, unit, limit, ok, note) {
  targets.push({ name, value, unit, target: limit, met: value === null || value === undefined ? null : ok, note });
}
const lc = load.ratio.checks || {}, sc = serial.ratio.checks || {};
target('throughput aigw/nginx (auth+usage+access log, 64 conns)', lc.rps_vs_nginx, 'x', '>= 0.8', lc.rps_vs_nginx >= 0.8);
target('added p50 aigw/nginx (64 conns)', lc.added_p50_vs_nginx, 'x', '<= 1.3', lc.added_p50_vs_nginx <= 1.3);
target('added p50 aigw/nginx (1 conn)', sc.added_p50_vs_nginx, 'x', '<= 1.3', sc.added_p50_vs_nginx <= 1.3);
const ap99l = load.added.checks?.p99_ms, ap99s = serial.added.checks?.p99_ms;
target('added p99 aigw (64 conns)', ap99l, 'ms', '<= 1', ap99l <= 1, `nginx +${load.added.nginx?.p99_ms ?? '-'} ms`);
target('added p99 aigw (1 conn)', ap99s, 'ms', '<= 1', ap99s <= 1);
for (const [c, rps] of [[fixed, meta.fixed?.rps], [light, meta.light?.rps]]) {
  if (!c.rounds) continue;
  const fc = c.ratio.checks || {}, fp99 = c.added.checks?.p99_ms;
  target(`added p50 aigw/nginx (64 conns, ${rps} req/s)`, fc.added_p50_vs_nginx, 'x', '<= 1.3', fc.added_p50_vs_nginx <= 1.3,
    `aigw +${c.added.checks?.p50_ms} ms, nginx +${c.added.nginx?.p50_ms} ms`);
  target(`added p99 aigw (64 conns, ${rps} req/s)`, fp99, 'ms', '<= 1', fp99 <= 1, `nginx +${c.added.nginx?.p99_ms ?? '-'} ms`);
  const pp99 = c.added.checks?.path_p99_ms;
  if (pp99 !== undefined)
    target(`added p99 aigw, outside the upstream (64 conns, ${rps} req/s)`, pp99, 'ms', '<= 1', pp99 <= 1,
      `nginx +${c.added.nginx?.path_p99_ms ?? '-'} ms; p50 aigw +${c.added.checks?.path_p50_ms} ms, nginx +${c.added.nginx?.path_p50_ms ?? '-'} ms`);
}
const expectEvents = stream.events_expected;
const ta = stream.tap.added.checks, tt = stream.tap.targets.checks, ma = stream.mock.added.checks;
target('per-chunk forwarding delay added, p99 (tap)', ta?.forward_ms.p99, 'ms', '<= 1', ta?.forward_ms.p99 <= 1,
  tt ? `p50 ${ta.forward_ms.p50} ms, worst ${ta.forward_ms.max} ms; ${tt.over_1ms} of ${tt.events} events over 1 ms (nginx: worst ${stream.tap.added.nginx?.forward_ms.max ?? '-'} ms)` : null);
const batched = (stream.mock.targets.checks?.batched_events ?? 0) + (tt?.batched_events ?? 0);
const bOf = (t) => (stream.mock.targets[t]?.batched_events ?? 0) + (stream.tap.targets[t]?.batched_events ?? 0);
target('chunks held back (arrived batched with the one before)', stream.mock.targets.checks ? batched : null, 'events', '0', batched === 0,
  `of ${(stream.mock.targets.checks?.streams ?? 0) * expectEvents + (tt?.events ?? 0)}; nginx ${bOf('nginx')}, direct ${bOf('mock')}` +
  (tt?.tap_batched_events ? `; ${tt.tap_batched_events} more that the tap itself wrote within 1 ms of the one before` : ''));
target('added time to first byte (first event, mock)', ma?.first_event_ms, 'ms', '<= 1', ma?.first_event_ms <= 1,
  ma ? `headers +${ma.head_ms} ms; through the tap +${ta?.first_event_ms ?? '-'} ms` : null);
const big = conc.length ? conc[conc.length - 1] : null;
const bigA = big?.aigw;
if (big) {
  const errs = bigA ? Object.values(bigA.errors).reduce((a, b) => a + b, 0) : null;
  target(`streams completed at N=${big.n}, no error`, bigA ? `${bigA.ok}/${big.n}` : null, '', `${big.n}/${big.n}`,
    bigA ? bigA.ok === big.n && errs === 0 : null,
    bigA ? `${bigA.first_byte_within_1s} got their first byte within 1 s (${bigA.workers} workers of ${bigA.connections} connections)` : 'aigwd did not start');
  target(`PSS per concurrent stream at N=${big.n}`, bigA?.pss_per_concurrent_stream_kib != null ? r1(bigA.pss_per_concurrent_stream_kib / 1024, 3) : null,
    'MiB', '<= 1', bigA?.pss_per_concurrent_stream_kib / 1024 <= 1,
    bigA ? `peak ${bigA.pss_peak_mib} MiB for ${big.n} streams; the pre-fork model: ${big['aigw-prefork'] ? `${big['aigw-prefork'].pss_peak_mib} MiB, ${big['aigw-prefork'].first_byte_within_1s} served at once` : '-'}` : null);
  if (big.n < 2000) targets[targets.length - 2].note = `quick run: largest N is ${big.n}, not 2000`;
}

const result = { meta, chat_load: load, chat_serial: serial, chat_large: large, chat_fixed: fixed, chat_light: light, streaming: stream, concurrency: conc, cost: costs, usage_accounting: usage, targets };
writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');

// ----------------------------------------------------------------- table

const fmt = (v, w = 9) => String(v === null || v === undefined ? '-' : v).padStart(w);
const lines = [];
const p = (s = '') => lines.push(s);
const NAMES = { mock: 'direct (mock)', nginx: 'nginx', plain: 'aigw plain', checks: 'aigw all checks', prefork: 'aigw prefork', aigw: 'aigw' };

p(`aigw benchmark ${meta.time}  (${meta.quick ? 'QUICK, ' : ''}${meta.rounds} rounds, medians; ${meta.nproc} CPUs ${meta.cpu_model}, ${meta.seconds}s)`);
for (const [title, c] of [[`Chat completion, ${load.conns} connections, ${meta.dur64_s}s runs`, load], [`Chat completion, 1 connection, ${meta.dur1_s}s runs`, serial],
  [`Chat completion with a ${meta.big_kb} KiB prompt, ${large.conns} connections, ${meta.dur1_s}s runs`, large],
  [`Chat completion at a fixed ${meta.fixed?.rps} req/s (open loop), ${fixed.conns} connections, ${meta.fixed?.seconds}s runs`, fixed],
  [`Chat completion at a light ${meta.light?.rps} req/s (open loop), ${light.conns} connections, ${meta.light?.seconds}s runs`, light]]) {
  if (!c.rounds) continue;
  p();
  p(title);
  p(`  ${'target'.padEnd(17)}${fmt('req/s')}${fmt('p50 ms')}${fmt('p99 ms')}${fmt('+p50 ms')}${fmt('+p99 ms')}${fmt('x nginx')}${fmt('CPU us/r')}${fmt('sys %', 7)}${fmt('csw/r', 7)}${fmt('errors', 7)}`);
  for (const t of TARGETS) {
    const x = c.targets[t];
    if (!x) continue;
    p(`  ${NAMES[t].padEnd(17)}${fmt(x.rps)}${fmt(x.p50_ms)}${fmt(x.p99_ms)}${fmt(c.added[t]?.p50_ms)}${fmt(c.added[t]?.p99_ms)}${fmt(c.ratio[t]?.rps_vs_nginx)}${fmt(x.cpu_us_per_req)}${fmt(Math.round(x.cpu_sys_share * 100), 7)}${fmt(x.ctx_switches_per_req, 7)}${fmt(x.errors, 7)}`);
  }
  if (!c.targets.mock?.path_p99_ms) continue;
  p(`  outside the upstream: from the request's write to the answer's last byte, less the mock's own time`);
  p(`  ${'target'.padEnd(17)}${fmt('')}${fmt('p50 ms')}${fmt('p99 ms')}${fmt('+p50 ms')}${fmt('+p99 ms')}${fmt('mock p99', 10)}`);
  for (const t of TARGETS) {
    const x = c.targets[t];
    if (!x || x.path_p99_ms === undefined) continue;
    p(`  ${NAMES[t].padEnd(17)}${fmt('')}${fmt(x.path_p50_ms)}${fmt(x.path_p99_ms)}${fmt(c.added[t]?.path_p50_ms)}${fmt(c.added[t]?.path_p99_ms)}${fmt(x.upstream_p99_ms, 10)}`);
  }
}
p();
p(`Streaming, ${stream.chunks} chunks ${stream.delay_ms} ms apart, from the mock (${meta.stream.n} streams a round)`);
p(`  ${'target'.padEnd(17)}${fmt('ok')}${fmt('head ms')}${fmt('1st ev')}${fmt('+head')}${fmt('+1st ev')}${fmt('+last ev')}${fmt('gap p50')}${fmt('gap p99')}${fmt('batched')}`);
for (const t of ['mock', 'nginx', 'checks']) {
  const x = stream.mock.targets[t], a = stream.mock.added[t];
  if (!x) continue;
  p(`  ${NAMES[t].padEnd(17)}${fmt(`${x.streams_ok}/${x.streams}`)}${fmt(x.head_ms)}${fmt(x.first_event_ms)}${fmt(a?.head_ms)}${fmt(a?.first_event_ms)}${fmt(a?.by_index_ms.last)}${fmt(x.gap_excess_ms.p50)}${fmt(x.gap_excess_ms.p99)}${fmt(x.batched_events)}`);
}
p('  (+: over direct, ms; gap: time between events minus the mock\'s delay, ms)');
p();
p(`Streaming from the tap: forwarding delay of each event, written -> read by the client (${meta.stream.tap_n} streams a round)`);
p(`  ${'target'.padEnd(17)}${fmt('events')}${fmt('p50 ms')}${fmt('p90 ms')}${fmt('p99 ms')}${fmt('max ms')}${fmt('>1 ms')}${fmt('+p50')}${fmt('+p99')}${fmt('batched')}`);
for (const t of ['mock', 'nginx', 'checks']) {
  const x = stream.tap.targets[t], a = stream.tap.added[t];
  if (!x) continue;
  p(`  ${(t === 'mock' ? 'direct (tap)' : NAMES[t]).padEnd(17)}${fmt(x.events)}${fmt(x.forward_ms.p50)}${fmt(x.forward_ms.p90)}${fmt(x.forward_ms.p99)}${fmt(x.forward_ms.max)}${fmt(x.over_1ms)}${fmt(a?.forward_ms.p50)}${fmt(a?.forward_ms.p99)}${fmt(x.batched_events)}`);
}
p();
p(`Concurrency: N streams at once, ${meta.conc.chunks} chunks ${meta.conc.delay_ms} ms apart`);
p(`  ${'N'.padStart(5)} ${'target'.padEnd(14)}${fmt('ok')}${fmt('errors', 14)}${fmt('<1s')}${fmt('done p50')}${fmt('done max')}${fmt('PSS MiB')}${fmt('KiB/strm')}`);
for (const row of conc)
  for (const t of ['mock', 'nginx', 'aigw', 'aigw-prefork']) {
    const x = row[t];
    if (!x) continue;
    const e = Object.entries(x.errors).map(([k, v]) => `${k}:${v}`).join(',') || '0';
    const label = t === 'aigw' ? `aigw ${x.workers}x${x.connections}` : t === 'aigw-prefork' ? `prefork ${x.workers}w` : NAMES[t];
    p(`  ${String(row.n).padStart(5)} ${label.padEnd(14)}${fmt(x.ok)}${fmt(e, 14)}${fmt(x.first_byte_within_1s)}${fmt(x.done_ms?.p50)}${fmt(x.done_ms?.max)}${fmt(x.pss_peak_mib)}${fmt(x.pss_per_concurrent_stream_kib)}`);
  }
p('  (<1s: first byte within a second, i.e. served at once; KiB/strm: peak PSS / streams served at once)');
p();
p('Cost per request in aigwd (all checks on)');
const ca = costs.allocs, cs = costs.syscalls;
p(`  CPU us/request (64 conns): aigw ${load.targets.checks?.cpu_us_per_req ?? '-'} (plain ${load.targets.plain?.cpu_us_per_req ?? '-'}), nginx ${load.targets.nginx?.cpu_us_per_req ?? '-'}, mock ${load.targets.mock?.cpu_us_per_req ?? '-'}`);
for (const [c, rps] of [[fixed, meta.fixed?.rps], [light, meta.light?.rps]])
  if (c.rounds)
    p(`  CPU us/request (fixed ${rps} req/s): aigw ${c.targets.checks?.cpu_us_per_req ?? '-'} (plain ${c.targets.plain?.cpu_us_per_req ?? '-'}), nginx ${c.targets.nginx?.cpu_us_per_req ?? '-'}`);
if (ca) p(`  allocations: ${ca.per_request}/request (${ca.bytes_per_request} bytes asked for), ${ca.per_event} more per stream event`);
const kv = (o) => (o ? Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') : '-');
if (cs?.aigw) p(`  system calls/request (${cs.counter}): aigw ${cs.aigw.per_request} (${kv(cs.aigw.per_request_by_call)}); nginx ${cs.nginx?.per_request ?? '-'} (${kv(cs.nginx?.per_request_by_call)})`);
if (cs?.aigw) p(`  system calls/stream event: aigw ${cs.aigw.per_event} (${kv(cs.aigw.per_event_by_call)}); nginx ${cs.nginx?.per_event ?? '-'} (${kv(cs.nginx?.per_event_by_call)})`);
if (usage) {
  const through = usage.written_through == null ? '' : `, ${usage.written_through} of them written through by a worker (the ring was full)`;
  p(`  usage accounting: ${usage.recorded} records stored for ${usage.wrk_completed} requests completed (wrk)${through}`);
}
p();
p('Targets (issue 4)');
for (const t of targets)
  p(`  ${t.met === null ? ' n/a' : t.met ? ' met' : 'MISS'}  ${t.name}: ${t.value ?? '-'} ${t.unit} (target ${t.target})${t.note ? ` - ${t.note}` : ''}`);
console.log(lines.join('\n'));
