"""predict's engines side by side, in one run: torch fp32, torch in the model's recorded precision and
layout (bf16 + channels_last for the default model), ONNX Runtime fp32 (all graph optimisations, and
basic only), optionally ONNX Runtime INT8 (dynamic quantisation, opt-in), and what ``--engine auto``
picks; at batch 1 and 16 (and 4, 8: where the rule switches), median of several repeats; ratios to
today's torch fp32.

    python -m benchmarks.predict_speed [--model models/chexnet_model.pth] [--repeats 5] [--int8]
                                       [--consistency] [--out benchmarks/results/NAME.json]

``--consistency`` also measures, on the demo's test split (the prepared cache), how far each engine's
probabilities are from the recorded-precision outputs the thresholds were chosen on, how many threshold
decisions flip, and each engine's test AUROC (INT8's too with ``--int8``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chexnet.core.io import sha256_of
from chexnet.deploy.engines import OnnxEngine, TorchEngine, auto_choice, native_bf16, timed_choice
from chexnet.deploy.export import export_onnx
from chexnet.engine import inference
from chexnet.model.file import load_model
from chexnet.pipeline import paths

BATCHES = (1, 4, 8, 16)


def _images_per_second(engine, batch: int, size: int, repeats: int, seconds: float = 2.0) -> float:
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, size, size)).astype(np.uint8)
    engine.probabilities(pixels)  # warm-up (first-call allocations, oneDNN kernel choice)
    rates = []
    for _ in range(repeats):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / repeats or count == 0:
            engine.probabilities(pixels)
            count += batch
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def _onnx(path: Path, info, level: str, digest: str, threads: int = 0):
    import onnxruntime as ort

    engine = OnnxEngine(path, info, torch.device("cpu"), threads, model_sha256=digest)
    if level == "basic":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        engine.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return engine


def _int8(path: Path, work: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = work / "model.int8.onnx"
    quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8)
    return target


def consistency(engines: dict, model_info) -> dict:
    """On the prepared test split: |Δp| to the recorded-precision outputs, decision flips, test AUROC."""
    import pandas as pd

    from chexnet.data import cache
    from chexnet.evaluation.classification import mean_auroc, per_class_auroc

    split = pd.read_parquet(paths.SPLIT_FILE)
    test = split[split["split"] == "test"]
    images = cache.load_images(paths.PREPARED_DIR)
    names = list(model_info.labels.names)
    truth = cache.label_matrix(test, names)
    pixels = np.stack([np.asarray(images[r]) for r in test["row"]])
    thresholds = json.loads(paths.THRESHOLDS_FILE.read_text())["thresholds"]
    cut = np.array([thresholds[n] for n in names])
    scores = {name: np.concatenate([e.probabilities(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])
              for name, e in engines.items()}  # fmt: skip
    reference = scores["torch recorded"]
    out = {"images": len(pixels), "decisions": int(reference.size)}
    for name, p in scores.items():
        out[name] = {
            "max_abs_diff_to_recorded": float(np.abs(p - reference).max()),
            "decisions_flipped": int(((p >= cut) != (reference >= cut)).sum()),
            "test_mean_auroc": mean_auroc(per_class_auroc(truth, p, names)),
        }
    return out


# long: one benchmark run is one table: every engine at every batch size, then the ratios, then the
# optional consistency pass; split up, the engines would be built twice.
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=paths.MODEL_FILE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per set-up and batch")
    parser.add_argument("--int8", action="store_true", help="also ONNX Runtime INT8 (dynamic quantisation)")
    parser.add_argument(
        "--consistency", action="store_true", help="decision flips and AUROC on the test split"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model, info = load_model(args.model)
    cpu = torch.device("cpu")
    recorded = inference.Precision.recorded(info.run_as, cpu)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        onnx_path = work / "model.onnx"
        export_onnx(args.model, onnx_path)
        digest = sha256_of(args.model)  # the export records it; OnnxEngine checks it
        engines = {
            "torch fp32": TorchEngine(model.to(cpu).eval(), cpu, inference.FP32),
            "torch recorded": TorchEngine(
                model.to(cpu, memory_format=recorded.memory_format).eval(), cpu, recorded
            ),
            "onnx fp32": _onnx(onnx_path, info, "all", digest),
            "onnx fp32 basic opt": _onnx(onnx_path, info, "basic", digest),
        }
        if args.int8:
            engines["onnx int8"] = _onnx(_int8(onnx_path, work), info, "all", digest)
        size = info.image_size
        table = {name: {b: _images_per_second(e, b, size, args.repeats, args.seconds) for b in BATCHES}
                 for name, e in engines.items()}  # fmt: skip
        rule = {b: auto_choice(cpu, b, info) for b in BATCHES}
        pair = {"torch": engines["torch recorded"], "onnx": engines["onnx fp32"]}
        choice = {b: timed_choice(pair, info, b) if r == "time both" else r for b, r in rule.items()}
        table["auto"] = {
            b: table["torch recorded" if choice[b] == "torch" else "onnx fp32"][b] for b in BATCHES
        }
        report = {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cores": len(os.sched_getaffinity(0)),
                "native_bf16": native_bf16(),
                "torch": torch.__version__,
            },
            "model": {
                "file": str(args.model),
                "architecture": info.architecture,
                "image_size": size,
                "recorded": recorded.run_as().__dict__,
            },
            "images_per_second": {
                n: {str(b): round(v, 1) for b, v in row.items()} for n, row in table.items()
            },
            "ratio_to_torch_fp32": {
                n: {str(b): round(v / table["torch fp32"][b], 2) for b, v in row.items()}
                for n, row in table.items()
            },
            "auto_rule": {str(b): r for b, r in rule.items()},
            "auto_picks": {str(b): c for b, c in choice.items()},
            "auto_vs_best": {
                str(b): round(table["auto"][b] / max(r[b] for n, r in table.items() if n != "auto"), 2)
                for b in BATCHES
            },
        }
        if args.consistency:
            report["consistency_on_test_split"] = consistency(engines, info)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("batch " + "  ".join(f"{b:>7}" for b in BATCHES), file=sys.stderr)
    for name, row in report["ratio_to_torch_fp32"].items():
        print(f"{name:>20} " + "  ".join(f"{row[str(b)]:>6}x" for b in BATCHES), file=sys.stderr)


if __name__ == "__main__":
    main()
