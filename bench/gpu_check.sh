#!/usr/bin/env bash
# The GPU checks, in one go (run from the repository root on a CUDA machine with the project
# importable and MATH_DATA / ALFWORLD_DATA set): the test suite, the bf16 weight-update check,
# and a short end-to-end grid on the tiny models (SmolLM2 is not needed).
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
$PY -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$OUT/pytest.log" | tail -25
$PY bench/bf16_updates.py 2>&1 | grep -E "^(device|run|trainer|naive)" | tee "$OUT/bf16.log"
INTERLAT_RESULTS="$OUT/results" INTERLAT_CACHE="$OUT/cache" $PY -m interlat_bench.harness.entry run \
  -m latent,text,no_comm,text_zeroshot -t math --sender tiny-llama --receiver tiny-qwen --limit 3 \
  2>&1 | grep -v -i "warning\|forward_call" | tee "$OUT/grid.log" | tail -30
