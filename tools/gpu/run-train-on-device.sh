#!/usr/bin/env bash
# Training on the GPU machine (docs/gpu.md, Training): copied to gpu-run/run-train.sh and run
# there as `bash gpu-run/run-train.sh`; gpu-run/ holds gpu_check.xz, airrep_model_tests.xz
# (airrep-model's unit tests, cuda build) and this script.
set -uo pipefail
cd "$(dirname "$0")"
mkdir -p "${OUT:-/tmp/out}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ -x gpu_check ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('gpu_check.xz'), open('gpu_check','wb'))" && chmod +x gpu_check; }
SP=$(python3 -c "import torch,os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
LIBDIRS=$(find "$SP/nvidia" "$SP/torch/lib" \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcurand.so*' -o -name 'libnvrtc.so*' -o -name 'libcudart.so*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# peak LABEL CMD...: runs CMD while polling nvidia-smi every 100 ms; prints the peak MiB used.
peak() {
  local label=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/smi.$$ &
  local poller=$!
  timeout "${LIMIT:-200}" "$@"; local rc=$?
  kill $poller; wait $poller 2>/dev/null
  echo "== $label: rc=$rc, peak GPU memory used $(sort -n /tmp/smi.$$ | tail -1) MiB (nvidia-smi, whole GPU)"
}
echo "idle GPU memory used: $(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits) MiB"
[ -x airrep_model_tests ] || { python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('airrep_model_tests.xz'), open('airrep_model_tests','wb'))" && chmod +x airrep_model_tests; }
# The golden training steps: airrep-model's test, whose body runs on the CPU and then the GPU.
peak "golden steps, cpu and cuda" env AIRREP_GOLDEN_DIR=../tests/golden AIRREP_SKIP_MINILM=1 \
  ./airrep_model_tests train_reproduces_golden_steps --nocapture --test-threads 1
./gpu_check make-model /tmp/gte-small ../tests/golden/tiny-airrep/tokenizer.json
for shape in ${TRAIN_SHAPES:-"256 32 64 32 3" "256 32 64 256 3" "1000 32 64 256 3"}; do
  peak "train-bench $shape" ./gpu_check train-bench cuda /tmp/gte-small $shape
done
exit 0
