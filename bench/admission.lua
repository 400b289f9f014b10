-- wrk script: POST a cycle of distinct pre-built request bodies (one JSON per line of
-- the file named by BODIES), each thread starting at a different offset, and count
-- answers that are not HTTP 200.
local bodies = {}
local file = assert(io.open(os.getenv("BODIES"), "r"))
for line in file:lines() do
  bodies[#bodies + 1] = line
end
file:close()

counter = 0
bad = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = id * math.floor(#bodies / tonumber(os.getenv("THREADS") or "2"))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  io.write(string.format("NON200 %d\n", total))
end
