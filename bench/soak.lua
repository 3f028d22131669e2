-- wrk script for bench/soak.sh: numbered tools/call POSTs; every response
-- must be a 200 that carries a JSON-RPC result and keeps the connection open.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

local counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"soak"}}}',
    counter)
  return wrk.format(nil, nil, nil, body)
end

failed = 0
first = ""
response = function(status, headers, body)
  local closing = headers["Connection"] == "close" or headers["connection"] == "close"
  if status ~= 200 or closing or not string.find(body, '"result"', 1, true) then
    failed = failed + 1
    if first == "" then first = status .. " " .. string.sub(body, 1, 200) end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local bad, sample = 0, ""
  for _, t in ipairs(threads) do
    bad = bad + t:get("failed")
    if sample == "" then sample = t:get("first") end
  end
  io.write(string.format("RESULT requests=%d rps=%.0f p50_us=%d p99_us=%d failed=%d socket_errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), bad, e.connect + e.read + e.write + e.timeout))
  if sample ~= "" then io.write("FIRST_FAILURE " .. sample .. "\n") end
end
