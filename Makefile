# Quart Auth API: `make run` serves, `make test` tests. Only python3 (3.11+) and make needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: run test fuzz lint audit format migrate clean

# The venv is rebuilt when a requirements file changes.
$(BIN)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(BIN)/.dev: requirements-dev.txt $(BIN)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

instance:
	@mkdir -p -m 700 instance

## run: install, apply migrations and serve on http://localhost:5000 (SQLite at instance/app.db)
run: $(BIN)/.runtime instance
	$(BIN)/alembic upgrade head
	$(PY) run.py

## migrate: apply the migrations to DATABASE_URL
migrate: $(BIN)/.runtime instance
	$(BIN)/alembic upgrade head

## test: the whole suite (SQLite, and PostgreSQL too when TEST_DATABASE_URL is set)
test: $(BIN)/.dev
	$(BIN)/pytest

## fuzz: the schemathesis conformance run, long and with a random seed (FUZZ_EXAMPLES per operation)
FUZZ_EXAMPLES ?= 1000
fuzz: $(BIN)/.dev
	QAA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) QAA_FUZZ_SEED=random QAA_FUZZ_TIMEOUT=3600 \
		$(BIN)/pytest -s -p no:cacheprovider tests/test_conformance.py

## lint: ruff and mypy
lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## audit: known advisories in the pinned runtime dependencies (pip-audit): exits 0 only when
## every dependency was audited and none has an advisory, 1 on an advisory, 3 when not run
audit: $(BIN)/.dev
	$(PY) scripts/audit.py

format: $(BIN)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# -- benchmarks (bench/README.md) ------------------------------------------------------
BENCH_VENV := bench/.venv
BENCH_PY := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: requirements-bench.txt bench/flask_reference/requirements.txt
	@test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet -r requirements-bench.txt
	@touch $@

.PHONY: bench bench-smoke bench-profile bench-compare bench-lifecycle bench-mfa bench-loop-stall bench-floor

## bench: this service vs the Flask reference (SQLite and PostgreSQL, scaling, table growth);
## writes bench/results/<date>/ and bench/latest.{json,png}. Installs wrk (apt-get) when missing.
bench: $(BIN)/.runtime $(BENCH_VENV)/.installed
	BENCH_COMMAND="make bench" $(BENCH_PY) -m bench.run $(BENCH_ARGS)

## bench-smoke: the same harness, a second per figure, SQLite, 1 worker (proves it works)
bench-smoke: $(BIN)/.runtime $(BENCH_VENV)/.installed
	BENCH_COMMAND="make bench-smoke" $(BENCH_PY) -m bench.run --smoke $(BENCH_ARGS)

## bench-profile: py-spy profiles of GET /auth/me, POST /auth/refresh and POST /auth/login
bench-profile: $(BIN)/.runtime $(BENCH_VENV)/.installed
	BENCH_COMMAND="make bench-profile" $(BENCH_PY) -m bench.run --profile $(BENCH_ARGS)

## bench-compare: GET /auth/me of this checkout against BASELINE (a git revision), interleaved
BASELINE ?= HEAD
bench-compare: $(BIN)/.runtime $(BENCH_VENV)/.installed
	BENCH_COMMAND="make bench-compare BASELINE=$(BASELINE)" $(BENCH_PY) -m bench.run --compare $(BASELINE) $(BENCH_ARGS)

## bench-mfa: this service only: POST /auth/mfa/challenge latency against POST /auth/login,
## and GET /auth/me with and without a second factor (interleaved rounds; SQLite and PostgreSQL)
bench-mfa: $(BIN)/.runtime $(BENCH_VENV)/.installed
	BENCH_COMMAND="make bench-mfa" $(BENCH_PY) -m bench.run --mfa $(BENCH_ARGS)

## bench-loop-stall: how long the guard's SQLite read holds the event loop while two other
## processes write (against the same read through aiosqlite's thread, and a CPU-only control)
bench-loop-stall: $(BIN)/.runtime
	$(PY) -m bench.loop_stall $(BENCH_ARGS)

## bench-floor: where the floors are: bcrypt flat out, a process per core with no server (login's
## ceiling), where a login load's CPU goes, the CPU of a token check (and one read's parts)
bench-floor: $(BIN)/.runtime
	$(PY) -m bench.floor $(BENCH_ARGS)

## bench-lifecycle: forgot-password timing for unknown/inactive/known addresses (interleaved),
## and an SMTP outage (requests answered while down, mail delivered after, duplicates)
bench-lifecycle: $(BIN)/.dev
	$(PY) -m bench.lifecycle $(BENCH_ARGS)
