-- wrk script: tools/call of server-everything's `echo` on one MCP session
-- (SID). Requests in flight on one session need distinct JSON-RPC ids (a
-- bridge routes answers by id), so each thread numbers its own.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
wrk.headers["Mcp-Session-Id"] = os.getenv("SID") or error("set SID")

local threads = {}
local count = 0
function setup(thread)
  count = count + 1
  thread:set("thread_no", count)
  table.insert(threads, thread)
end

function init()
  sent, wrong = 0, 0
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"message":"bench"}}}',
    thread_no * 1000000000 + sent))
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "Echo: bench", 1, true) then wrong = wrong + 1 end
end

function done(summary, latency)
  local bad = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status
  for _, t in ipairs(threads) do bad = bad + t:get("wrong") end
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.requests, bad))
end
