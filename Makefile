# `make run`  — the main job on the embedded IU X-ray data (installs everything it needs first)
# `make test` — the test suite (installs everything it needs first)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
CONFIG ?= configs/demo.yaml
OUT    ?= runs/demo

.PHONY: run test install clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/rrg pipeline run --config $(CONFIG) --out $(OUT) --summary-json $(OUT)/summary.json

test: $(STAMP)
	bash scripts/install_orthanc.sh
	bash scripts/install_triton.sh
	$(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) .venv-triton runs .pytest_cache
