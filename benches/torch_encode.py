"""PyTorch's side of benches/encode.sh: MiniLM-L6 texts/s on the CPU, f32 and bf16.

    python torch_encode.py TEXTS.json MODEL_DIR THREADS BATCH...

Same texts (written by the Rust bench), same work as airrep.encode: tokenize (truncate to
512), BertModel forward, mean pooling over real tokens in f32. bf16 is the model cast to
bf16 (oneDNN runs its products on AMX where the CPU has it). Best of 3 after a warm-up;
one line per precision and batch size: `torch <precision> <batch> <texts/s>`.
"""

import json
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import BertModel

ROUNDS = 3


def encode(model, tokenizer, texts, batch_size):
    for start in range(0, len(texts), batch_size):
        batch = tokenizer.encode_batch(texts[start : start + batch_size])
        ids = torch.tensor([e.ids for e in batch])
        mask = torch.tensor([e.attention_mask for e in batch])
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).float()
        (hidden * weights).sum(1) / weights.sum(1)


def main():
    texts_path, model_dir, threads, *batches = sys.argv[1:]
    texts = json.load(open(texts_path))
    torch.set_num_threads(int(threads))
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.enable_truncation(512)
    tokenizer.enable_padding()
    f32 = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    bf16 = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval().to(torch.bfloat16)
    for precision, model in (("f32", f32), ("bf16", bf16)):
        for batch_size in map(int, batches):
            n = 64 if batch_size == 1 else len(texts)
            best = 0.0
            with torch.inference_mode():
                encode(model, tokenizer, texts[:batch_size], batch_size)  # warm-up
                for _ in range(ROUNDS):
                    start = time.perf_counter()
                    encode(model, tokenizer, texts[:n], batch_size)
                    best = max(best, n / (time.perf_counter() - start))
            print(f"torch {precision} {batch_size} {best:.1f}", flush=True)


if __name__ == "__main__":
    main()
