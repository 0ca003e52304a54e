# Set-up and the two everyday commands: `make demo` and `make test`.
# Both create .venv when needed, install the project into it, and are quick when already set up.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch lies on the build machines' disk; GPU users override, e.g.
#   make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" install
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.dream3d-installed
DEMO_OUT ?= outputs/demo

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-fast lint format bench sysdeps clean

install: $(STAMP)

# open3d's wheel links against libusb; install it when missing and we may (root + apt-get).
sysdeps:
	@if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libusb-1.0-0 (needed by open3d)"; \
	    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libusb-1.0-0 >/dev/null)); \
	  else \
	    echo "note: open3d needs the system library libusb-1.0 (Debian/Ubuntu: sudo apt-get install libusb-1.0-0)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC) 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import torch" 
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import dream3d, stereo, diffusers, open3d"
	@touch $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/dream3d demo -o $(DEMO_OUT)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/txt2img.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/stereo.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
