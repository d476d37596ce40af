# The two quick-start commands (README) and the developer checks. Each target sets up
# what it needs first (system packages, .venv, Docker engine, embedded registry).
.PHONY: run test lint bench platform

# The site CA bundle for pip inside builds (a TLS-intercepting proxy): the operator's
# setting, never the repository's; the host's trust store holds the site CA on Debian.
export HEPS_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

run:
	@scripts/bootstrap.sh
	.venv/bin/heps run --all --report reports/run.json --junit reports/junit.xml

platform:
	@scripts/bootstrap.sh
	.venv/bin/heps platform up

test: lint
	.venv/bin/pytest

lint:
	@scripts/bootstrap.sh
	.venv/bin/ruff check pipeline scheduler hub user-init tests bench
	.venv/bin/ruff format --check pipeline scheduler hub user-init tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports --no-cache

bench:
	@scripts/bootstrap.sh
	.venv/bin/python bench/run.py
