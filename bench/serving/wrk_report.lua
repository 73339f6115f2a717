-- wrk script for the serving bench. The request comes from the environment,
-- so one script serves every load:
--   BENCH_METHOD       request method (GET when unset)
--   BENCH_BODY         request body, sent as application/json when set
--   BENCH_PERCENTILES  comma-separated percentiles for done() to report
--   BENCH_PIPELINE     requests written back to back on a connection (1 when unset)
-- A body holding "{id}" gets a fresh UUID-shaped id there on every request
-- (a payment's correlationId: the API refuses one it has seen).
-- done() prints one line, "BENCH_JSON {...}", with latencies in microseconds;
-- the harness reads that rather than wrk's text, whose units are rounded.
-- Without pipelining only init-time globals are set (no request()/response()),
-- so wrk keeps its static-request fast path and the script costs nothing per
-- request; with it, request() returns the same pre-built batch each time.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
end

if body and body:find("{id}", 1, true) then
   math.randomseed(os.time())
   local prefix = string.format("%08x", math.random(0, 0x7fffffff))
   local counter = 0
   function request()
      counter = counter + 1
      local id = string.format("%s-0000-4000-8000-%012x", prefix, counter)
      return wrk.format(nil, nil, nil, (body:gsub("{id}", id)))
   end
end

local depth = tonumber(os.getenv("BENCH_PIPELINE") or "1")
if depth > 1 then
   function init(args)
      local batch = {}
      for i = 1, depth do
         batch[i] = wrk.format()
      end
      pipelined = table.concat(batch)
   end
   function request()
      return pipelined
   end
end

function done(summary, latency, requests)
   local points = {}
   for p in string.gmatch(os.getenv("BENCH_PERCENTILES") or "50,90,99", "[^,]+") do
      points[#points + 1] = string.format('"%s":%d', p, latency:percentile(tonumber(p)))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.2f,"stdev":%.2f,"max":%d},"percentiles_us":{%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max, table.concat(points, ",")))
end
