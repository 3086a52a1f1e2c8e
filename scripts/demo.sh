#!/usr/bin/env bash
# The main job end to end: build and install airrep, start a throwaway cluster (as the
# `postgres` user, port ${AIRREP_DEMO_PORT:-28815}), load MiniLM-L6 from its PyPI package,
# embed a small table of real instruction pairs and run attribution queries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

PORT=${AIRREP_DEMO_PORT:-28815}
WORK=${AIRREP_DEMO_DIR:-/tmp/airrep-demo}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin

echo "==> build and install the extension (release)"
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null

echo "==> model files readable by the server"
minilm=$(scripts/fetch-minilm.sh)
mkdir -p "$WORK/models"
rm -rf "$WORK/models/minilm" && cp -r "$minilm" "$WORK/models/minilm"
chmod -R a+rX "$WORK"

echo "==> throwaway cluster in $WORK/pgdata on port $PORT"
as_postgres() { sudo -u postgres "$@"; }
if [ -f "$WORK/pgdata/postmaster.pid" ]; then
    as_postgres "$BIN/pg_ctl" -D "$WORK/pgdata" stop -m fast >/dev/null || true
fi
rm -rf "$WORK/pgdata"
mkdir -p "$WORK/pgdata" && chown postgres "$WORK/pgdata"
as_postgres "$BIN/initdb" -D "$WORK/pgdata" -A trust -U postgres >/dev/null
as_postgres "$BIN/pg_ctl" -D "$WORK/pgdata" -o "-p $PORT -k /tmp -c listen_addresses=''" -l "$WORK/postgres.log" -w start >/dev/null
trap 'as_postgres "$BIN/pg_ctl" -D "$WORK/pgdata" stop -m fast >/dev/null' EXIT

echo "==> demo"
as_postgres psql -h /tmp -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -X \
    -v model_dir="$WORK/models/minilm" -f sql/demo.sql
