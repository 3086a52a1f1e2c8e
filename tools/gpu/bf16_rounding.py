"""Which bf16 roundings cost the most: an f64 emulation of the mixed-precision forward.

    python3 bf16_rounding.py [GOLDEN_DIR] [MINILM_DIR]

Runs BERT + mean pooling + projector in float64 on the golden token ids
(tests/golden/embeddings.json) and rounds to bf16 (round to nearest even) only at the
points named by a set of flags, then prints the worst relative L2 error against the golden
embeddings for each set. Needs numpy only. The flags:

  W  the linear layers' weights              (bf16 in every variant that is a bf16 GEMM)
  X  the linear layers' inputs               (the GEMM's A operand)
  O  the linear layers' products             (a bf16 GEMM *output*, before bias/widening)
  H  q, k, v after their bias                (the attention products' operands)
  S  the scores q·kᵀ                         (bf16 output of that product)
  P  the softmax probabilities               (operand of p·v)
  C  the context p·v                         (bf16 output of that product)

Embeddings, biases, layer norms, GELU, the softmax's sums, pooling and the projector stay
float64 here (f32 in the Rust code). "WXOHSPC" is what `Precision::Bf16` computed before the
linear layers got f32 outputs (bert/mixed.rs); "WXHSPC" is what it computes now. The
emulation reproduces `bf16_layers_stay_close_to_golden` on the CPU to about 1%
(docs/gpu.md has the table).
"""

import json
import math
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../../../../tests/golden")
MINILM = sys.argv[2] if len(sys.argv) > 2 else None


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, v in header.items():
        if key == "__metadata__" or v["dtype"] not in ("F32", "BF16"):
            continue
        s, e = v["data_offsets"]
        chunk = raw[8 + n + s : 8 + n + e]
        if v["dtype"] == "F32":
            a = np.frombuffer(chunk, np.float32)
        else:
            a = (np.frombuffer(chunk, np.uint16).astype(np.uint32) << 16).view(np.float32)
        out[key if key.startswith(("bert.", "projector.")) else "bert." + key] = (
            a.reshape(v["shape"]).astype(np.float64)
        )
    return out


def bf16(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


_erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def forward(W, cfg, ids, flags):
    r = lambda flag, x: bf16(x) if flag in flags else x
    h, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d, s, p = h // nh, len(ids), "bert."
    x = (W[p + "embeddings.word_embeddings.weight"][ids]
         + W[p + "embeddings.position_embeddings.weight"][:s]
         + W[p + "embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, W[p + "embeddings.LayerNorm.weight"], W[p + "embeddings.LayerNorm.bias"], eps)

    def lin(name, inp):
        return r("O", r("X", inp) @ r("W", W[name + ".weight"]).T) + W[name + ".bias"]

    heads = lambda t: r("H", t).reshape(s, nh, d).transpose(1, 0, 2)
    for i in range(cfg["num_hidden_layers"]):
        q = f"{p}encoder.layer.{i}."
        Q = heads(lin(q + "attention.self.query", x) / math.sqrt(d))
        K = heads(lin(q + "attention.self.key", x))
        V = heads(lin(q + "attention.self.value", x))
        S = r("S", Q @ K.transpose(0, 2, 1))
        P = np.exp(S - S.max(-1, keepdims=True))
        P = r("P", P / P.sum(-1, keepdims=True))
        C = r("C", P @ V).transpose(1, 0, 2).reshape(s, h)
        a = layer_norm(lin(q + "attention.output.dense", C) + x,
                       W[q + "attention.output.LayerNorm.weight"], W[q + "attention.output.LayerNorm.bias"], eps)
        inner = lin(q + "intermediate.dense", a)
        inner = 0.5 * inner * (1 + _erf(inner / math.sqrt(2)))
        x = layer_norm(lin(q + "output.dense", inner) + a,
                       W[q + "output.LayerNorm.weight"], W[q + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)
    if "projector.weight" in W:
        return W["projector.weight"] @ pooled + W["projector.bias"]
    return pooled


def worst(model_dir, key, golden, flags):
    W = load_safetensors(os.path.join(model_dir, "model.safetensors"))
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    errs = []
    for ids, want in zip(golden["token_ids"], golden[key]):
        want = np.array(want)
        errs.append(np.linalg.norm(forward(W, cfg, ids, flags) - want) / np.linalg.norm(want))
    return max(errs)


def main():
    golden = json.load(open(os.path.join(GOLDEN, "embeddings.json")))
    models = [(os.path.join(GOLDEN, "tiny-airrep"), "tiny-airrep"),
              (os.path.join(GOLDEN, "tiny-airrep-bf16"), "tiny-airrep-bf16")]
    if MINILM:
        models.append((MINILM, "minilm-base"))
    variants = ["", "W", "WXOHSPC", "WXHSPC", "WXHPC", "WXOHPC", "WXOHSC"]
    print("flags      " + " ".join(f"{k:>17}" for _, k in models))
    for flags in variants:
        row = [worst(d, k, golden, set(flags)) for d, k in models]
        print(f"{flags or '(f64)':<10} " + " ".join(f"{e:>17.3e}" for e in row), flush=True)


if __name__ == "__main__":
    main()
