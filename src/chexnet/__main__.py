"""``chexnet`` (or ``python -m chexnet``): use a trained model outside the pipeline.

chexnet predict IMAGE|FOLDER ... [--json | --csv] [--heatmaps DIR] [--model PATH]
chexnet explain IMAGE ... [--finding Mass] [--out DIR] [--model PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from chexnet import io, paths
from chexnet.cli import setup_logging
from chexnet.errors import ChexnetError
from chexnet.labels import LABELS

log = logging.getLogger("chexnet")


def _load(args: argparse.Namespace):
    """The model (ours or the seed's format, weights_only) and the thresholds chosen by evaluate."""
    from chexnet.model import CheXNet, load_checkpoint, resolve_device

    device = resolve_device(args.device)
    model = load_checkpoint(CheXNet(), args.model).to(device).eval()
    if args.thresholds.is_file():
        return model, device, io.read_json(args.thresholds)["thresholds"], str(args.thresholds)
    log.warning(
        "no thresholds file %s (run the evaluate stage): findings are called at probability ≥ 0.5",
        args.thresholds,
    )
    return model, device, dict.fromkeys(LABELS, 0.5), "default 0.5"


def _predict(args: argparse.Namespace) -> int:
    from chexnet.predict import collect_inputs, predict_files

    model, device, thresholds, source = _load(args)
    files = collect_inputs(args.inputs)
    if not files:
        log.error("no PNG, JPEG or DICOM files in %s", ", ".join(map(str, args.inputs)))
        return 1
    results = predict_files(
        model,
        files,
        thresholds=thresholds,
        image_size=args.image_size,
        device=device,
        batch_size=args.batch_size,
        heatmaps=args.heatmaps,
        target_layer=args.layer,
    )
    if args.json:
        document = {
            "model": str(args.model),
            "thresholds": {"source": source, "values": thresholds},
            "images": [vars(r) for r in results],
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "error", "findings", *LABELS])
        for r in results:
            row = (
                [f"{r.probabilities[label]:.6f}" for label in LABELS]
                if r.error is None
                else [""] * len(LABELS)
            )
            writer.writerow([r.file, r.error or "", "|".join(r.findings), *row])
    else:
        print("\t".join(["file", "findings", *LABELS]))
        for r in results:
            if r.error:
                print(f"{r.file}\tERROR: {r.error}")
                continue
            found = ", ".join(r.findings) or "No Finding"
            print("\t".join([r.file, found, *(f"{r.probabilities[label]:.3f}" for label in LABELS)]))
    return 1 if any(r.error for r in results) else 0


def _explain(args: argparse.Namespace) -> int:
    from chexnet.explain import explain_file

    model, device, thresholds, _ = _load(args)
    failed = 0
    for image in args.images:
        try:
            rows = explain_file(
                image,
                model,
                image_size=args.image_size,
                target_layer=args.layer,
                device=device,
                out_dir=args.out,
                thresholds=thresholds,
                findings=args.finding,
            )
        except (OSError, ValueError) as error:
            log.error("%s: cannot be explained: %s", image, error)
            failed += 1
            continue
        for row in rows:
            print(f"{image}\t{row['finding']}\t{row['probability']:.4f}\t{row['overlay']}")
    return 1 if failed else 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=paths.MODEL_FILE, help="state_dict (ours or the seed's)"
    )
    parser.add_argument(
        "--thresholds", type=Path, default=paths.THRESHOLDS_FILE, help="from the evaluate stage"
    )
    parser.add_argument(
        "--layer", default="features[-1]", help="Grad-CAM++ target layer (default: the seed's)"
    )
    parser.add_argument("--image-size", type=int, default=224, help="the size the model was trained at")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    parser.add_argument("-v", "--verbose", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chexnet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="findings for PNG, JPEG and DICOM files or folders")
    predict.add_argument("inputs", nargs="+", type=Path, help="image files or folders (searched recursively)")
    formats = predict.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="JSON on stdout")
    formats.add_argument("--csv", action="store_true", help="CSV on stdout")
    predict.add_argument("--heatmaps", type=Path, help="write a Grad-CAM++ overlay per positive finding here")
    predict.add_argument("--batch-size", type=int, default=16)
    _common(predict)
    explain = commands.add_parser("explain", help="Grad-CAM++ heat maps for image files")
    explain.add_argument("images", nargs="+", type=Path, help="PNG/JPEG files (8/16-bit gray, RGB, RGBA)")
    explain.add_argument(
        "--finding",
        action="append",
        choices=LABELS,
        help="explain this finding (repeatable); default: every finding at or above its threshold",
    )
    explain.add_argument("--out", type=Path, default=Path("heatmaps"), help="folder for the overlay PNGs")
    _common(explain)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return _predict(args) if args.command == "predict" else _explain(args)
    except ChexnetError as error:
        log.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
