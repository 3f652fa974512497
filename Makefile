# Two entry points for people: `make demo` and `make test`. Both run `make setup` first, which is
# idempotent: a virtualenv in .venv with the project installed at the versions of requirements.lock,
# the Kafka broker jars from Maven Central, and (for the browser tests) Debian's Chromium. `make test`
# also audits the locked dependencies (infra/audit.py).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
KAFKA_LIBS := infra/kafka/target/libs/.complete

.PHONY: setup demo test test-unit test-integration bench chaos lint browser audit lock clean

setup: $(STAMP) $(KAFKA_LIBS)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' -c requirements.lock
	@touch $@

$(KAFKA_LIBS): infra/kafka/pom.xml
	bash infra/kafka/broker.sh fetch

browser:
	@bash infra/browser.sh

demo: setup
	$(PY) cli.py demo

test: setup browser audit
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

audit: setup
	$(PY) infra/audit.py

# After changing dependencies in pyproject.toml: resolve them afresh and record the set CI installs.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^herald' > requirements.lock
	rm -rf .lock-venv

bench: setup
	$(PY) -m bench

# Not part of `make test`: minutes of kills, pauses, restarts and poison against the real broker and
# engine, then every derived table counted, recounted and replayed (tests/chaos; --quick is smaller,
# --seed N replays a plan). Writes bench/results/chaos-latest.json; exits 1 on any loss or duplicate.
chaos: setup
	$(PY) -m tests.chaos

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf .herald infra/kafka/target
