-- GET /auth/me with a pool of access tokens (BENCH_LINES: one per line), rotating.
local tokens, index

function init(args)
  tokens = my_lines()
  index = 0
end

function request()
  index = index % #tokens + 1
  return wrk.format("GET", "/auth/me", { ["Authorization"] = "Bearer " .. tokens[index] })
end
