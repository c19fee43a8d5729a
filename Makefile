# The two set-up commands (see README.md). Each installs what it needs first.
.PHONY: demo test install bench unit

install:
	./scripts/install.sh

# Install everything, record a demo run on a loop device we create, write a report.
demo: install
	./scripts/demo.sh

# Install everything and run the whole test suite (integration tests need root).
test: install
	.venv/bin/python -m pytest -q -ra tests

unit: install
	.venv/bin/python -m pytest -q -ra tests/unit

bench: install
	.venv/bin/python -m bench
