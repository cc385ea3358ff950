#!/usr/bin/env bash
# Paper-scale time and memory in one device call (at most 8 minutes on one H100 or H200):
# bench/paper_scale.py at the Qwen2.5-7B shape in bf16, the receiver's training step at the
# Qwen2.5-0.5B shape and tried at 7B. Run from the repository root; what it needs beyond torch
# and transformers travels in .gpu/ (made here by bench/gpu_carry.sh, at most 64 MiB):
#   .gpu/wheels/  pyarrow (collections are Parquet), for the device's Python
#   .gpu/models/  SmolLM2's tokenizer (a shape model's tokenizer; 3 MB)
# The report lands in $OUT/paper_scale.json (and on stdout), the device's per-token costs in
# $OUT/cache/costs/ (for `interlat-bench run ... --estimate --costs FILE` on any machine).
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/paper-scale}
mkdir -p "$OUT"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if ! $PY -c "import pyarrow" 2>/dev/null && [ -d .gpu/wheels ]; then
  $PY -m pip install -q --no-index --find-links .gpu/wheels pyarrow
fi
# The package as it is here, importable without installing it (the repository root is the package).
mkdir -p /tmp/interlat-pkg && ln -sfn "$PWD" /tmp/interlat-pkg/interlat_bench
export PYTHONPATH="/tmp/interlat-pkg${PYTHONPATH:+:$PYTHONPATH}"
export INTERLAT_MODELS="${INTERLAT_MODELS:-$PWD/.gpu/models}" INTERLAT_CACHE="$OUT/cache"
missing=$($PY - <<'PY'
import importlib
need = ["torch", "transformers", "tokenizers", "safetensors", "pyarrow", "numpy", "jinja2"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then echo "missing on this machine: $missing (carry their wheels in .gpu/wheels)"; exit 2; fi
# ARGS replaces the paper-scale arguments (a smoke test elsewhere: ARGS="--plan-tokens 4 ...").
ARGS=${ARGS:---shape shape:qwen2.5-7b --dtype bfloat16 --train-shape shape:qwen2.5-0.5b --also-train shape:qwen2.5-7b}
# shellcheck disable=SC2086
timeout 470 $PY bench/paper_scale.py $ARGS --out "$OUT/paper_scale.json"
