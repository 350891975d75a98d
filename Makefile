# Both targets create .venv on first use. torch is installed first and pinned to the
# CPU build that lies on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/scorelift demo

# pytest's exit code 5 means it collected no tests: that is a failure too.
test: $(STAMP)
	TORCH_EXTENSIONS_DIR=$$(mktemp -d) $(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) runs
