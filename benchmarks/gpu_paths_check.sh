#!/usr/bin/env bash
# One short call on a lent GPU machine: the CUDA tests (the GPU path after the CPU defaults of
# train.amp/channels_last/memory_efficient: auto), a quick eager training-speed figure at the seed's
# batch and at 256, and the CPU levers on that machine's CPU at 2 threads. Figures go to $OUT as soon as
# they are measured. Needs torch/torchvision there; nothing here imports torchcam, dvclive or pydicom.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/chexnet-gpu}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available()); print(open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0])" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k "cuda" 2>&1 | tail -12 | tee "$OUT/pytest_cuda.txt"
python3 -m benchmarks.train_speed --size 224 --steps 32 --pngs 64 --skip-seed-style --configs 32 256:cl \
  --json "$OUT/train_speed.json" 2>"$OUT/train_speed.err" | tee "$OUT/train_speed.txt"
CUDA_VISIBLE_DEVICES= python3 -m benchmarks.cpu_levers --threads 2 --setups fp32 bf16+cl+memeff \
  --json "$OUT/cpu_levers.json" 2>&1 | tail -4 | tee "$OUT/cpu_levers.txt"
