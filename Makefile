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
