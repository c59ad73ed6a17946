# Two entry points for a fresh machine: `make demo` and `make test`.
# Python 3.12+ is required (VapourSynth's wheels); pyenv's 3.12 is used when `python3.12` is not on PATH.
PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 python3.13; do \
	  $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
# An index to take torch and torchvision from before the rest, e.g. PyTorch's CPU-only wheels:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Empty (the default): PyPI's build, which on Linux is the CUDA one with ~4 GB of NVIDIA libraries.
TORCH_INDEX ?=

.PHONY: demo test lint env

$(BIN)/vidsr: pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python 3.12+ not found" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install -q torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/vapoursynth config >/dev/null  # lets the wheel's vspipe find this Python
	touch $@

env: $(BIN)/vidsr

# Upscale a generated sample clip (audio + subtitles) with the bundled default model (ESPCN x2).
demo: env
	mkdir -p out
	$(BIN)/python -m vidsr.tools.sample out/sample.mkv --overwrite
	$(BIN)/vidsr upscale out/sample.mkv -o out/sample_x2.mkv --overwrite
	$(BIN)/vidsr probe out/sample_x2.mkv

# The browser tests run in a process of their own: inside the full run, after the rest of the suite, Chromium's
# renderers have twice spun at full CPU and held the run (the same tests alone pass in under a minute).
test: env
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --deselect tests/test_web_browser.py
	$(BIN)/python -m pytest -q tests/test_web_browser.py
