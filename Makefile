# tlkit: two commands for a fresh machine.
#   make lab        - create .venv if needed, install, open JupyterLab on the student versions
#   make test       - same install, then the whole test suite (package tests, then the course notebooks)
# and for instructors and the website:
#   make instructor - JupyterLab on the source notebooks, with nbgrader's formgrader and create-assignment
#   make site       - the course as a static website in website/_build/html (every lesson executed)
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
# JupyterLab refuses to run as root without --allow-root (containers, many lab machines).
USER_ID ?= $(shell id -u)
ALLOW_ROOT := $(if $(filter 0,$(USER_ID)),--allow-root,)
# Course-local Jupyter configuration (jupyter-config/README.md): added for this server only.
LAB_ENV = PATH="$(abspath $(VENV))/bin:$$PATH" JUPYTER_CONFIG_PATH="$(abspath jupyter-config/$(1)):$(abspath jupyter-config/common)"
LAB_ARGS = $(ALLOW_ROOT) --ServerApp.root_dir="$(abspath course)"

.PHONY: lab lab-instructor instructor student test install browser doctor bench site clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[lite,course,classroom,dev,site]"
	$(VENV)/bin/jupyter kernelspec list >/dev/null
	@touch $(STAMP)

# Learners work in the student versions (course/release/<lesson>/), generated from the
# nbgrader source notebooks in course/source/ (which hold the solutions). An existing
# release/<lesson> is never regenerated, so a learner's work is never overwritten. Each new one
# gets this kernel's language_info, so JupyterLab does not show it as modified when opened.
student: install
	@cd course && for d in source/*/; do a=$$(basename $$d); \
	  if [ -d "release/$$a" ]; then continue; fi; \
	  PATH="$(abspath $(VENV))/bin:$$PATH" ../$(VENV)/bin/nbgrader generate_assignment "$$a" --log-level=WARN || exit 1; \
	  ../$(PY) -c "import sys, tlkit.lessons as L; L.stamp_language_info(sys.argv[1])" "release/$$a/$$a.ipynb" || exit 1; done

# The learner's JupyterLab: in course/ (nbgrader_config.py found), opened on the student
# versions, without nbgrader's instructor tools.
lab: student
	$(VENV)/bin/tlkit doctor --no-network || true
	cd course && $(call LAB_ENV,learner) jupyter lab $(LAB_ARGS) --ServerApp.default_url=/lab/tree/release

# The instructor's JupyterLab: the source notebooks (with solutions), formgrader and create-assignment.
instructor: install
	cd course && $(call LAB_ENV,instructor) jupyter lab $(LAB_ARGS) --ServerApp.default_url=/lab/tree/source
lab-instructor: instructor

# The course as a static website (website/README.md): executes every lesson (about 19 minutes on
# 2 CPU cores), keeps the student versions with their outputs, builds HTML with Sphinx + myst-nb.
# SITE_LESSONS="00 01" builds only those lessons.
SITE_LESSONS ?=
site: install
	$(PY) website/build.py --out website/_build $(if $(SITE_LESSONS),--lessons $(SITE_LESSONS),)

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
	rm -rf $(VENV) .pytest_cache test-artifacts website/_build
