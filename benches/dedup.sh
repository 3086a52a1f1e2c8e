#!/usr/bin/env bash
# Contamination detection on planted data: airrep.contamination's exact, ngram and
# embedding methods (MiniLM vectors) against datasketch's MinHash-LSH (Jaccard 0.8, word
# 5-gram shingles, 128 permutations) on the same rows in the same run. Prints precision,
# recall (overall and per planted kind), F1 and rows/s for each (benches/dedup.py says how
# the data is planted: real text from the quality benchmark's pool).
# Usage: benches/dedup.sh [seed]   (release build, throwaway cluster on port 28819)
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:-1}
source scripts/setup.sh
WORK=${AIRREP_DEDUP_DIR:-/tmp/airrep-dedup}
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 777 "$WORK"
python3 -c 'import datasketch' 2>/dev/null || pip install --quiet datasketch
dpkg-query -W -f='${Status}' wordnet-base 2>/dev/null | grep -q "install ok installed" ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base fortunes-min >/dev/null)

cargo build --release -p airrep-bench
"${CARGO_TARGET_DIR:-target}/release/airrep-quality" --texts-only --out "$WORK"
python3 benches/dedup.py plant "$WORK/examples.csv" "$WORK" "$SEED"
minilm=$(scripts/fetch-minilm.sh)
cp -r "$minilm" "$WORK/minilm" && chmod -R a+rX "$WORK"

cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
source scripts/cluster.sh
start_cluster /tmp/airrep-dedup-cluster 28819
run_psql -q -v dir="$WORK" <<'SQL'
CREATE EXTENSION airrep;
CREATE TABLE bench (id int, text text, embedding airrep_vector(384));
CREATE TABLE train (id int, text text, kind text, source_id int, embedding airrep_vector(384));
\set f :dir '/bench.csv'
COPY bench (id, text) FROM :'f' (FORMAT csv, HEADER);
\set f :dir '/train.csv'
COPY train (id, text, kind, source_id) FROM :'f' (FORMAT csv, HEADER);
\set f :dir '/minilm'
SELECT airrep.load_model('minilm', :'f') > 0 AS loaded;
SQL
seconds() {  # the time of one statement, in seconds
    run_psql -qAt -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1 |
        awk '{ printf "%.3f", $1 / 1000 }'
}
rows=$(run_psql -qAt -c "SELECT (SELECT count(*) FROM bench) + (SELECT count(*) FROM train)")
encode_s=$(seconds "UPDATE bench SET embedding = airrep.encode('minilm', text); UPDATE train SET embedding = airrep.encode('minilm', text)")
for method in exact ngram embedding; do
    s=$(seconds "CREATE TABLE pairs_$method AS SELECT train_id, benchmark_id FROM airrep.contamination('train', 'bench', '{$method}')")
    run_psql -qAt -c "COPY pairs_$method TO '$WORK/airrep_$method.csv' (FORMAT csv)"
    echo "$method $s" >> "$WORK/times"
done
s=$(seconds "CREATE TABLE pairs_text AS SELECT DISTINCT train_id, benchmark_id FROM airrep.contamination('train', 'bench', '{exact,ngram}')")
run_psql -qAt -c "COPY pairs_text TO '$WORK/airrep_exact+ngram.csv' (FORMAT csv)"
echo "exact+ngram $s" >> "$WORK/times"
echo "minhash $(python3 benches/dedup.py minhash "$WORK")" >> "$WORK/times"

echo
echo "$rows rows (benchmark + train); MiniLM encoding of all rows took $encode_s s (not in the rows/s below)"
printf '%-22s %9s %7s %7s %10s  %s\n' method precision recall F1 rows/s "recall by planted kind"
python3 benches/dedup.py score "$WORK" "$WORK"/airrep_exact.csv "$WORK"/airrep_ngram.csv "$WORK"/airrep_embedding.csv \
    "$WORK/airrep_exact+ngram.csv" "$WORK"/minhash.csv |
while IFS=$'\t' read -r name precision recall f1 kinds; do
    method=${name#airrep_}
    s=$(awk -v m="$method" '$1 == m { print $2 }' "$WORK/times")
    printf '%-22s %9s %7s %7s %10.0f  %s\n' "$name" "$precision" "$recall" "$f1" "$(awk -v r="$rows" -v s="$s" 'BEGIN { print r / s }')" "$kinds"
done
