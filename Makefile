# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, run the main job on the bundled toy model
#   make test   - the same set-up, then the unit tests and every notebook (nbmake)
PYTHON ?= python3
VENV ?= .venv
# Override for a CUDA build, e.g. make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clva-lite-installed

.PHONY: setup demo test notebooks toy-model lint clean

$(PY):
	@# Reuse an already-importable torch (e.g. Colab's CUDA build) by seeing the system site-packages.
	if $(PYTHON) -c "import torch" 2>/dev/null; then \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[notebooks,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m clva_lite demo

NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# Seconds per notebook cell: nbmake's default (300) is tight for a slow or busy CPU; the longest cell, the
# calibration grid notebooks 03-05 share (toy_calibration_choice), takes about 40 s on one thread of a 2-core CPU.
NOTEBOOK_CELL_TIMEOUT ?= 600

# Parallel test workers (pytest-xdist), one thread each; "auto" is one per core. The notebooks go first so that the
# longest items do not start last.
TEST_WORKERS ?= auto

# CLVA_LITE_SOLUTIONS=1: an exercise left open is answered by its reference solution (clva_lite/exercises.py)
test: setup
	CLVA_LITE_SOLUTIONS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) $(NOTEBOOKS) tests --nbmake \
		--nbmake-timeout=$(NOTEBOOK_CELL_TIMEOUT)

notebooks: setup
	$(PY) -m clva_lite.notebooks execute notebooks

toy-model: setup
	$(PY) -m clva_lite.toy train --out data/toy-llava

lint: setup
	$(PY) -m ruff check clva_lite tests

clean:
	rm -rf $(VENV) runs .pytest_cache
