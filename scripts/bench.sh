#!/usr/bin/env bash
# The benchmark suite in one command: the demo world's query set cold and warm beside the
# physical limit, 64 concurrent clients, dlt + DuckDB (installed into a venv on first use), and
# the wire against the local PostgreSQL. Extra arguments go to the runner, e.g.
#   scripts/bench.sh --scale 4 --api-latency 100 --runs 9 --skip-dlt
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/joinery-target}"
exec cargo bench -p joinery-benches --bench suite --profile bench-fast -- \
  --scale 1 --api-latency 50 --runs 5 --json "$CARGO_TARGET_DIR/bench.json" "$@"
