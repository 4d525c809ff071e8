# make run: the main job (forward-parity baseline); make test: the whole suite.
# Both create .venv and install the project (with its dev extra) when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HUB ?= outputs/baseline

.PHONY: install run test lint clean

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

clean:
	rm -rf $(VENV) outputs mlruns .pytest_cache
