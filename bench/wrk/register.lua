-- POST /auth/register with a new email on every request: BENCH_RUN (unique per run and
-- side), the thread id and a counter.
local prefix, count, password

function init(args)
  prefix = os.getenv("BENCH_RUN") .. "-t" .. tid .. "-"
  password = os.getenv("BENCH_PASSWORD")
  count = 0
end

function request()
  count = count + 1
  local body = string.format(
    '{"email": "%s%d@bench.example.com", "password": "%s", "name": "Bench %d"}',
    prefix, count, password, count)
  return wrk.format("POST", "/auth/register", { ["Content-Type"] = "application/json" }, body)
end
