-- wrk script for benches/compare.sh: POST /v1/chat/completions, driven by environment variables.
--   BENCH_KEYS          file with one key per line; requests take them in turn (none: no auth)
--   BENCH_STREAM=1      ask for an SSE stream of BENCH_CHUNKS pieces, BENCH_DELAY_MS apart
--                       (x-mock-* headers tell the mock upstream how to answer)
--   BENCH_IDEMPOTENCY=1 a fresh Idempotency-Key on every request
-- done() prints one machine-readable line:
--   RESULT <req/s> <p50 µs> <p99 µs> <mean µs> <non-2xx> <socket errors> <requests>

local keys = {}
local keys_file = os.getenv("BENCH_KEYS")
if keys_file and keys_file ~= "" then
  for line in io.lines(keys_file) do
    keys[#keys + 1] = "Bearer " .. line
  end
end
local stream = os.getenv("BENCH_STREAM") == "1"
local idempotent = os.getenv("BENCH_IDEMPOTENCY") == "1"

local body
if stream then
  body = '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to sixteen, one word per line."}]}'
else
  body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark."}]}'
end

local headers = { ["Content-Type"] = "application/json" }
if stream then
  headers["x-mock-chunks"] = os.getenv("BENCH_CHUNKS") or "16"
  headers["x-mock-delay-ms"] = os.getenv("BENCH_DELAY_MS") or "0"
end

-- Idempotency keys must not repeat across threads or runs.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local counter = 0
local run_id
function init(args)
  run_id = string.format("%d-%d-%d", os.time(), thread_id or 0, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  if #keys > 0 then
    headers["Authorization"] = keys[(counter % #keys) + 1]
  end
  if idempotent then
    headers["Idempotency-Key"] = run_id .. "-" .. counter
  end
  return wrk.format("POST", "/v1/chat/completions", headers, body)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.1f %.1f %.1f %d %d %d\n",
    summary.requests / seconds, latency:percentile(50), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
