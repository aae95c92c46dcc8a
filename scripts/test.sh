#!/usr/bin/env bash
# Set up a virtual environment from the lock file and run the test suite (README, "Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.lock -e .
exec .venv/bin/python -m pytest "$@"
