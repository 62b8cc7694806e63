# tlkit: two commands for a fresh machine.
#   make lab   - create .venv if needed, install, open JupyterLab on course/
#   make test  - same install, then the whole test suite (package tests, then the course notebooks)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tlkit-installed
# Use the classroom mirror beside the checkout when there is one (CI has ../shared/datasets).
SHARED := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED)),)
export TLKIT_MIRROR ?= $(SHARED)
endif
PYTEST_ARGS ?=

.PHONY: lab student test install browser doctor bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[lite,course,dev]"
	$(VENV)/bin/jupyter kernelspec list >/dev/null
	@touch $(STAMP)

# Learners work in the student versions (course/release/<lesson>/), generated from the
# nbgrader source notebooks in course/source/ (which hold the solutions). An existing
# release/<lesson> is never regenerated, so a learner's work is never overwritten.
student: install
	@cd course && for d in source/*/; do a=$$(basename $$d); \
	  if [ -d "release/$$a" ]; then continue; fi; \
	  PATH="$(abspath $(VENV))/bin:$$PATH" ../$(VENV)/bin/nbgrader generate_assignment "$$a" --log-level=WARN || exit 1; done

lab: student
	$(VENV)/bin/tlkit doctor --no-network || true
	$(VENV)/bin/jupyter lab course/

# Headless Chromium for the widget browser test: Debian's package (never a browser
# download of Playwright's own). Skipped with a message where we cannot install it.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "note: chromium not installed; the browser test will be skipped"

# The classroom round trip (tests/test_classroom_hub.py, as root): JupyterHub in the venv, its
# proxy from npm, setfacl (Debian's acl). Skipped with a message where we cannot install them.
.PHONY: hub-deps
HUB_STAMP := $(VENV)/.tlkit-hub-installed
hub-deps: $(HUB_STAMP)
	@command -v configurable-http-proxy >/dev/null || \
	  { command -v npm >/dev/null && npm install -g --silent configurable-http-proxy >/dev/null ; } || \
	  echo "note: configurable-http-proxy not installed (npm install -g configurable-http-proxy); the classroom test will be skipped"
	@command -v setfacl >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq acl >/dev/null) ; } || \
	  echo "note: setfacl not installed; the classroom test needs it only where Python lives in a closed folder such as /root"

$(HUB_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[hub]"
	@touch $(HUB_STAMP)

# Package tests, then every lesson notebook (with solutions) executed by nbval.
test: install browser hub-deps
	$(PY) -m pytest tests course/source --nbval-lax --nbval-cell-timeout=900 $(PYTEST_ARGS)

doctor: install
	$(VENV)/bin/tlkit doctor

bench: install
	$(PY) bench/bench_finetune.py
	$(PY) bench/bench_features.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
