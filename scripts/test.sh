#!/usr/bin/env bash
# The test command (README): starts what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target dir outside the clone, so CI and developers reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/joinery-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/services.sh
JOINERY_TEST_PYTHON="$(scripts/setup-clients.sh)"
export JOINERY_TEST_PYTHON

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace --no-fail-fast
