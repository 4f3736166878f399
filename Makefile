# Every target sets up its own virtualenv first: a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-claims load clean system-packages

$(VENV)/.installed: setup.py requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/serve.py examples/demo.ini

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The redis store is tested against a real redis-server, and the gate page in Chromium
# (Debian's packages; Playwright drives that Chromium and never downloads a browser).
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for the tests:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# axe-core, which the browser tests inject into the gate page (npm registry, locked).
AXE := tests/browser/node_modules/axe-core/axe.min.js
$(AXE): tests/browser/package.json tests/browser/package-lock.json | system-packages
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: lint system-packages $(AXE)
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_gate.py

bench-claims: $(VENV)/.installed
	$(PY) benchmarks/bench_claims.py

load: $(VENV)/.installed
	$(PY) benchmarks/load.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
