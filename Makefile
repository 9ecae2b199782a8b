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

# The suite runs in several processes, one per group of test folders. The sbi backend's tests
# load torch, which must not share a process with the rest of the suite's XLA compilations (a
# torch-loaded process segfaulted in one), and one process holding all of the suite's compiled
# programs for 25 minutes aborted in an XLA compile near its end. tests/inference and
# tests/models ran in one process until that process segfaulted in an XLA compile too, once
# fits compiled more (larger) programs and fewer eager one-operation ones: each loaded program
# holds memory mappings, at most vm.max_map_count = 65,530 per process (see tests/conftest.py).
TEST_GROUPS := "tests/diagnostics tests/estimators tests/io tests/designs tests/backends/test_import.py" \
	"tests/inference" "tests/models" \
	"tests/test_*.py" \
	"tests/backends/sbi"

test: $(SBI_STAMP)
	@status=0; for group in $(TEST_GROUPS); do \
	  echo "== pytest $$group"; \
	  $(PY) -m pytest -q -m "not heavy" $$group || status=1; \
	done; exit $$status

test-all: $(SBI_STAMP)
	@status=0; for group in $(TEST_GROUPS); do \
	  echo "== pytest $$group"; \
	  $(PY) -m pytest -q $$group || status=1; \
	done; exit $$status

test-fast: $(SBI_STAMP)
	@status=0; for group in $(TEST_GROUPS); do \
	  case "$$group" in *sbi*) continue;; esac; \
	  $(PY) -m pytest -q -m "not slow and not heavy" $$group || status=1; \
	done; exit $$status

# make bench BENCH_ARGS="--quick" for a short run, BENCH_ARGS="--only p1,p4" for some benchmarks;
# FIDELITY_ARGS="--quick" for a short fidelity table (benchmarks/fidelity.py, docs/fidelity.md);
# uncertainty.py times profiles and bootstraps, coverage.py (about 30 min) writes docs/coverage.md,
# engines.py (the VAE, fit_map, exact NUTS and R nlme side by side) the tables of docs/guide/vae.md;
# speed.py times the CLI cold and warm and fit_map at N = 10,000 by phase, and train_defaults.py
# nlp.train's sized defaults against TrainConfig() on a user's 5-parameter model (issue 19).
# million.py fits N = 10^6 (about 9 minutes, a 21 GiB peak: it needs a 24 GiB machine), first, so that
# run.py's page (P8) shows this run; benchmarks/memory.py gives the memory of each phase at a smaller N.
bench: $(STAMP)
	$(PY) benchmarks/million.py
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) benchmarks/fidelity.py $(FIDELITY_ARGS)
	$(PY) benchmarks/exact_agreement.py
	$(PY) benchmarks/uncertainty.py
	$(PY) benchmarks/coverage.py
	$(PY) benchmarks/engines.py
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/train_defaults.py

# The maths is rendered by MathJax 3: a copy from the npm registry goes into
# docs/javascripts/vendor/mathjax (git-ignored), so the built site renders offline; without npm
# the pages load it from the unpkg CDN instead.
MATHJAX_VERSION := 3.2.2
MATHJAX_DIR := docs/javascripts/vendor/mathjax

$(MATHJAX_DIR)/tex-chtml.js:
	@if command -v npm >/dev/null; then \
	  tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz) && \
	  mkdir -p $(MATHJAX_DIR) && cp $$tmp/package/es5/tex-chtml.js $(MATHJAX_DIR)/ && \
	  mkdir -p $(MATHJAX_DIR)/output/chtml && cp -r $$tmp/package/es5/output/chtml/fonts $(MATHJAX_DIR)/output/chtml/ && \
	  rm -rf $$tmp; \
	else echo "npm not found: the docs will load MathJax from the unpkg CDN"; fi

docs: $(STAMP)
	-@$(MAKE) --no-print-directory $(MATHJAX_DIR)/tex-chtml.js
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site demo_output docs/javascripts/vendor
