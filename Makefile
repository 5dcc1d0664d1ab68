# The two commands of the README:
#   make demo   runs the whole job on an embedded PostgreSQL with sample data
#   make test   runs the test suite (a real PostgreSQL, embedded unless told otherwise)
# and make test-pg15 runs the same suite on a PostgreSQL 15 server it starts (production's version).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

# the pages of docs/ with generated parts (cog blocks: the CLI reference, configuration, exit codes,
# metrics, report definitions and lineage, the user mistakes, the benchmark tables)
GENERATED_DOCS := docs/extending.md docs/reports.md docs/reference.md docs/errors.md docs/cli.md docs/benchmarks.md

.PHONY: demo test test-pg15 lint docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/acme-mv demo

test: $(STAMP)
	$(BIN)/pytest -n auto -q --durations=15

# the suite again on Debian's postgresql-15, started and removed by .ci/with-pg15
test-pg15: $(STAMP)
	.ci/with-pg15 $(BIN)/pytest -n auto -q --durations=15

# lint: formatting, lint rules, types (mypy's files are in pyproject.toml), and the
# generated parts of docs/ are current (`make docs` rewrites them)
lint: $(STAMP)
	$(BIN)/ruff format --check acme_mv tests benchmarks migrations
	$(BIN)/ruff check acme_mv tests benchmarks
	$(BIN)/mypy
	$(BIN)/cog -I . --check --diff --check-fail-msg='run: make docs' $(GENERATED_DOCS)

docs: $(STAMP)
	$(BIN)/cog -I . -r $(GENERATED_DOCS)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
