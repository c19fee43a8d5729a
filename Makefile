# The two set-up commands (see README.md). Each installs what it needs first.
.PHONY: demo test install bench unit lint

install:
	./scripts/install.sh

# Install everything, record a demo run on a loop device we create, write a report.
demo: install
	./scripts/demo.sh

# Install everything, check the code (lint, format, types), run the whole test suite (integration tests need root):
# the tests that touch no device on both cores, then the device, tracer and QEMU tests one at a time.
test: install lint
	.venv/bin/python -m pytest -q -ra -n 2 -m parallel tests
	.venv/bin/python -m pytest -q -ra --durations=20 -m "not parallel" tests

# the engine's and the binding's C, formatted as .clang-format says (probes/ keep the kernel's style)
NATIVE_C = $(wildcard plugtrace/engine/native/*.[ch] plugtrace/uring/*.[ch])

# ruff (lint and format) and mypy, as configured in pyproject.toml; clang-format on NATIVE_C
lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	clang-format --dry-run -Werror $(NATIVE_C)

unit: install
	.venv/bin/python -m pytest -q -ra -n 2 tests/unit

bench: install
	.venv/bin/python -m bench
