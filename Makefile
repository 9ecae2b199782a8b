# nlme_ppl: two commands on a fresh machine, `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SBI_STAMP := $(VENV)/.installed-sbi

.PHONY: demo test test-all test-fast bench docs clean venv sbi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@BASE=$$(bash .ci/find-python) || exit 1; \
	echo "Using $$BASE ($$($$BASE --version))"; \
	[ -x $(PY) ] || $$BASE -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The sbi backend's extra (torch, sbi: a CUDA build of torch from PyPI, about 5.8 GB in the
# venv, a few minutes to install) is for the tests and `make sbi`, not for the demo.
$(SBI_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,sbi]"
	@touch $(SBI_STAMP)

sbi: $(SBI_STAMP)

demo: $(STAMP)
	$(VENV)/bin/nlme-ppl demo --out demo_output

# Two processes: the sbi backend's tests load torch, which must not share a process with the
# rest of the suite's XLA compilations (a torch-loaded process segfaulted in one).
test: $(SBI_STAMP)
	$(PY) -m pytest -q -m "not heavy" tests --ignore=tests/backends/sbi
	$(PY) -m pytest -q -m "not heavy" tests/backends/sbi

test-all: $(SBI_STAMP)
	$(PY) -m pytest -q tests --ignore=tests/backends/sbi
	$(PY) -m pytest -q tests/backends/sbi

test-fast: $(SBI_STAMP)
	$(PY) -m pytest -q -m "not slow and not heavy" tests --ignore=tests/backends/sbi

# make bench BENCH_ARGS="--quick" for a short run, BENCH_ARGS="--only p1,p4" for some benchmarks
bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site demo_output
