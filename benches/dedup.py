"""Planted contamination data and the MinHash peer for benches/dedup.sh.

    dedup.py plant EXAMPLES_CSV DIR SEED   bench.csv, train.csv (with the planted truth)
    dedup.py minhash DIR                   datasketch MinHash-LSH pairs (Jaccard 0.8, word
                                           5-gram shingles, 128 permutations), timed
    dedup.py score DIR PAIRS_CSV...        precision, recall per planted kind and F1

Benchmark items are real instruction pairs from the quality benchmark's pool (WordNet
definitions, synonyms, usages, fortunes), all in one "Question: ... Answer: ..." template.
Each planted training row is one item changed one way: a verbatim copy, added prefix or
suffix text, case and punctuation changes, or a word-level paraphrase with WordNet
synonyms. The other training rows are unrelated items of the same template: every pair
the detectors report between those and the benchmark is a false positive.
"""
import csv
import os
import random
import re
import sys
import time

WORDNET = "/usr/share/wordnet"
KINDS = ["verbatim", "prefix_suffix", "case_punctuation", "paraphrase"]
PREFIXES = ["Note: ", "From the archive. ", "Example 12. ", "Read this first: "]
SUFFIXES = [" (source: internet)", " Thanks for reading!", " [edited]", " See also the next entry."]


def synonyms():
    """word -> single-word synonyms sharing a WordNet synset."""
    table = {}
    for part in ("noun", "verb", "adj", "adv"):
        for line in open(os.path.join(WORDNET, f"data.{part}"), encoding="latin-1"):
            if line.startswith("  "):
                continue
            fields = line.split()
            count = int(fields[3], 16)
            words = [fields[4 + 2 * i].lower() for i in range(count)]
            words = [re.sub(r"\(.*\)$", "", w) for w in words if "_" not in w]
            for w in words:
                table.setdefault(w, set()).update(x for x in words if x != w)
    return {w: sorted(s) for w, s in table.items() if s}


def paraphrase(text, table, rng):
    words = text.split(" ")
    # content words only: WordNet lists "a" as a synonym of "adenine"
    swappable = [i for i, w in enumerate(words) if len(w.strip(".,;:!?")) >= 4 and w.lower().strip(".,;:!?") in table]
    if not swappable:
        return None
    chosen = [i for i in swappable if rng.random() < 0.35] or [rng.choice(swappable)]
    for i in chosen:
        bare = words[i].lower().strip(".,;:!?")
        words[i] = words[i].lower().replace(bare, rng.choice(table[bare]))
    return " ".join(words)


def case_punctuation(text, rng):
    changed = "".join(c.upper() if rng.random() < 0.3 else c.lower() for c in text)
    return re.sub(r"[.,:;]", lambda m: rng.choice(["", " ", m.group(0) * 2, "!"]), changed)


def plant(examples_csv, directory, seed):
    rng = random.Random(seed)
    rows = [r["text"] for r in csv.DictReader(open(examples_csv))]
    rows = sorted(set(rows), key=rows.index)  # the pool's own exact repeats would blur the truth
    rng.shuffle(rows)
    n_bench = len(rows) // 4
    bench, distractors = rows[:n_bench], rows[n_bench:]
    table = synonyms()
    train = []
    for i, text in enumerate(bench):
        kind = KINDS[i % len(KINDS)]
        if kind == "verbatim":
            variant = text
        elif kind == "prefix_suffix":
            variant = rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)
        elif kind == "case_punctuation":
            variant = case_punctuation(text, rng)
        else:
            variant = paraphrase(text, table, rng)
        if variant is not None:
            train.append((variant, kind, i + 1))
    train += [(text, "unrelated", "") for text in distractors]
    rng.shuffle(train)
    with open(os.path.join(directory, "bench.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows((i + 1, t) for i, t in enumerate(bench))
    with open(os.path.join(directory, "train.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "kind", "source_id"])
        w.writerows((i + 1, t, k, s) for i, (t, k, s) in enumerate(train))


def shingles(text, n=5):
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def minhash(directory):
    from datasketch import MinHash, MinHashLSH

    bench = list(csv.DictReader(open(os.path.join(directory, "bench.csv"))))
    train = list(csv.DictReader(open(os.path.join(directory, "train.csv"))))
    started = time.perf_counter()

    def signature(text):
        m = MinHash(num_perm=128)
        for s in shingles(text):
            m.update(s.encode())
        return m

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    for row in bench:
        lsh.insert(row["id"], signature(row["text"]))
    pairs = [(row["id"], b) for row in train for b in lsh.query(signature(row["text"]))]
    seconds = time.perf_counter() - started
    with open(os.path.join(directory, "minhash.csv"), "w", newline="") as f:
        csv.writer(f).writerows(pairs)
    print(f"{seconds:.3f}")


def score(directory, pair_files):
    train = list(csv.DictReader(open(os.path.join(directory, "train.csv"))))
    truth = {(r["id"], r["source_id"]) for r in train if r["source_id"]}
    kind_of = {r["id"]: r["kind"] for r in train}
    counts = {k: sum(1 for r in train if r["kind"] == k) for k in KINDS}
    for path in pair_files:
        pairs = {(a, b) for a, b in csv.reader(open(path))}
        hits = pairs & truth
        precision = len(hits) / len(pairs) if pairs else 1.0
        recall = len(hits) / len(truth)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_kind = " ".join(
            f"{k} {sum(1 for a, _ in hits if kind_of[a] == k) / counts[k]:.3f}" for k in KINDS
        )
        print(f"{os.path.basename(path)[:-4]}\t{precision:.3f}\t{recall:.3f}\t{f1:.3f}\t{per_kind}")


if __name__ == "__main__":
    if sys.argv[1] == "plant":
        plant(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "minhash":
        minhash(sys.argv[2])
    elif sys.argv[1] == "score":
        score(sys.argv[2], sys.argv[3:])
