# Every target bootstraps .venv from nothing (Python 3.11+ and make are all it needs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test soak bench lint typecheck clean

# The distribution was called meshlib before (PyPI gives that name to another project):
# an older .venv drops it before installing meshlib-proxyless.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip uninstall -q -y meshlib 2>/dev/null || true
	$(BIN)/python -m pip install -q -e ".[dev,kubernetes,demo]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m meshlib.demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The chaos suite's long variants: MESHLIB_SOAK_SECONDS (default 90) per soak test.
soak: $(STAMP)
	MESHLIB_SOAK=1 MESHLIB_SOAK_SECONDS=$${MESHLIB_SOAK_SECONDS:-90} \
		$(BIN)/python -m pytest -q -s -m "chaos or soak" -p no:cacheprovider --timeout 1800

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build dist *.egg-info
