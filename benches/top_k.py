"""Data and the numpy baseline for benches/top_k.sh.

    top_k.py generate DIR TARGETS POOL DIM SEED   random f32 vectors: .npy and binary COPY files
    top_k.py numpy DIR K THREADS                  T @ P.T in blocks + argpartition, timed
    top_k.py compare DIR CSV K                     recall of a result CSV against numpy's top-k

The numpy baseline is what a user would write outside the database: the pool is in memory
already (its loading is not timed), scores are one BLAS product per block of the pool, and
each target's k best are kept with argpartition (ties to the smaller id, as airrep.top_k).
"""
import os
import sys
import time

import numpy as np

PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")


def write_copy(path, ids, vectors):
    """Binary COPY of (id bigint, embedding airrep_vector): pgvector's wire format."""
    dim = vectors.shape[1]
    row = np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                    ("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))])
    with open(path, "wb") as out:
        out.write(PGCOPY_HEADER)
        for start in range(0, len(ids), 100_000):
            chunk = np.zeros(min(100_000, len(ids) - start), dtype=row)
            chunk["fields"], chunk["id_len"], chunk["vec_len"], chunk["dim"] = 2, 8, 4 + 4 * dim, dim
            chunk["id"] = ids[start:start + len(chunk)]
            chunk["values"] = vectors[start:start + len(chunk)]
            out.write(chunk.tobytes())
        out.write((-1).to_bytes(2, "big", signed=True))


def generate(directory, targets, pool, dim, seed):
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((targets, dim), dtype=np.float32)
    p = rng.standard_normal((pool, dim), dtype=np.float32)
    np.save(os.path.join(directory, "targets.npy"), t)
    np.save(os.path.join(directory, "pool.npy"), p)
    write_copy(os.path.join(directory, "targets.copy"), np.arange(1, targets + 1), t)
    write_copy(os.path.join(directory, "pool.copy"), np.arange(1, pool + 1), p)


def numpy_top_k(directory, k, block=65536):
    t = np.load(os.path.join(directory, "targets.npy"))
    p = np.load(os.path.join(directory, "pool.npy"))
    started = time.perf_counter()
    best_scores = np.full((len(t), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(t), 0), dtype=np.int64)
    for start in range(0, len(p), block):
        scores = t @ p[start:start + block].T
        ids = np.broadcast_to(np.arange(start + 1, start + 1 + scores.shape[1]), scores.shape)
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, keep, 1)
        best_ids = np.take_along_axis(ids, keep, 1)
    order = np.lexsort((best_ids, -best_scores), axis=1)
    best_ids = np.take_along_axis(best_ids, order, 1)
    seconds = time.perf_counter() - started
    np.save(os.path.join(directory, "numpy_ids.npy"), best_ids)
    return seconds


def compare(directory, csv, k):
    """Mean recall@k of (target_id, example_id) rows in `csv` against numpy's top-k."""
    want = np.load(os.path.join(directory, "numpy_ids.npy"))
    rows = np.loadtxt(csv, delimiter=",", dtype=np.int64, ndmin=2)
    got = {}
    for target, example in rows:
        got.setdefault(int(target), set()).add(int(example))
    recalls = [len(got.get(t + 1, set()) & set(want[t].tolist())) / k for t in sorted({int(r[0]) - 1 for r in rows})]
    return float(np.mean(recalls))


if __name__ == "__main__":
    command, directory = sys.argv[1], sys.argv[2]
    if command == "generate":
        generate(directory, *(int(a) for a in sys.argv[3:7]))
    elif command == "numpy":
        print(f"{numpy_top_k(directory, int(sys.argv[3])):.3f}")
    elif command == "compare":
        print(f"{compare(directory, sys.argv[3], int(sys.argv[4])):.4f}")
