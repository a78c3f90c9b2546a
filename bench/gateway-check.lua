-- wrk script for bench/run-gateway's correctness run: counts every
-- response that is not a 200 whose body carries the expected summary
-- (GATEWAY_EXPECT, e.g. "ok":3,"failed":0), and prints the totals.
local expect = os.getenv("GATEWAY_EXPECT") or ""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; checked = 0 end
function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or not string.find(body, expect, 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local b, c = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad"); c = c + t:get("checked")
  end
  io.write(string.format("checked=%d bad=%d\n", c, b))
end
