#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml. The SDK is held at the version aibatch
# is tested against (see README, "Dependencies"); raise it here deliberately.
set -euo pipefail
cd "$(dirname "$0")/.."
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "anthropic==2.16.0" >"$constraints"
for spec in "requirements.lock:" "requirements-dev.lock:--extra dev"; do
    out=${spec%%:*}
    extra=${spec#*:}
    # shellcheck disable=SC2086
    uv pip compile --universal --python-version 3.11 pyproject.toml $extra \
        -c "$constraints" --no-header -q -o "$out"
done
