-- POST /auth/refresh where every refresh token is used exactly once.
-- Each thread starts with a queue of refresh tokens of distinct sessions (BENCH_LINES);
-- a request takes the oldest token off the queue, and its answer's rotated refresh
-- token goes to the back. A failed refresh loses that session; a thread whose queue is
-- empty sends GET /healthz instead and counts it as `starved` (never a refresh).
local queue, head, tail

function init(args)
  queue = my_lines()
  head, tail = 1, #queue
end

function request()
  if head > tail then
    starved = starved + 1
    return wrk.format("GET", "/healthz")
  end
  local token = queue[head]
  queue[head] = nil
  head = head + 1
  return wrk.format("POST", "/auth/refresh", { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if status == 200 and token then
    ok = ok + 1
    tail = tail + 1
    queue[tail] = token
  elseif status ~= 200 then
    failed = failed + 1
  end
end
