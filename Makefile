# The two commands of the README:
#   make demo   set everything up, then segment the bundled demo case and show it
#   make test   set everything up, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch first, with a pin that takes the build on this machine's disk (CPU-friendly here,
# the same release from PyPI elsewhere); torchvision beside it so zennit (LRP) imports.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
SYS_PKGS  := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxkbcommon-x11-0 libxcb-cursor0
STAMP  := $(VENV)/.segxai-installed
# Run under a virtual X server when there is no display (napari needs one) and xvfb-run is there;
# decided when the recipe runs, after `system` may have installed it.
XRUN   = xrun() { if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null 2>&1; then \
	  xvfb-run -a -s "-screen 0 1600x1000x24" "$$@"; else "$$@"; fi; }; xrun

.PHONY: demo test setup system clean

# With a display napari stays open; without one the same pipeline runs under a virtual
# screen and writes the segmentation and a picture of the viewer to demo_out/ (without xvfb-run:
# the segmentation only). Without either, `make test` stops and says what to install.
demo: setup
	$(XRUN) $(VENV)/bin/segxai demo --out demo_out $(if $(DISPLAY),,--headless)

# The widget tests need an X server: without a display and without xvfb-run the run stops with a
# sentence (SKIP_WIDGET_TESTS=1 runs the rest, reporting the widget tests as skipped; never in CI).
test: setup
	@if [ -z "$$DISPLAY" ] && ! command -v xvfb-run >/dev/null 2>&1 && [ -z "$(SKIP_WIDGET_TESTS)" ]; then \
	  echo "make test: no display and no xvfb-run, so the napari widget tests cannot run. Install $(SYS_PKGS)"; \
	  echo "(make test does it when run as root), or run 'make test SKIP_WIDGET_TESTS=1' to skip only those tests."; \
	  exit 1; \
	fi
	$(XRUN) $(PY) -m pytest -q tests

setup: system $(STAMP)

# System packages for a headless X server; installed only when missing and we are root.
system:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-icccm; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing system packages: $(SYS_PKGS)"; \
	    (apt-get install -y -q $(SYS_PKGS) >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $(SYS_PKGS) >/dev/null)); \
	  else \
	    echo "Please install: $(SYS_PKGS) (needs root); continuing without."; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e ".[qt,dev]"
	@touch $(STAMP)

clean:
	rm -rf $(VENV) demo_out build dist
