"""CPU training levers, side by side in one run: speed and peak memory of one DenseNet121 training step.

Each set-up runs in its own process (peak RSS is a per-process figure), on random images and labels,
with the pipeline's own step (``training.train_step``: autocast, masked BCE-with-logits, Adam). Set-ups
are ``+``-joined flags: ``fp32`` or ``bf16`` (autocast dtype), ``cl`` (channels_last), ``memeff``
(DenseNet's ``memory_efficient``: checkpointed dense layers), ``compile`` (``torch.compile``, inductor;
its compile time is reported apart from the steady-state speed).

    python -m benchmarks.cpu_levers                               # the default set-ups, 224 px, batch 32
    python -m benchmarks.cpu_levers --setups bf16+cl bf16+cl+compile --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SETUPS = ["fp32", "fp32+cl", "bf16", "bf16+cl", "fp32+memeff", "bf16+memeff", "bf16+cl+memeff"]


def measure(setup: str, size: int, batch: int, steps: int, threads: int) -> dict:
    """Time ``steps`` training steps after one warm-up step (two for ``compile``) in this process."""
    import torch

    from chexnet.engine import training
    from chexnet.engine.inference import SINGLE
    from chexnet.model.network import CheXNet

    flags = set(setup.split("+"))
    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    options = training.TrainOptions(
        amp="bf16" if "bf16" in flags else "off",
        channels_last="cl" in flags,
        memory_efficient="memeff" in flags,
        compile="compile" in flags,
    )
    labels = (torch.rand(batch, 14) < 0.2).float()
    run = training.build_run(CheXNet(14), labels, options, SINGLE)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=run.precision.memory_format)

    def step() -> torch.Tensor:
        return training.train_step(run.net, x, labels, run.criterion, run.optimizer, run.scaler, run.dtype)

    result: dict = {"setup": setup}
    if "compile" in flags:
        started = time.perf_counter()
        step()
        result["compile_seconds"] = round(time.perf_counter() - started, 1)
    step()  # warm-up
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - started)
    result["images_per_second"] = round(batch / statistics.median(times), 2)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setups", nargs="+", default=DEFAULT_SETUPS)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one set-up in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size, args.batch, args.steps, args.threads)))
        return
    import torch

    from chexnet.engine.inference import cpu_has_native_bf16

    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(__import__("os").sched_getaffinity(0)),
        "torch": torch.__version__,
        "native_bf16": cpu_has_native_bf16(),
        "size": args.size,
        "batch": args.batch,
    }
    print(json.dumps(machine), flush=True)
    results = []
    for setup in args.setups:
        sizes = ["--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps)]
        command = [
            sys.executable,
            "-m",
            "benchmarks.cpu_levers",
            "--one",
            setup,
            *sizes,
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results.append({"setup": setup, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
