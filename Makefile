# Two commands do everything on a fresh machine:
#   make book   creates .venv, installs requirements.txt, fetches the data, builds the executed book into _build/html
#   make test   the same set-up, then the whole test suite (which also builds the book)
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
VENV_STAMP := .venv/.requirements-installed
DATA_STAMP := data/.fetched
# pip on this machine warns about every missing local index; keep the log readable.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: book test venv data release clean

book: $(VENV_STAMP) $(DATA_STAMP)
	.venv/bin/jupyter-book build . --builder html -W -n --keep-going 2>&1 | { grep -v "^$$" || true; }
	@echo "The book is in _build/html/index.html"

test: $(VENV_STAMP) $(DATA_STAMP)
	$(PY) -m pytest

venv: $(VENV_STAMP)

# Reinstalls only when requirements.txt or pyproject.toml changed since the last install.
$(VENV_STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt 2>&1 | $(QUIET_PIP)
	touch $@

data: $(DATA_STAMP)

$(DATA_STAMP): requirements.txt $(VENV_STAMP)
	.venv/bin/llmcourse fetch-data 2>&1 | $(QUIET_PIP)
	touch $@

release: $(VENV_STAMP)
	.venv/bin/llmcourse release

clean:
	rm -rf _build .nbgrader .cache
