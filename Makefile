# Both targets create .venv on first use. torch is installed first and pinned to the
# CPU build that lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean browser

# The web app's browser tests (tests/test_web_browser.py) drive Debian's chromium through
# Playwright (pip, the dev extra); `playwright install` is never run (it downloads a browser).
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scorelift demo

browser: $(STAMP)
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@$(PY) -c "import playwright" 2>/dev/null || $(PY) -m pip install --quiet -e ".[dev]"

# pytest's exit code 5 means it collected no tests: that is a failure too.
test: $(STAMP) browser
	TORCH_EXTENSIONS_DIR=$$(mktemp -d) $(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) runs
