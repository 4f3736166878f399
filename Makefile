# Every target sets up its own virtualenv first: a fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean system-packages

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

# The redis store is tested against a real redis-server (Debian's package).
system-packages:
	@command -v redis-server >/dev/null || { \
		echo "installing redis-server (Debian package) for the redis store's tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

test: lint system-packages
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_gate.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
