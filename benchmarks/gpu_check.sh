#!/usr/bin/env bash
# One call on a lent GPU machine (see README "Performance"): CUDA tests, then the training benchmark.
# Expects torch/torchvision there and the torchcam wheel in .whl/ (carried); writes figures to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/chexnet-gpu}"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_training.py tests/test_model.py tests/test_cam.py tests/test_data.py 2>&1 | tail -5 | tee "$OUT/pytest.txt"
python3 benchmarks/train_speed.py --size 224 --batch-sizes 32 128 --compile --json "$OUT/train_speed.json" 2>"$OUT/train_speed.err" | tee "$OUT/train_speed.txt"
