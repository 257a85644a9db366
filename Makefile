# Two commands for a newcomer:  `make play` (install + start the browser demo)
#                               `make test` (install + run the test suite)
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-dev system-deps play test
install:
	$(PIP) install -q -e .

# Headless rendering (MuJoCo through EGL or OSMesa) and Chromium for the browser tests.
system-deps:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libegl1 libgl1 libosmesa6 chromium >/dev/null; \
	else echo "not root or no apt-get: install libegl1 libosmesa6 chromium yourself"; fi

install-dev: system-deps
	$(PIP) install -q -e ".[dev]"

play: install
	worldmodel play

test: install-dev
	$(PYTHON) -m pytest -q
