# Two commands do everything on a fresh machine:
#   make book   creates .venv, installs requirements.txt, fetches the data, builds the executed book into _build/html
#   make test   the same set-up, then the whole test suite (which also builds the book)
#   make kit    the student kit in _build/kit (and _build/llmcourse-kit.zip): released notebooks, a wheel whose
#               graded functions are stubs, the offline book; see README, "Teaching a class"
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
VENV_STAMP := .venv/.requirements-installed
DATA_STAMP := data/.fetched
# pip on this machine warns about every missing local index; keep the log readable.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: book test venv data release kit clean

book: $(VENV_STAMP) $(DATA_STAMP)
	.venv/bin/jupyter-book build . --builder html -W -n --keep-going 2>&1 | { grep -v "^$$" || true; }
	@echo "The book is in _build/html/index.html"

test: $(VENV_STAMP) $(DATA_STAMP)
	$(PY) -m pytest -n auto --dist loadgroup

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

kit: book
	.venv/bin/llmcourse kit _build/kit
	rm -f _build/llmcourse-kit.zip
	$(PY) -m zipfile -c _build/llmcourse-kit.zip _build/kit
	@echo "The student kit is in _build/kit (zipped: _build/llmcourse-kit.zip)"

clean:
	rm -rf _build .nbgrader .cache
