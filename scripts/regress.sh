#!/usr/bin/env bash
# The SQL regression suite (tests/pg_regress/sql against tests/pg_regress/expected), run by
# pg_regress in a throwaway cluster as the `postgres` user. (`cargo pgrx regress` starts its
# server as the invoking user, and Postgres refuses root.) Needs scripts/test.sh's fixtures.
# With --accept, copies the actual output over the expected files (review the diff!).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PG_REGRESS=$($PG_CONFIG --pkglibdir)/pgxs/src/test/regress/pg_regress
# AIRREP_REGRESS="setup selection" runs a part of the suite while iterating.
read -ra SUITE <<<"${AIRREP_REGRESS:-setup vector_type group_influence selection embed embedding_jobs train cleaning reliability pgvector canary}"
# pgvector interop needs pgvector (scripts/test.sh builds it from ../shared/vendor when there).
if [[ " ${SUITE[*]} " == *" pgvector "* && ! -f "$($PG_CONFIG --sharedir)/extension/vector.control" ]]; then
    echo "SKIP pgvector.sql: pgvector is not installed (no ../shared/vendor/pgvector-*.tar.gz to build it from)"
    for i in "${!SUITE[@]}"; do [ "${SUITE[$i]}" = pgvector ] && unset "SUITE[$i]"; done
fi

# The same build `cargo pgrx test` installs: cheap when that ran first.
cargo pgrx install --test --pg-config "$PG_CONFIG" --features "pg_test pg$PG_MAJOR" --no-default-features >/dev/null

source scripts/cluster.sh
start_cluster /tmp/airrep-regress 28817
work=/tmp/airrep-regress/suite
rm -rf "$work" && mkdir -p "$work"
cp -r tests/pg_regress/sql "$work/"
mkdir -p "$work/expected" && cp -r tests/pg_regress/expected/. "$work/expected/"
if [ "${1:-}" = "--accept" ]; then
    for test in "${SUITE[@]}"; do touch "$work/expected/$test.out"; done  # pg_regress stops at a missing one
fi
chown -R postgres "$work"
as_postgres createdb -h /tmp -p "$CLUSTER_PORT" -U postgres airrep_regress

status=0
as_postgres "$PG_REGRESS" --use-existing --host=/tmp --port="$CLUSTER_PORT" --user=postgres \
    --dbname=airrep_regress --inputdir="$work" --outputdir="$work" "${SUITE[@]}" || status=$?
if [ "${1:-}" = "--accept" ]; then
    for test in "${SUITE[@]}"; do cp "$work/results/$test.out" "tests/pg_regress/expected/$test.out"; done
    echo "accepted the actual output into tests/pg_regress/expected/"
elif [ "$status" -ne 0 ]; then
    cat "$work/regression.diffs" >&2 || true
fi
exit "$status"
