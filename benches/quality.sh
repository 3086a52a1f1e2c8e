#!/usr/bin/env bash
# Attribution quality: LDS on held-out subsets and targets of real retraining labels (an LM
# fine-tuned on each random subset of instruction pairs), for AirRep's encoders through the
# extension's SQL and for TF-IDF, gradient baselines and the labels' noise ceiling.
# The LM is a 4-layer subword GPT over the encoder's WordPiece pieces, pretrained until its
# loss flattens (the paper's setting); --lexical uses the tiny character-level GPT instead
# (a lexical case: what a subset teaches it is mostly spelling). The pairs come from
# WordNet and fortunes, or with --domain computing from FOLDOC (dict-foldoc).
# Writes docs/quality[-computing][-lexical][-seedN].md and .png (--quick: a few minutes, tiny
# sizes, writes to $AIRREP_QUALITY_DIR only; fails if any method's LDS is missing or not
# finite; --seed N: another label set).
# Usage: benches/quality.sh [--quick] [--lexical] [--domain lexicon|computing] [--seed N]
# (release build, throwaway cluster on port 28818;
# --quick reuses the dev-profile builds scripts/test.sh made before it, whose dependencies
# are optimised (Cargo.toml), so a fresh machine compiles the dependency tree once, not twice)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=""; SEED=""; LEXICAL=""; DOMAIN=lexicon
usage="usage: benches/quality.sh [--quick] [--lexical] [--domain lexicon|computing] [--seed N]"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=--quick ;;
        --lexical) LEXICAL=--lexical ;;
        --domain) DOMAIN="${2:?--domain needs lexicon or computing}"; shift ;;
        --seed) SEED="${2:?--seed needs a number}"; shift ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
case "$DOMAIN" in lexicon|computing) ;; *) echo "$usage" >&2; exit 2 ;; esac
# Another domain, LM or seed draws another label set (other items, subsets and LM
# pretraining), reported beside the default one rather than over it.
SEED_ARGS=(--domain "$DOMAIN"); REPORT=quality
[ "$DOMAIN" = computing ] && REPORT="$REPORT-computing"
[ -n "$LEXICAL" ] && SEED_ARGS+=(--lexical) && REPORT="$REPORT-lexical"
[ -n "$SEED" ] && SEED_ARGS+=(--seed "$SEED") && REPORT="$REPORT-seed$SEED"
if [ -n "$QUICK" ]; then
    PROFILE=(); QUALITY_BIN="${CARGO_TARGET_DIR:-target}/debug/airrep-quality"
    # the build `cargo pgrx test` and scripts/regress.sh install (it adds only the tests schema)
    INSTALL=(--test --features "pg_test pg15" --no-default-features)
else
    PROFILE=(--release); QUALITY_BIN="${CARGO_TARGET_DIR:-target}/release/airrep-quality"
    INSTALL=(--release)
fi
source scripts/setup.sh
WORK=${AIRREP_QUALITY_DIR:-/tmp/airrep-quality}
PORT=${AIRREP_QUALITY_PORT:-28818}

# The text comes from Debian packages; the report's chart from matplotlib.
for package in wordnet-base fortunes-min dict-foldoc; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    fi
done
python3 -c 'import matplotlib' 2>/dev/null || pip install --quiet matplotlib

echo "==> labels (the LM retrained per subset; cached) and baselines"
cargo build "${PROFILE[@]}" -p airrep-bench
rm -rf "$WORK/data" && mkdir -p "$WORK/data" "$WORK/models"
"$QUALITY_BIN" $QUICK "${SEED_ARGS[@]}" --out "$WORK/data"

minilm=$(scripts/fetch-minilm.sh)
rm -rf "$WORK/models/minilm" && cp -r "$minilm" "$WORK/models/minilm"
chmod -R a+rX "$WORK"

# The full run trains with airrep.train's defaults: they are the recipe under test.
if [ -n "$QUICK" ]; then
    options='{"steps": 20, "eval_every": 5}'
else
    options='{}'
fi
# Others install their own builds into the same Postgres: install ours right before use,
# and once more if theirs replaced it before our backend loaded it.
echo "==> install the extension and score AirRep's encoders in a throwaway cluster"
source scripts/cluster.sh
for attempt in 1 2; do
    cargo pgrx install "${INSTALL[@]}" --pg-config "$PG_CONFIG" >/dev/null 2>&1
    start_cluster "$WORK" "$PORT"
    if run_psql -v data="$WORK/data" -v minilm="$WORK/models/minilm" -v train_options="$options" \
        -f benches/quality.sql > "$WORK/data/airrep.tsv"; then
        break
    fi
    stop_cluster
    [ "$attempt" = 2 ] && exit 1
    echo "==> retrying with a fresh install"
done

echo "==> data selection: fine-tune the LM on each 10% selection"
"$QUALITY_BIN" $QUICK "${SEED_ARGS[@]}" --out "$WORK/data" --select-from "$WORK/data"

echo "==> report"
out=docs; [ -n "$QUICK" ] && out="$WORK/report"
mkdir -p "$out"
python3 benches/quality_report.py "$WORK/data" "$options" "$out/$REPORT.md" "$out/$REPORT.png"
cat "$out/$REPORT.md"
