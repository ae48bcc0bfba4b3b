-- chat.lua - wrk script of the benchmark: every request is a non-streaming
-- chat completion with the key from BENCH_KEY; small, or with a prompt of
-- BENCH_PROMPT_KB kibibytes.  At the end one JSON line with the figures is
-- printed, prefixed "BENCH ".
local kb = tonumber(os.getenv("BENCH_PROMPT_KB") or "0") or 0
local prompt = "Say hello to the benchmark"
if kb > 0 then
   prompt = string.rep("lorem ipsum dolor sit amet ", math.floor(kb * 1024 / 27))
end
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
wrk.body = '{"model":"bench","messages":[{"role":"system","content":"You are terse."},' ..
           '{"role":"user","content":"' .. prompt .. '"}],"max_tokens":16}'

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"rps":%.1f,' ..
      '"lat_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
