# Two commands do everything on a fresh machine:
#   make book   creates .venv, installs requirements.txt, fetches the data, builds the executed book into _build/html
#   make test   the same set-up, then the whole test suite (which also builds the book)
#   (both install Debian packages when missing: a CJK font for the book, and Chromium for the browser tests,
#   see BOOK_PACKAGES and TEST_PACKAGES)
#   make bench  every benchmark in benchmarks/, one table in benchmarks/RESULTS.md (about an hour; not part of make test)
#   make kit    the student kit in _build/kit (and _build/llmcourse-kit.zip): released notebooks, a wheel whose
#               graded functions are stubs, the offline book; see README, "Teaching a class"
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
VENV_STAMP := .venv/.requirements-installed
BOOK_SYSTEM := .venv/.debian-packages-book
SYSTEM_STAMP := .venv/.debian-packages
# Debian packages: a CJK font for figures with Chinese text (book/matplotlibrc names it), all the book needs; and
# Chromium for the browser tests (tests/test_browser.py), which `make book` does not install (a minute of apt).
# Installed with apt-get when missing (as root, or through sudo).
BOOK_PACKAGES := fonts-wqy-microhei
TEST_PACKAGES := $(BOOK_PACKAGES) chromium
DATA_STAMP := data/.fetched
# Two set-ups at once (two clones, or a build beside a test run): apt-get install waits up to 10 minutes for the
# other's dpkg lock instead of failing at once; apt-get update (whose list lock ignores that option) is retried.
APT_WAIT := -o DPkg::Lock::Timeout=600
# pip on this machine warns about every missing local index; keep the log readable.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: book test bench venv data system release kit clean

# book/build.py executes the chapters that the execution cache lacks in parallel (one per core), then runs
# `jupyter-book build . --builder html -W -n --keep-going`, which finds them cached and only renders.
book: $(VENV_STAMP) $(DATA_STAMP) $(BOOK_SYSTEM)
	$(PY) book/build.py 2>&1 | { grep --line-buffered -v "^$$" || true; }
	@echo "The book is in _build/html/index.html"

# The suite on every core (pytest-xdist): a worker per core (TEST_WORKERS=0: in one process, as plain pytest);
# the book builds in the background meanwhile (tests/conftest.py).
TEST_WORKERS ?= auto
test: $(VENV_STAMP) $(DATA_STAMP) $(SYSTEM_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

bench: $(VENV_STAMP) $(DATA_STAMP) $(SYSTEM_STAMP)
	$(PY) benchmarks/run_all.py

venv: $(VENV_STAMP)

# Reinstalls only when requirements.txt or pyproject.toml changed since the last install.
$(VENV_STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(QUIET_PIP)
	touch $@

system: $(SYSTEM_STAMP)

# $(call debian,PACKAGES): install those of PACKAGES that are missing
define debian
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
	    echo "Cannot install" $$missing "(not root, no sudo): install them, then run make again." >&2; exit 1; fi; \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -q --no-install-recommends $$missing"; \
	  update() { for try in $$(seq 60); do out=$$($$sudo apt-get update -q 2>&1) && return 0; \
	    grep -q "Could not get lock" <<<"$$out" || { echo "$$out" >&2; return 1; }; sleep 10; done; return 1; }; \
	  $$apt >/dev/null || { update && $$apt >/dev/null; } || { \
	    echo "apt-get could not install" $$missing >&2; exit 1; }; \
	  rm -f "$${MPLCONFIGDIR:-$$HOME/.cache/matplotlib}"/fontlist-*.json; \
	fi
endef

$(BOOK_SYSTEM): Makefile $(VENV_STAMP)
	$(call debian,$(BOOK_PACKAGES))
	touch $@

$(SYSTEM_STAMP): Makefile $(VENV_STAMP)
	$(call debian,$(TEST_PACKAGES))
	touch $@

data: $(DATA_STAMP)

$(DATA_STAMP): requirements.txt $(VENV_STAMP)
	.venv/bin/llmcourse fetch-data 2>&1 | $(QUIET_PIP)
	touch $@

release: $(VENV_STAMP)
	.venv/bin/llmcourse release

kit: book
	.venv/bin/llmcourse kit _build/kit
	rm -f _build/llmcourse-kit.zip
	$(PY) -m zipfile -c _build/llmcourse-kit.zip _build/kit
	@echo "The student kit is in _build/kit (zipped: _build/llmcourse-kit.zip)"

clean:
	rm -rf _build .nbgrader .cache
