#!/usr/bin/env bash
# Format, lint and type checks (configured in pyproject.toml) on the packages that are clean,
# and format and lint on the benchmark scripts (not type-checked: they are scripts).
# Add a package to PACKAGES once `ruff format`, `ruff check` and `mypy` pass on it.
# Usage: scripts/lint.sh    (from anywhere; needs the test extra: pip install -e ".[test]")
PACKAGES="sarathi vattention adaptivocab"
SCRIPTS="benchmarks"

set -uo pipefail
cd "$(dirname "$0")/.."

rc=0
# shellcheck disable=SC2086  # PACKAGES is a word list on purpose
ruff format --check $PACKAGES $SCRIPTS || rc=1
# shellcheck disable=SC2086
ruff check $PACKAGES $SCRIPTS || rc=1
# shellcheck disable=SC2086
mypy $PACKAGES || rc=1
exit "$rc"
