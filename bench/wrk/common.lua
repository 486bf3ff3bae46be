-- Shared by every bench script (bench/run.py puts it in front of the scenario's script).
-- Each wrk thread gets an id and its own slice of the lines of BENCH_LINES, so a
-- token or an account given to one thread is never used by another. done() prints one
-- JSON line (BENCH_RESULT) that bench/run.py reads.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

-- The lines of `path` that belong to this thread (every BENCH_THREADS-th, from tid).
function my_lines()
  local path = os.getenv("BENCH_LINES")
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local lines, index = {}, 0
  for line in io.lines(path) do
    if index % nthreads == tid and line ~= "" then
      table.insert(lines, line)
    end
    index = index + 1
  end
  if #lines == 0 then
    error("no lines for thread " .. tid .. " in " .. path)
  end
  return lines
end

-- Latency probe: wait between requests (BENCH_DELAY_MS) so the probe itself never
-- saturates the server.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end

-- Counters a scenario may keep per thread (read back in done()).
ok, failed, starved = 0, 0, 0

function done(summary, latency, requests)
  local total_ok, total_failed, total_starved = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + (thread:get("ok") or 0)
    total_failed = total_failed + (thread:get("failed") or 0)
    total_starved = total_starved + (thread:get("starved") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}, "ok": %d, "failed": %d, "starved": %d, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    total_ok, total_failed, total_starved,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
