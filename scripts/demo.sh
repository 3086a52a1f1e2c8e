#!/usr/bin/env bash
# The main job end to end: build and install airrep, start a throwaway cluster (as the
# `postgres` user, port ${AIRREP_DEMO_PORT:-28815}), load MiniLM-L6 from its PyPI package,
# embed a small table of real instruction pairs, keep it embedded by the background worker
# and run attribution queries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

PORT=${AIRREP_DEMO_PORT:-28815}
WORK=${AIRREP_DEMO_DIR:-/tmp/airrep-demo}

echo "==> build and install the extension (release)"
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null

echo "==> model files readable by the server"
minilm=$(scripts/fetch-minilm.sh)
mkdir -p "$WORK/models"
rm -rf "$WORK/models/minilm" && cp -r "$minilm" "$WORK/models/minilm"
chmod -R a+rX "$WORK"

echo "==> throwaway cluster in $WORK/pgdata on port $PORT"
source scripts/cluster.sh
# preloaded: the background worker keeps a column embedded (the demo's keep_embedded step)
CLUSTER_OPTIONS="-c shared_preload_libraries=airrep" start_cluster "$WORK" "$PORT"

echo "==> demo"
run_psql -v model_dir="$WORK/models/minilm" -f examples/demo.sql
