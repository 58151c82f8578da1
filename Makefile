# Three commands for a fresh machine: `make run` (the daily retraining flow on embedded
# defaults), `make test` (the test suite) and `make up` (the whole platform, supervised; it prints
# the URLs to open). Each sets up the environment itself.
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# Two workers, one test file each at a time: the end-to-end files mostly wait on servers and
# subprocesses, so they overlap well on two cores.
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=25
SIZE ?= 1m 5m
ROUNDS ?= 2

.PHONY: setup browsers run up lint test test-unit bench clean

# Bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on our CI machines) every
# process would otherwise recompile TensorFlow's sources on import (15.6 s -> 4.6 s measured).
setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --compile-bytecode

# Headless Chromium for the browser tests (tests/support/browser.py): Debian's packages, installed
# where apt-get can (as root); elsewhere (or when the install fails) those tests are skipped, saying why.
browsers:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } \
			|| echo "apt-get could not install chromium: the browser tests will be skipped, saying why"; \
	else echo "chromium and chromium-driver are not installed: the browser tests will be skipped"; fi

run: setup
	$(UV) run --frozen railyard run --auto-approve

up: setup
	$(UV) run --frozen railyard up

lint: setup
	$(UV) run --frozen ruff check
	$(UV) run --frozen ruff format --check

test: lint browsers
	$(UV) run --frozen pytest $(PYTEST_ARGS)

# The fast layer only: pure logic, no servers (about half a minute).
test-unit: setup
	$(UV) run --frozen pytest $(PYTEST_ARGS) tests/unit

bench: setup
	for size in $(SIZE); do $(UV) run --frozen python -m bench.run --size $$size --rounds $(ROUNDS) || exit 1; done

clean:
	rm -rf .railyard .pytest_cache test-artifacts
