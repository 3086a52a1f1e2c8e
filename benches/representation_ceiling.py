"""What a representation can reach on the quality benchmark's labels, before any training.

    target/release/airrep-quality --out /tmp/states --token-states "$(scripts/fetch-minilm.sh)"
    python3 benches/representation_ceiling.py /tmp/states "$(scripts/fetch-minilm.sh)"

Reads the token states and labels that `--token-states` writes (crates/airrep-bench/src/
token_states.rs) and prints LDS x 100 on the benchmark's evaluation subsets and targets
("eval") and over all its training labels ("train", what `depth` 'auto' reads), with
attention and sum pooling, for:
* mean-pooled token states after the embeddings and each of the first layers, centred on
  the pool's mean (the default start);
* token weightings of that pooling (IDF; the response part of the text weighted up);
* other codes of the same states (layers concatenated, unit length, a closed-form bilinear
  fit, random ReLU token features) and other poolings of them (max, mean and max, the
  positive and negative parts);
* WordPiece-token TF-IDF, its best low-rank linear codes (LSA) and a random projection:
  how much of lexical overlap a dense code of a given width keeps; and a hybrid, the
  default start's code concatenated with the TF-IDF.
docs/training.md ("what limits a 384-dimensional code") reports a run. About 5 minutes on 2
cores; needs numpy and scipy.
"""

import json
import sys

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

STATES, MODEL = sys.argv[1], sys.argv[2]
data = json.load(open(f"{STATES}/data.json"))
POOL, TRAIN_TARGETS, TRAIN_SUBSETS = data["pool"], data["train_targets"], data["train_subsets"]
SUBSETS = data["subsets"]
LOSSES = np.array(data["losses"])  # [subset][target]
IDS = [np.array(list(map(int, line.split()))) for line in open(f"{STATES}/ids.txt")]
TOKEN_IDS = np.concatenate(IDS)
ROW_OF = np.repeat(np.arange(len(IDS)), [len(r) for r in IDS])
VOCAB = json.load(open(f"{MODEL}/tokenizer.json"))["model"]["vocab"]
SPECIAL = [VOCAB["[CLS]"], VOCAB["[SEP]"]]
HIDDEN = None
SPLITS = {
    "train": (range(TRAIN_SUBSETS), range(TRAIN_TARGETS)),
    "eval": (range(TRAIN_SUBSETS, len(SUBSETS)), range(TRAIN_TARGETS, data["targets"])),
}


def states(depth):
    global HIDDEN
    raw = np.fromfile(f"{STATES}/h{depth}.f32", dtype=np.float32)
    HIDDEN = raw.size // len(TOKEN_IDS)
    return raw.reshape(-1, HIDDEN).astype(np.float64)


def pooled(tokens, weights=None):
    """Weighted mean over each text's tokens."""
    w = np.ones(len(tokens)) if weights is None else weights
    total = np.zeros((len(IDS), tokens.shape[1]))
    np.add.at(total, ROW_OF, tokens * w[:, None])
    return total / np.maximum(np.bincount(ROW_OF, w, minlength=len(IDS)), 1e-12)[:, None]


def centred(x):
    return x - x[:POOL].mean(0)


def rank(x):
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, r) / counts)[inverse]  # ties share their mean rank


def lds(x, split, pooling):
    """Mean over targets of Spearman(group score, -loss) across subsets."""
    subsets, targets = SPLITS[split]
    scores = x[POOL:][list(targets)] @ x[:POOL].T
    out = []
    for j, t in enumerate(targets):
        group = np.empty(len(subsets))
        for k, s in enumerate(subsets):
            member = scores[j, SUBSETS[s]]
            if pooling == "sum":
                group[k] = member.sum()
            else:
                w = np.exp(np.abs(member) - np.abs(member).max())
                group[k] = (w * member).sum() / w.sum()
        a, b = rank(group), rank(-LOSSES[list(subsets), t])
        a, b = a - a.mean(), b - b.mean()
        den = np.sqrt((a * a).sum() * (b * b).sum())
        out.append(0.0 if den == 0 else (a * b).sum() / den)
    return 100 * np.mean(out)


def row(name, x, temperatures=(1,)):
    """Attention at the best of `temperatures` (a scale of the vectors) on eval."""
    attention = max((lds(x * t, "eval", "attention"), t) for t in temperatures)
    x_at = x * attention[1]
    print(f"| {name} | {lds(x_at, 'train', 'attention'):.2f} | {attention[0]:.2f} "
          f"| {lds(x, 'train', 'sum'):.2f} | {lds(x, 'eval', 'sum'):.2f} |", flush=True)


def header(title):
    print(f"\n{title}\n\n| code | attention, train | attention, eval | sum, train | sum, eval |")
    print("|---|---:|---:|---:|---:|")


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


header("Mean-pooled token states, centred")
by_depth = {d: centred(pooled(states(d))) for d in range(4)}
for d, x in by_depth.items():
    row(f"after {'the embeddings' if d == 0 else f'layer {d}'}", x)

header("Token weightings of the pooling (layer 1, centred)")
layer1 = states(1)
document_frequency = np.zeros(len(VOCAB))
for r in IDS[:POOL]:
    document_frequency[np.unique(r)] += 1
idf = np.log((1 + POOL) / (1 + document_frequency)) + 1  # scikit-learn's smooth idf
row("IDF", centred(pooled(layer1, idf[TOKEN_IDS])))
idf_plain = idf.copy()
idf_plain[SPECIAL] = 0
row("IDF, [CLS]/[SEP] 0", centred(pooled(layer1, idf_plain[TOKEN_IDS])))
# The response: the tokens after the benchmark template's last "answer :".
response = np.zeros(len(TOKEN_IDS))
start = 0
for r in IDS:
    at = max(j for j in range(len(r) - 1) if r[j] == VOCAB["answer"] and r[j + 1] == VOCAB[":"])
    response[start + at + 2:start + len(r) - 1] = 1
    start += len(r)
row("response tokens only", centred(pooled(layer1, response)))
row("response tokens x2", centred(pooled(layer1, 1 + response)))

header("Other codes of the same states (centred)")
scale = np.linalg.norm(by_depth[1][:POOL], axis=1).mean()
for layers in [(0, 1, 2, 3)]:
    parts = [x / np.linalg.norm(x[:POOL], axis=1).mean() for x in (by_depth[d] for d in layers)]
    row(f"layers {layers} concatenated", np.hstack(parts) * scale / np.sqrt(len(layers)),
        (0.7, 1, 1.4))
for d in (1, 2):
    row(f"layer {d}, unit length", unit(by_depth[d]), (1, 2, 3))
rng = np.random.default_rng(0)
tokens = layer1 - layer1.mean(0)
tokens = unit(tokens)
features = np.maximum(tokens @ rng.standard_normal((HIDDEN, 4096)) - 1, 0)
relu = centred(pooled(features))
row("random ReLU features of layer-1 tokens (4096)", relu / np.linalg.norm(relu[:POOL], axis=1).mean(),
    (1, 2, 4))
# t^T M s fitted to the training ranks by ridge regression shrunk toward the identity,
# through the SVDs of the targets' and the subsets' (mean-member) matrices.
x = by_depth[1]
targets_train = x[POOL:][:TRAIN_TARGETS]
subset_means = np.array([x[:POOL][SUBSETS[s]].mean(0) for s in range(TRAIN_SUBSETS)])
ranks = np.apply_along_axis(rank, 0, -LOSSES[:TRAIN_SUBSETS, :TRAIN_TARGETS]).T
ranks = (ranks - ranks.mean(1, keepdims=True)) / ranks.std(1, keepdims=True)
g0 = targets_train @ subset_means.T
alpha = (g0 * ranks).sum() / (g0 * g0).sum()
ut, st, vt = np.linalg.svd(targets_train, full_matrices=False)
us, ss, vs = np.linalg.svd(subset_means, full_matrices=False)
residual = ut.T @ (ranks - alpha * g0) @ us
for shrink in (0.1, 1.0):
    lam = shrink * st.max() ** 2 * ss.max() ** 2
    k = np.outer(st, ss) / (np.outer(st, ss) ** 2 + lam)
    m = alpha * np.eye(HIDDEN) + vt.T @ (k * residual) @ vs
    eigenvalues, vectors = np.linalg.eigh((m + m.T) / 2)
    z = x @ (vectors * np.sqrt(np.clip(eigenvalues, 0, None)))
    row(f"bilinear ridge fit, shrink {shrink} (PSD part)",
        z * scale / np.linalg.norm(z[:POOL], axis=1).mean())

header("Other poolings of the same token states (unit length at s = 2, the default start's form)")
for d in (1, 2):
    tokens = states(d)
    mean = unit(by_depth[d])
    peak = np.full((len(IDS), HIDDEN), -np.inf)
    np.maximum.at(peak, ROW_OF, tokens)
    peak = unit(centred(peak))
    parts = unit(np.hstack([unit(centred(pooled(np.maximum(sign * tokens, 0)))) for sign in (1, -1)]))
    row(f"layer {d}, mean (the default)", mean, (2,))
    row(f"layer {d}, max", peak, (2,))
    row(f"layer {d}, mean and max concatenated", unit(np.hstack([mean, peak])), (2,))
    row(f"layer {d}, means of the positive and negative parts concatenated", parts, (2,))

header("Lexical overlap and dense codes of it (WordPiece tokens, [CLS]/[SEP] dropped)")
counts = sp.csr_matrix((np.ones(len(TOKEN_IDS)), (ROW_OF, TOKEN_IDS)), shape=(len(IDS), len(VOCAB)))
tfidf = counts @ sp.diags(idf_plain)
tfidf = sp.diags(1 / np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(1))).ravel()) @ tfidf
tfidf = tfidf.tocsr()
row("TF-IDF, cosine (sparse)", tfidf.toarray(), (1, 3, 6))
for rank_k in (128, 384, 1000):
    _, _, basis = svds(tfidf[:POOL], k=rank_k)
    row(f"its best rank-{rank_k} linear code (LSA)", tfidf @ basis.T, (1, 3, 6))
row("a random Gaussian projection to 384", tfidf @ (rng.standard_normal((len(VOCAB), 384)) / np.sqrt(384)),
    (1, 3, 6))
# A hybrid: the default start's code (2 centred layers at length 2) next to the lexical one,
# so a score is 4 cosines of the dense codes plus a² cosines of the TF-IDF.
start = unit(by_depth[2]) * 2
for a in (1, 2, 3):
    row(f"the default start's code and TF-IDF x{a}, concatenated", np.hstack([start, tfidf.toarray() * a]))
