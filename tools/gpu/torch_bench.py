"""PyTorch side of gpu_check (docs/gpu.md): the same model, token ids and batches.

    python3 torch_bench.py GOLDEN_DIR MINILM_DIR BENCH_MODEL_DIR BENCH_OUT_DIR

1. Reference parity: PyTorch's own error against tests/golden/embeddings.json for
   MiniLM (mean pooled) in f32 and bf16, from the golden token ids: what bf16 costs in
   PyTorch, next to our figures.
2. Throughput on BENCH_MODEL_DIR (gpu_check make-model) with the token ids gpu_check
   bench wrote (BENCH_OUT_DIR/ids.json), sorted longest first and cut into batches as
   our encoder does; forward + mean pooling (f32) + copy back to the host, timed with
   the host waiting for the results, median of 3 runs after a warm-up. Prints ours next
   to PyTorch as a ratio, and the f32 agreement of the two on the first texts.

Uses transformers' BertModel (sdpa attention) when installed, else an equivalent
minimal BERT written here on torch.nn.functional.
"""

import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DEV = "cuda"


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
    out = {}
    for key, v in header.items():
        if key == "__metadata__":
            continue
        s, e = v["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + s : base + e]), dtype=dtypes[v["dtype"]])
        out[key] = t.reshape(v["shape"])
    return out


class MiniBert(torch.nn.Module):
    """Post-norm BERT encoder, exact GELU, additive mask, sdpa attention."""

    def __init__(self, cfg, sd):
        super().__init__()
        sd = {k[len("bert.") :] if k.startswith("bert.") else k: v for k, v in sd.items()}
        self.p = torch.nn.ParameterDict(
            {k.replace(".", "__"): torch.nn.Parameter(v.float(), requires_grad=False) for k, v in sd.items()
             if k.startswith(("embeddings.", "encoder.")) and "position_ids" not in k}
        )
        self.cfg = cfg

    def w(self, name):
        return self.p[name.replace(".", "__")]

    def lin(self, x, name):
        return F.linear(x, self.w(name + ".weight"), self.w(name + ".bias"))

    def ln(self, x, name):
        return F.layer_norm(x, x.shape[-1:], self.w(name + ".weight"), self.w(name + ".bias"), self.cfg["layer_norm_eps"])

    def forward(self, input_ids, attention_mask):
        b, s = input_ids.shape
        h, nh = self.cfg["hidden_size"], self.cfg["num_attention_heads"]
        x = (self.w("embeddings.word_embeddings.weight")[input_ids]
             + self.w("embeddings.position_embeddings.weight")[:s]
             + self.w("embeddings.token_type_embeddings.weight")[0])
        x = self.ln(x, "embeddings.LayerNorm")
        bias = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min)
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            split = lambda t: t.view(b, s, nh, h // nh).transpose(1, 2)
            q, k, v = (split(self.lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(b, s, h)
            x = self.ln(self.lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            inner = F.gelu(self.lin(x, f"{p}.intermediate.dense"))
            x = self.ln(self.lin(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        return x


def load_model(model_dir, dtype):
    cfg = json.load(open(f"{model_dir}/config.json"))
    try:
        from transformers import BertConfig, BertModel

        hf_cfg = dict(cfg)
        hf_cfg["model_type"] = "bert"
        config = BertConfig(**{k: v for k, v in hf_cfg.items() if k != "model_type"},
                            attn_implementation="sdpa")
        model = BertModel(config, add_pooling_layer=False)
        sd = load_safetensors(f"{model_dir}/model.safetensors")
        sd = {k[len("bert.") :] if k.startswith("bert.") else k: v.float() for k, v in sd.items()
              if not k.startswith(("projector.", "pooler.")) and "position_ids" not in k}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and all("position_ids" in m or "token_type_ids" in m for m in missing), (missing, unexpected)
        kind = "transformers.BertModel(sdpa)"
        fwd = lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state
    except Exception as err:  # not installed, or an API that moved
        print(f"transformers unavailable ({type(err).__name__}: {err}); using MiniBert")
        model = MiniBert(cfg, load_safetensors(f"{model_dir}/model.safetensors"))
        kind = "MiniBert(sdpa; transformers not installed)"
        fwd = lambda m, ids, mask: m(ids, mask)
    model = model.to(DEV, dtype=dtype).eval()
    return model, fwd, kind


def embed(model, fwd, batch_ids, pad=0):
    """Pads on the right, runs the encoder, mean-pools in f32, returns host f32."""
    seq = max(len(x) for x in batch_ids)
    ids = torch.tensor([x + [pad] * (seq - len(x)) for x in batch_ids], dtype=torch.long)
    mask = torch.tensor([[1] * len(x) + [0] * (seq - len(x)) for x in batch_ids], dtype=torch.long)
    ids, mask = ids.to(DEV, non_blocking=True), mask.to(DEV, non_blocking=True)
    hidden = fwd(model, ids, mask).float()
    m = mask.unsqueeze(2).float()
    return ((hidden * m).sum(1) / m.sum(1)).cpu()


def rel_l2(got, want):
    want = torch.tensor(want, dtype=torch.float64)
    got = torch.as_tensor(got, dtype=torch.float64)
    return float((got - want).norm() / want.norm())


@torch.inference_mode()
def main():
    golden_dir, minilm_dir, model_dir, out_dir = sys.argv[1:5]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    # 1. PyTorch's own parity on MiniLM.
    golden = json.load(open(f"{golden_dir}/embeddings.json"))
    for dtype in (torch.float32, torch.bfloat16):
        model, fwd, kind = load_model(minilm_dir, dtype)
        worst = max(rel_l2(embed(model, fwd, [ids])[0], want)
                    for ids, want in zip(golden["token_ids"], golden["minilm-base"]))
        print(f"pytorch parity minilm-base {str(dtype)[6:]:>8}: worst relative L2 {worst:.3e} ({kind})")
        del model
    # 2. Throughput.
    all_ids = json.load(open(f"{out_dir}/ids.json"))
    ours = json.load(open(f"{out_dir}/ours.json"))
    batch = ours["batch"]
    order = sorted(range(len(all_ids)), key=lambda i: -len(all_ids[i]))
    batches = [[all_ids[i] for i in order[k : k + batch]] for k in range(0, len(order), batch)]
    n = len(all_ids)
    rows = []
    for name, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        model, fwd, kind = load_model(model_dir, dtype)
        embed(model, fwd, batches[0])  # warm-up
        rates = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for b in batches:
                embed(model, fwd, b)
            torch.cuda.synchronize()
            rates.append(n / (time.perf_counter() - t))
        torch_rate = statistics.median(rates)
        if name == "f32":
            first = embed(model, fwd, [all_ids[i] for i in range(16)])
            agree = max(rel_l2(first[i], ours["f32"]["first16"][i]) for i in range(16))
            print(f"ours vs pytorch f32 embeddings, first 16 texts: worst relative L2 {agree:.3e}")
        o = ours[name]
        rows.append((name, torch_rate, o["forward_texts_per_s"], o["end_to_end_texts_per_s"]))
        del model
        torch.cuda.empty_cache()
    print(f"\nthroughput, {n} texts of mean {ours['mean_tokens']:.1f} tokens, batch {batch} ({kind})")
    print(f"{'dtype':<6} {'pytorch':>10} {'ours fwd':>10} {'ratio':>6} {'ours e2e':>10} {'ratio':>6}")
    for name, t, f, e in rows:
        print(f"{name:<6} {t:>10.0f} {f:>10.0f} {f / t:>6.2f} {e:>10.0f} {e / t:>6.2f}")


if __name__ == "__main__":
    main()
