"""GPU verification through the extension (docs/gpu.md, "Through the extension").

Run by run-sql-on-device.sh once a throwaway cluster with airrep is up; talks to it with
psql (PGHOST/PGPORT/PGUSER/PGDATABASE from the environment). Needs numpy; PyTorch for the
side-by-side figures (skipped, and said so, where it is missing).

    python3 sql_bench.py GOLDEN_DIR WORK_DIR [MINILM_DIR]

1. Parity through SQL: tests/golden/embeddings.json's 24 texts through airrep.encode, as
   one array (airrep.batch_size 8) and one text at a time, for tiny-airrep,
   tiny-airrep-bf16 (and MiniLM if given), with airrep.precision f32 and bf16. Bounds:
   1e-4 (f32) and 1e-2 (bf16).
2. Throughput through SQL: a GTE-small-shaped random BERT (12 layers, hidden 384, 12
   heads, intermediate 1536; written here with numpy, plain BERT layout) loaded with
   airrep.load_model; N_TEXTS (default 8192) texts of 90 to 172 tokens (each word one
   WordPiece token, so the token ids are known without a tokenizer), in a table;
   `SELECT count(*) FROM unnest(airrep.encode('gte', (SELECT array_agg(t ORDER BY ntok
   DESC) FROM bench)))` at airrep.batch_size 256, median of 3 after a warm-up, bf16 and
   f32; then PyTorch (torch_bench.load_model: transformers' BertModel, sdpa) on the same
   weights and token ids, same batches, in the same run; the ratio. Also `CALL
   airrep.embed(...)` (rows written back) once per precision.
3. A bad device (cuda:7) is an error, and the backend then encodes on the CPU and on
   cuda:0 again; the CUDA context is not created before the first GPU encode.
4. Training through SQL on airrep.device: the golden AdamW trace (train_steps.json,
   bound 1e-4), and seconds per step on the GTE-small-shaped model at TRAIN_SHAPE
   (default 256x32x64 on a GPU; SKIP_TRAIN=1 skips both).

Environment: DEVICE (default cuda; cpu runs everything on the CPU, for trying the script
on a machine without a GPU), N_TEXTS, BATCH (256), THREADS (airrep.threads, 16),
SKIP_TORCH=1, SKIP_TRAIN=1, TRAIN_SHAPE, SKIP_BAD_DEVICE=1 (for a cuda build tried against the link-time libcuda stub).
"""

import csv
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time

import numpy as np

DEVICE = os.environ.get("DEVICE", "cuda")
N_TEXTS = int(os.environ.get("N_TEXTS", "8192"))
BATCH = int(os.environ.get("BATCH", "256"))
THREADS = int(os.environ.get("THREADS", "16"))
RESULTS = {"device": DEVICE}


def psql(script, check=True):
    """Runs `script` in one session; returns stdout. -A -t: unaligned, tuples only."""
    r = subprocess.run(["psql", "-X", "-A", "-t", "-q", "-v", f"ON_ERROR_STOP={int(check)}", "-f", "-"],
                       input=script, text=True, capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"psql failed ({r.returncode}):\n{r.stderr}\n--- script:\n{script[:2000]}")
    return r.stdout if check else (r.stdout, r.stderr)


def rel_l2(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def parse_vec(text):
    return [float(x) for x in text.strip("{}").split(",")]


def copy_rows(table, path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)  # "" is text, not NULL
    os.chmod(path, 0o644)
    psql(f"\\copy {table} FROM '{path}' CSV")


def settings(precision, batch):
    return (f"SET airrep.device = '{DEVICE}'; SET airrep.precision = '{precision}';"
            f" SET airrep.batch_size = {batch}; SET airrep.threads = {THREADS};\n")


def parity(golden, models):
    print("== parity through SQL (worst relative L2 over the 24 golden texts)", flush=True)
    print(f"{'model':<18} {'precision':<9} {'batched':>10} {'single':>10} {'bound':>7}")
    ok = True
    for name, key in models:
        for precision, bound in (("f32", 1e-4), ("bf16", 1e-2)):
            out = psql(settings(precision, 8) + f"""
SELECT 'B', n, e::real[] FROM unnest(airrep.encode('{name}', (SELECT array_agg(t ORDER BY i) FROM golden)))
  WITH ORDINALITY AS u(e, n);
SELECT 'S', i + 1, airrep.encode('{name}', t)::real[] FROM golden ORDER BY i;""")
            got = {"B": {}, "S": {}}
            for line in out.splitlines():
                kind, n, vec = line.split("|", 2)
                got[kind][int(n) - 1] = parse_vec(vec)
            worst = {k: max(rel_l2(got[k][i], want) for i, want in enumerate(golden[key])) for k in got}
            passed = max(worst.values()) <= bound
            if precision == "bf16" and max(worst.values()) < 1e-5:
                # bf16 rounding must show: f32 figures mean airrep.precision was ignored
                passed = False
                print("  bf16 gave f32 figures: is airrep.precision in this build?")
            ok &= passed
            RESULTS.setdefault("parity", []).append(
                {"model": key, "precision": precision, "batched": worst["B"], "single": worst["S"], "bound": bound})
            print(f"{key:<18} {precision:<9} {worst['B']:>10.3e} {worst['S']:>10.3e} {bound:>7.0e}"
                  f"{'' if passed else '  FAIL'}", flush=True)
    return ok


def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_gte_small(out_dir, tokenizer_json):
    """A random BERT with GTE-small's shapes (weights N(0, 0.02), biases too, norms 1/0)."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522, "hidden_size": 384,
           "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536,
           "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
           "type_vocab_size": 2, "pad_token_id": 0}
    rng = np.random.default_rng(0)
    n = lambda *shape: rng.normal(0.0, 0.02, shape).astype(np.float32)
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    t = {"embeddings.word_embeddings.weight": n(cfg["vocab_size"], h),
         "embeddings.position_embeddings.weight": n(512, h),
         "embeddings.token_type_embeddings.weight": n(2, h),
         "embeddings.LayerNorm.weight": np.ones(h, np.float32),
         "embeddings.LayerNorm.bias": np.zeros(h, np.float32)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        for name, (o, k) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                             "attention.self.value": (h, h), "attention.output.dense": (h, h),
                             "intermediate.dense": (i, h), "output.dense": (h, i)}.items():
            t[p + name + ".weight"], t[p + name + ".bias"] = n(o, k), n(o)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + name + ".weight"], t[p + name + ".bias"] = np.ones(h, np.float32), np.zeros(h, np.float32)
    save_safetensors(os.path.join(out_dir, "model.safetensors"), t)
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"))
    with open(tokenizer_json) as src, open(os.path.join(out_dir, "tokenizer.json"), "w") as dst:
        dst.write(src.read())


def make_texts(tokenizer_json, n):
    """n texts of 90..172 tokens; every word is a whole-word WordPiece token (lower-case
    ASCII letters), so text j's ids are [CLS] + its words' ids + [SEP]."""
    vocab = json.load(open(tokenizer_json))["model"]["vocab"]
    words = sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and len(w) >= 3)
    rng = np.random.default_rng(1)
    texts, ids = [], []
    for _ in range(n):
        chosen = [words[j] for j in rng.integers(0, len(words), int(rng.integers(88, 171)))]
        texts.append(" ".join(chosen))
        ids.append([vocab["[CLS]"]] + [vocab[w] for w in chosen] + [vocab["[SEP]"]])
    return texts, ids


def timed(setup, statement, runs=3):
    """`setup`, then `statement` 1 + runs times, in one session; seconds of each timed run
    (the first is a warm-up: model load, kernels)."""
    out = psql(setup + "\\timing on\n" + statement * (runs + 1))
    ms = [float(x) for x in re.findall(r"Time: ([0-9.]+) ms", out)]
    assert len(ms) == runs + 1, out[-2000:]
    return [m / 1000 for m in ms[1:]]


def throughput(work, tokenizer_json):  # noqa: C901 (one linear recipe)
    gte = os.path.join(work, "gte-small")
    make_gte_small(gte, tokenizer_json)
    os.system(f"chmod -R a+rX {work}")
    psql(f"SELECT airrep.load_model('gte', '{gte}');")
    texts, ids = make_texts(tokenizer_json, N_TEXTS)
    mean_tokens = sum(map(len, ids)) / len(ids)
    psql("CREATE TABLE bench (i int PRIMARY KEY, ntok int, t text, v airrep_vector);")
    copy_rows("bench (i, ntok, t)", os.path.join(work, "bench.csv"),
              [(j, len(x), t) for j, (t, x) in enumerate(zip(texts, ids))])
    print(f"\n== throughput through SQL: {N_TEXTS} texts, mean {mean_tokens:.1f} tokens, batch {BATCH}, "
          f"device {DEVICE}", flush=True)
    encode_all = ("SELECT count(*) FROM unnest(airrep.encode('gte', "
                  "(SELECT array_agg(t ORDER BY ntok DESC, i) FROM bench)));\n")
    overhead = timed("", "SELECT count(*) FROM unnest((SELECT array_agg(t ORDER BY ntok DESC, i) FROM bench));\n")
    print(f"SQL without encoding (array_agg + unnest): {statistics.median(overhead) * 1000:.1f} ms", flush=True)
    sql_rates = {}
    for precision in ("bf16", "f32"):
        secs = timed(settings(precision, BATCH), encode_all)
        sql_rates[precision] = N_TEXTS / statistics.median(secs)
        t = time.perf_counter()
        psql(settings(precision, BATCH) + "UPDATE bench SET v = NULL;\n"
             f"CALL airrep.embed('bench', 't', 'v', 'gte', {BATCH});")
        embed_rate = N_TEXTS / (time.perf_counter() - t)
        print(f"SQL {precision}: airrep.encode(array) {sql_rates[precision]:.0f} texts/s "
              f"(runs {', '.join(f'{s:.3f}' for s in secs)} s); CALL airrep.embed {embed_rate:.0f} rows/s "
              f"(one run, unsorted rows, with the UPDATE)", flush=True)
        RESULTS.setdefault("sql", {})[precision] = {"encode_texts_per_s": sql_rates[precision], "runs_s": secs,
                                                     "embed_rows_per_s": embed_rate}
    # SQL f32 embeddings of the first 16 texts, for the agreement with PyTorch.
    first = [parse_vec(line) for line in psql(
        settings("f32", BATCH) + "SELECT airrep.encode('gte', t)::real[] FROM bench WHERE i < 16 ORDER BY i;"
    ).splitlines()]
    RESULTS["mean_tokens"], RESULTS["n_texts"], RESULTS["batch"] = mean_tokens, N_TEXTS, BATCH
    if os.environ.get("SKIP_TORCH") == "1":
        print("SKIP_TORCH=1: no PyTorch figures")
        return
    try:
        import torch
        import torch_bench
    except ImportError as err:
        print(f"no PyTorch here ({err}): no side-by-side figures")
        return
    if DEVICE != "cuda" or not torch.cuda.is_available():
        print("PyTorch side needs cuda: skipped")
        return
    order = sorted(range(len(ids)), key=lambda j: (-len(ids[j]), j))
    batches = [[ids[j] for j in order[k : k + BATCH]] for k in range(0, len(order), BATCH)]
    text_batches = [[texts[j] for j in order[k : k + BATCH]] for k in range(0, len(order), BATCH)]
    try:  # PyTorch end to end: Hugging Face's (Rust) tokenizer too, as the extension tokenises
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer_json)
        tok.no_truncation()
        tok.no_padding()
        assert [e.ids for e in tok.encode_batch(text_batches[0][:4])] == batches[0][:4]
    except Exception as err:  # missing, or ids that differ from ours
        print(f"no end-to-end PyTorch figure: tokenizers unusable here ({type(err).__name__}: {err})")
        tok = None
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    print(f"{'dtype':<6} {'SQL texts/s':>12} {'PyTorch fwd':>12} {'ratio':>6} {'PyTorch e2e':>12} {'ratio':>6}")

    def rate_of(run):
        run(0)  # warm-up
        rates = []
        for _ in range(3):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for k in range(len(batches)):
                run(k)
            torch.cuda.synchronize()
            rates.append(N_TEXTS / (time.perf_counter() - t))
        return statistics.median(rates)

    with torch.inference_mode():
        for precision, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
            model, fwd, kind = torch_bench.load_model(gte, dtype)
            rate = rate_of(lambda k: torch_bench.embed(model, fwd, batches[k]))
            e2e = float("nan")
            if tok is not None:
                e2e = rate_of(lambda k: torch_bench.embed(
                    model, fwd, [e.ids for e in tok.encode_batch(text_batches[k])]))
            if precision == "f32":
                ref = torch_bench.embed(model, fwd, [ids[j] for j in range(16)])
                agree = max(rel_l2(first[j], ref[j].double().numpy()) for j in range(16))
                RESULTS["sql_vs_torch_f32_first16"] = agree
            RESULTS.setdefault("torch", {})[precision] = {"forward_texts_per_s": rate, "end_to_end_texts_per_s": e2e,
                                                           "kind": kind}
            sql = sql_rates[precision]
            print(f"{precision:<6} {sql:>12.0f} {rate:>12.0f} {sql / rate:>6.2f} {e2e:>12.0f} {sql / e2e:>6.2f}",
                  flush=True)
            del model
            torch.cuda.empty_cache()
    print(f"PyTorch: {kind}; fwd = forward + f32 mean pooling + copy to the host from token ids; "
          f"e2e = the same from the texts (tokenizers.encode_batch). SQL: airrep.encode(text[]) from a table.")
    print(f"SQL (cuda, f32) vs PyTorch f32 embeddings, first 16 texts: worst relative L2 "
          f"{RESULTS['sql_vs_torch_f32_first16']:.3e}")


def training(golden_dir):
    """airrep.train on airrep.device: the golden AdamW trace (tiny-airrep, 4 steps), then
    seconds per step on the GTE-small-shaped model at TRAIN_SHAPE (targets x subsets x
    members; default 256x32x64 on a GPU, none on the CPU) from random losses."""
    print("\n== training through SQL (airrep.train follows airrep.device)", flush=True)
    g = json.load(open(os.path.join(golden_dir, "train_steps.json")))
    work = os.environ["SQL_BENCH_WORK"]
    psql("CREATE TABLE examples (id bigint, text text); CREATE TABLE targets (id bigint, text text);"
         " CREATE TABLE subsets (subset_id bigint, example_id bigint);"
         " CREATE TABLE losses (subset_id bigint, target_id bigint, loss double precision);")
    examples, members = [], []
    for s_, subset in enumerate(g["subsets"]):
        for text in subset:
            examples.append((len(examples) + 1, text))
            members.append((s_ + 1, len(examples)))
    copy_rows("examples", os.path.join(work, "t_examples.csv"), examples)
    copy_rows("subsets", os.path.join(work, "t_subsets.csv"), members)
    copy_rows("targets", os.path.join(work, "t_targets.csv"), [(t + 1, x) for t, x in enumerate(g["targets"])])
    copy_rows("losses", os.path.join(work, "t_losses.csv"),
              [(s_ + 1, t + 1, v) for s_, row in enumerate(g["subset_losses"]) for t, v in enumerate(row)])
    options = ('{"steps": 4, "lr": 0.001, "warmup_steps": 2, "weight_decay": 0.01, "targets_per_step": 4,'
               ' "subsets_per_step": 3, "max_members_per_subset": 1000, "t_min": 0.1, "t_max": 5.0,'
               ' "pooling": "attention", "train_layers": "all", "head_lr": 0.001, "holdout_fraction": 0}')
    out = psql(settings("auto", 32) + f"""
SELECT airrep.train('tiny_trained', 'tiny', 'examples', 'targets', 'subsets', 'losses', '{options}');
SELECT step, loss, grad_norm FROM airrep.training_log
  WHERE model_id = (SELECT id FROM airrep.models WHERE name = 'tiny_trained') ORDER BY step;""")
    rows = [line.split("|") for line in out.splitlines()[1:]]
    worst = 0.0
    for (step, loss, grad), want in zip(rows, g["trace"]):
        worst = max(worst, abs(float(loss) - want["loss"]) / abs(want["loss"]),
                    abs(float(grad) - want["grad_norm_before_clip"]) / abs(want["grad_norm_before_clip"]))
    ok = len(rows) == len(g["trace"]) and worst <= 1e-4
    RESULTS["train_golden_worst_relative"] = worst
    print(f"golden AdamW trace on {DEVICE}: {len(rows)} steps, worst relative error of loss and grad norm "
          f"{worst:.2e} (bound 1e-4){'' if ok else '  FAIL'}", flush=True)
    shape = os.environ.get("TRAIN_SHAPE", "256x32x64" if DEVICE == "cuda" else "")
    if not shape:
        return ok
    n_targets, n_subsets, n_members = map(int, shape.split("x"))
    steps = 3
    psql(f"""CREATE TABLE g_examples AS SELECT i::bigint AS id, t AS text FROM bench WHERE i < {n_subsets * n_members};
CREATE TABLE g_targets AS SELECT i::bigint AS id, t AS text FROM bench
  WHERE i >= {n_subsets * n_members} AND i < {n_subsets * n_members + n_targets};
CREATE TABLE g_subsets AS SELECT id / {n_members} AS subset_id, id AS example_id FROM g_examples;
SELECT setseed(0.5);
CREATE TABLE g_losses AS SELECT s::bigint AS subset_id, t.id AS target_id, random() AS loss
  FROM generate_series(0, {n_subsets - 1}) s, g_targets t;""")
    opts = (f'{{"steps": {steps}, "targets_per_step": {n_targets}, "subsets_per_step": {n_subsets},'
            f' "max_members_per_subset": {n_members}}}')
    t = time.perf_counter()
    out = psql(settings("auto", 32) + f"""
SELECT airrep.train('gte_trained', 'gte', 'g_examples', 'g_targets', 'g_subsets', 'g_losses', '{opts}');
SELECT seconds FROM airrep.training_log
  WHERE model_id = (SELECT id FROM airrep.models WHERE name = 'gte_trained') ORDER BY step;""")
    total = time.perf_counter() - t
    secs = [float(x) for x in out.splitlines()[1:]]
    per_step = statistics.median(secs[1:]) if len(secs) > 1 else float("nan")
    RESULTS["train_gte"] = {"shape": shape, "seconds": secs, "median_after_first": per_step, "call_s": total}
    print(f"GTE-small-shaped, {shape} (targets x subsets x members), {steps} steps: "
          f"{', '.join(f'{x:.2f}' for x in secs)} s per step (median after the first {per_step:.2f} s); "
          f"the whole airrep.train call {total:.1f} s (base model read and trained model written included)",
          flush=True)
    return ok


def gpu_processes():
    r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                       capture_output=True, text=True)
    return set(r.stdout.split()) if r.returncode == 0 else None


def device_errors():
    print("\n== a bad device, then the CPU and the GPU again, in one backend", flush=True)
    script = f"""SELECT pg_backend_pid();
SELECT airrep.format('lazy', 'context');
\\! nvidia-smi --query-compute-apps=pid --format=csv,noheader | tr '\\n' ' ' | sed 's/^/GPU processes before any encode: /'; echo
SET airrep.device = 'cuda:7';
SELECT airrep_dims(airrep.encode('tiny', 'x'));
RESET airrep.device;
SELECT 'cpu after the error: dims ' || airrep_dims(airrep.encode('tiny', 'x'));
SET airrep.device = '{DEVICE}';
SELECT '{DEVICE} after the error: dims ' || airrep_dims(airrep.encode('tiny', 'x'));
\\! nvidia-smi --query-compute-apps=pid --format=csv,noheader | tr '\\n' ' ' | sed 's/^/GPU processes after a GPU encode: /'; echo
"""
    out, err = psql(script, check=False)
    print(out.strip())
    print("stderr:", err.strip())
    RESULTS["device_errors"] = {"stdout": out, "stderr": err}


def main():
    golden_dir, work = sys.argv[1], sys.argv[2]
    minilm = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    golden = json.load(open(os.path.join(golden_dir, "embeddings.json")))
    psql("CREATE EXTENSION IF NOT EXISTS airrep; CREATE TABLE golden (i int PRIMARY KEY, t text);")
    copy_rows("golden", os.path.join(work, "golden.csv"), list(enumerate(golden["texts"])))
    models = [("tiny", "tiny-airrep"), ("tinybf16", "tiny-airrep-bf16")]
    dirs = {"tiny": os.path.join(golden_dir, "tiny-airrep"), "tinybf16": os.path.join(golden_dir, "tiny-airrep-bf16")}
    if minilm:
        models.append(("minilm", "minilm-base"))
        dirs["minilm"] = minilm
    for name, src in dirs.items():
        dst = os.path.join(work, name)
        os.makedirs(dst, exist_ok=True)
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
                b.write(a.read())
        os.system(f"chmod -R a+rX {work}")
        psql(f"SELECT airrep.load_model('{name}', '{dst}');")
    ok = parity(golden, models)
    if os.environ.get("SKIP_BAD_DEVICE") != "1":
        device_errors()
    throughput(work, os.path.join(golden_dir, "tiny-airrep", "tokenizer.json"))
    if os.environ.get("SKIP_TRAIN") != "1":
        os.environ["SQL_BENCH_WORK"] = work
        ok &= training(golden_dir)
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        json.dump(RESULTS, open(os.path.join(out, "sql_results.json"), "w"), indent=1)
    print("\nparity:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
