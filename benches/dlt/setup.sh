#!/usr/bin/env bash
# The dlt + DuckDB side of the benchmark: a Python venv with pinned dlt and DuckDB.
#
# Creates (or repairs) the venv at ${JOINERY_DLT_VENV:-$HOME/.cache/joinery-dlt-venv} with the
# machine's python3 and installs the pinned packages from PyPI. Idempotent: a venv that already
# has the pinned versions is left alone. pip's chatter goes to stderr; the last line of stdout
# is the venv's python, for running compare.py with.
set -euo pipefail

DLT_VERSION=1.31.0
DUCKDB_VERSION=2.0.0

venv="${JOINERY_DLT_VENV:-$HOME/.cache/joinery-dlt-venv}"
python="$venv/bin/python"

has_pins() {
    [[ -x "$python" ]] && "$python" - "$DLT_VERSION" "$DUCKDB_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version

sys.exit(0 if (version("dlt"), version("duckdb")) == (sys.argv[1], sys.argv[2]) else 1)
EOF
}

if ! has_pins; then
    if ! "$python" -c '' 2>/dev/null; then
        echo "setup: creating the venv at $venv" >&2
        python3 -m venv --clear "$venv" >&2
    fi
    echo "setup: installing dlt[duckdb]==$DLT_VERSION duckdb==$DUCKDB_VERSION" >&2
    "$python" -m pip install --quiet --disable-pip-version-check \
        "dlt[duckdb]==$DLT_VERSION" "duckdb==$DUCKDB_VERSION" >&2
    if ! has_pins; then
        echo "setup: the venv at $venv still lacks the pinned dlt/duckdb" >&2
        exit 1
    fi
fi

echo "$python"
