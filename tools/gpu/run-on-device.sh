#!/usr/bin/env bash
# Runs on the GPU machine from the repository root: bash gpu-run/run.sh (docs/gpu.md).
# gpu-run/ holds gpu_check.xz, airrep_model_tests.xz (airrep-model's unit tests, cuda build),
# torch_bench.py, this script and minilm/ (pruned, gzipped).
set -uo pipefail
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ -x gpu_check ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('gpu_check.xz'), open('gpu_check','wb'))" && chmod +x gpu_check; }
SP=$(python3 -c "import torch,os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
LIBDIRS=$(find "$SP/nvidia" "$SP/torch/lib" \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' -o -name 'libcudart.so*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd ./gpu_check | grep -E "not found|libcuda|cublas|curand|nvrtc|cudart"
[ -f minilm/model.safetensors ] || gunzip -k minilm/model.safetensors.gz
# Golden parity: airrep-model's golden tests, whose bodies run on the CPU and then the GPU.
[ -x airrep_model_tests ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('airrep_model_tests.xz'), open('airrep_model_tests','wb'))" && chmod +x airrep_model_tests; }
echo "== parity"; time AIRREP_GOLDEN_DIR=../tests/golden AIRREP_MINILM_DIR=minilm ./airrep_model_tests golden --nocapture --test-threads 1; echo "parity rc=$?"
echo "== bench model"; ./gpu_check make-model /tmp/gte-small minilm/tokenizer.json
echo "== ours"; time ./gpu_check bench cuda /tmp/gte-small ${N_TEXTS:-8192} 256 /tmp/bench; echo "bench rc=$?"
echo "== pytorch"; time python3 torch_bench.py ../tests/golden minilm /tmp/gte-small /tmp/bench; echo "torch rc=$?"
mkdir -p "$OUT" && cp /tmp/bench/ours.json "$OUT/" 2>/dev/null
echo "== op profile"; ./gpu_check op-profile cuda
echo "== train proxy"; time ./gpu_check train-proxy cuda /tmp/gte-small ${TRAIN_SHAPE:-64 8 64}; echo "train rc=$?"
exit 0
