-- cache.lua - wrk script of cache_cost.sh: a chat completion of model
-- BENCH_MODEL (default bench) with the key from BENCH_KEY; BENCH_UNIQUE=1
-- makes every request's message different (always a cache miss),
-- BENCH_STREAM=1 asks for a stream.  Prints "BENCH rps p50_us p99_us".
local model = os.getenv("BENCH_MODEL") or "bench"
local unique = os.getenv("BENCH_UNIQUE") == "1"
local stream = os.getenv("BENCH_STREAM") == "1"
local n = 0
local threads = 0
math.randomseed(os.time())

wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")

local function body(text)
   return '{"model":"' .. model .. '","messages":[{"role":"system","content":"You are terse."},' ..
          '{"role":"user","content":"' .. text .. '"}],"max_tokens":16' ..
          (stream and ',"stream":true' or '') .. '}'
end

wrk.body = body("Say hello to the benchmark")

-- A tag per thread and run, so that no two requests of a BENCH_UNIQUE run
-- (or of two runs) are the same.
setup = function(thread)
   threads = threads + 1
   thread:set("tag", os.time() .. "-" .. threads .. "-" .. math.random(1, 1000000000))
end

request = function()
   if not unique then
      return wrk.format(nil, nil, nil, wrk.body)
   end
   n = n + 1
   return wrk.format(nil, nil, nil, body("Say hello " .. tag .. " " .. n))
end

done = function(summary, latency, requests)
   io.write(string.format("BENCH %.1f %d %d %d\n", summary.requests / (summary.duration / 1e6),
                          latency:percentile(50), latency:percentile(99),
                          summary.errors.status + summary.errors.read + summary.errors.connect))
end
