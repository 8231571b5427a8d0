#!/usr/bin/env bash
# One call on a lent GPU machine (see README "Performance"): the CUDA tests and the training benchmark,
# most important first, every figure written to $OUT as soon as it is measured (a cut-off run keeps
# what it had). Expects torch/torchvision there and the torchcam wheel in .whl/ (carried).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/chexnet-gpu}"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
# 1. no host sync in a train step; the mixed-precision fit
python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k "cuda and not compiled" 2>&1 | tail -8 | tee "$OUT/pytest_eager.txt"
# 2. eager figures, then compiled ones (minutes of compilation each)
python3 -m benchmarks.train_speed --size 224 --steps 64 \
  --configs 32 128:cl 256:cl 256 256:cl:compile 32:compile=reduce-overhead \
  --json "$OUT/train_speed.json" 2>"$OUT/train_speed.err" | tee "$OUT/train_speed.txt"
# 3. compiled training end to end (static shapes, ragged last batch)
python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k "compiled" 2>&1 | tail -8 | tee "$OUT/pytest_compiled.txt"
