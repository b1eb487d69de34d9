-- wrk script: POST one event per request to /api/v1/events, each with a distinct payload.
-- Usage: wrk -t2 -c32 -d10s --latency -s bench/lua/post_event.lua http://127.0.0.1:PORT/api/v1/events
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local name = os.getenv("XYN_BENCH_EVENT") or "bench.ingest"
request = function()
  n = n + 1
  local body = '{"event_name":"' .. name .. '","data":{"host":"web-' .. (n % 97) .. '","service":"disk","state":"CRIT","n":' .. n .. '}}'
  return wrk.format(nil, nil, nil, body)
end
