-- POST /auth/login, rotating across seeded accounts (BENCH_LINES: one email per line),
-- all with the password BENCH_PASSWORD.
local bodies, index

function init(args)
  local password = os.getenv("BENCH_PASSWORD")
  bodies = {}
  for _, email in ipairs(my_lines()) do
    table.insert(bodies, string.format('{"email": "%s", "password": "%s"}', email, password))
  end
  index = 0
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", "/auth/login", { ["Content-Type"] = "application/json" }, bodies[index])
end
