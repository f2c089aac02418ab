-- wrk script: POST a withdrawal with a unique Idempotency-Key per request.
-- Environment: BENCH_PATH, BENCH_KEY (API key), BENCH_TO (recipient); BENCH_THINK_MS, when set,
-- makes each connection pause before each request for a random time (exponential, that mean in
-- milliseconds), so that N connections offer about N / (think + latency) requests per second
-- instead of as many as the server can answer.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local think = tonumber(os.getenv("BENCH_THINK_MS") or "0")

function init(args)
  thread_id = id
  math.randomseed((tonumber(os.getenv("BENCH_RUN"):match("^%d+")) or 0) % 1000003 + id)
  wrk.method = "POST"
  wrk.path = os.getenv("BENCH_PATH")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  wrk.body = '{"chain": "localhost", "asset": "USDT", "to": "' .. os.getenv("BENCH_TO") .. '", "amount": "1.5"}'
end

function request()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = os.getenv("BENCH_RUN") .. "-" .. thread_id .. "-" .. counter
  return wrk.format()
end

if think > 0 then
  -- wrk waits whole milliseconds: +0.5 rounds the mean rather than truncating it.
  function delay()
    return -think * math.log(1 - math.random()) + 0.5
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT rps=%.1f p50=%.2f p95=%.2f p99=%.2f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, summary.requests,
    non2xx + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
