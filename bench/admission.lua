-- wrk script of bench/admission.py: POST pre-built AdmissionReviews, each with a request
-- uid made unique per request, check every answer, and record each one's timings.
--
-- BODIES: one JSON per line, with the placeholder @@UID@@ where the request uid goes.
-- RUN: 8 hex digits naming this wrk run. A request's uid is
--   RUN-<thread>-<counter, high 16 bits>-<counter, low 16 bits>-<body index>
-- so no two requests of a run (nor of two runs) share a uid, however fast the server
-- answers and however many times the bodies are cycled: every GPU request is a fresh
-- admission, never the ledger's replay of a uid it already holds.
-- EXPECT: what every answer must be: "patch" (allowed, with a JSONPatch: GPU pods),
--   "allow" (allowed, no patch: non-GPU pods) or "echo" (the floor: only the uid back).
-- RATE (optional): open loop at this many requests per second over all threads. Each
--   thread keeps a schedule of send times (RATE / threads a second, the threads' slots
--   interleaved) and delay() holds a free connection until the next slot, so the
--   offered rate does not follow the answers as long as a connection is free; a
--   request's latency is counted from its slot when it goes out late (coordinated
--   omission corrected), from its send otherwise.
-- OUT: the file done() writes: counts, then one line per answer (uid, slot or send
--   time, send time, answer time, in microseconds of CLOCK_MONOTONIC), then a few GPU
--   answers in full for bench/admission.py to decode and compare with their bodies.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end

local heads, tails = {}, {}
local file = assert(io.open(os.getenv("BODIES"), "r"))
for line in file:lines() do
  local head, tail = line:match("^(.-)@@UID@@(.*)$")
  assert(head, "a body without the @@UID@@ placeholder")
  heads[#heads + 1] = head
  tails[#tails + 1] = tail
end
file:close()

local run = assert(os.getenv("RUN"), "RUN is not set")
local expect = os.getenv("EXPECT") or "echo"
local threads_total = tonumber(os.getenv("THREADS") or "2")
local rate = tonumber(os.getenv("RATE") or "")
local KEEP_ANSWERS = 20

-- per thread (each thread has its own Lua state)
counter = 0
sent = 0
non200 = 0
wrong = 0
unmatched = 0
answers = {} -- flat: uid, start, send, done, uid, start, ...
kept = {} -- a few full GPU answers
wrong_example = ""
local offset = 0
local pending_start, pending_send = {}, {}
local slots, slot_head, slot_tail = {}, 1, 0
local next_slot, interval_us, phase_us = nil, 0, 0

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  offset = id * math.floor(#heads / threads_total)
  if rate then
    interval_us = 1000000 * threads_total / rate
    phase_us = interval_us * id / threads_total
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

if rate then
  function delay()
    local t = now_us()
    if next_slot == nil then
      next_slot = t + phase_us
    end
    local slot = next_slot
    next_slot = next_slot + interval_us
    slot_tail = slot_tail + 1
    slots[slot_tail] = slot
    local wait = slot - t
    if wait <= 0 then
      return 0
    end
    return math.floor(wait / 1000)
  end
end

function request()
  local index = (offset + counter) % #heads
  local uid = string.format(
    "%s-%04x-%04x-%04x-%012x",
    run,
    id,
    math.floor(counter / 65536) % 65536,
    counter % 65536,
    index
  )
  counter = counter + 1
  sent = sent + 1
  local t = now_us()
  local start = t
  if slot_head <= slot_tail then
    -- the earliest slot not yet used: the one whose timer fired (a reconnect sends
    -- without a delay() and takes none)
    local slot = slots[slot_head]
    slots[slot_head] = nil
    slot_head = slot_head + 1
    if slot < start then
      start = slot
    end
  end
  pending_start[uid] = start
  pending_send[uid] = t
  return wrk.format(nil, nil, nil, heads[index + 1] .. uid .. tails[index + 1])
end

local function is_wrong(body)
  if expect == "echo" then
    return false
  end
  if not body:find('"allowed":true', 1, true) then
    return true
  end
  local patched = body:find('"patch":"', 1, true) ~= nil
  if expect == "patch" then
    return not patched
  end
  return patched
end

function response(status, headers, body)
  local t = now_us()
  if status ~= 200 then
    non200 = non200 + 1
    if wrong_example == "" then
      wrong_example = status .. " " .. body:sub(1, 300)
    end
    return
  end
  local uid = body:match('"uid":"([^"]*)"')
  local start = uid and pending_start[uid]
  if not start then
    unmatched = unmatched + 1
    return
  end
  if is_wrong(body) then
    wrong = wrong + 1
    if wrong_example == "" then
      wrong_example = body:sub(1, 300)
    end
  elseif expect == "patch" and #kept < KEEP_ANSWERS then
    kept[#kept + 1] = body
  end
  local n = #answers
  answers[n + 1] = uid
  answers[n + 2] = start
  answers[n + 3] = pending_send[uid]
  answers[n + 4] = t
  pending_start[uid] = nil
  pending_send[uid] = nil
end

function done(summary, latency, requests)
  local out = assert(io.open(assert(os.getenv("OUT"), "OUT is not set"), "w"))
  local totals = { sent = 0, non200 = 0, wrong = 0, unmatched = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + thread:get(name)
    end
  end
  for name, value in pairs(totals) do
    out:write(string.format("C %s %d\n", name, value))
  end
  for _, thread in ipairs(threads) do
    local example = thread:get("wrong_example")
    if example ~= "" then
      out:write("X " .. example:gsub("\n", " ") .. "\n")
    end
    local a = thread:get("answers")
    for i = 1, #a, 4 do
      out:write(string.format("A %s %d %d %d\n", a[i], a[i + 1], a[i + 2], a[i + 3]))
    end
    for _, body in ipairs(thread:get("kept")) do
      out:write("B " .. body .. "\n")
    end
  end
  out:close()
end
