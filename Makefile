# make run: the main job (forward-parity baseline); make test: the whole suite.
# Both create .venv and install the project (with its dev extra) when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HUB ?= outputs/baseline

.PHONY: install run test lint clean gpu-wheels gpu-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m ptycho_torch.baseline --hub $(HUB)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check ptycho_torch tracking tests bench tools

# The GPU acceptance (README: On a GPU machine). gpu-wheels, where an index is reachable:
# the wheels a bare GPU machine lacks, into gpu_wheels/. gpu-check, on the GPU machine,
# from the checkout with gpu_wheels/ in it: install them beside the checkout (no index, no
# venv, our package not installed) and run the check; results into $(GPU_OUT).
GPU_SITE ?= gpu_site
GPU_OUT ?= bench/results

gpu-wheels:
	tools/gpu_wheels.sh gpu_wheels

gpu-check:
	$(PYTHON) -m pip install --quiet --no-index --no-deps --target $(GPU_SITE) gpu_wheels/*.whl
	PYTHONPATH=.:$(GPU_SITE) $(PYTHON) -m bench.gpu_check --out $(GPU_OUT)

clean:
	rm -rf $(VENV) outputs mlruns .pytest_cache $(GPU_SITE)
