"""``python -m chexnet`` (or ``chexnet``): commands that work on a trained model outside the pipeline.

chexnet explain IMAGE [IMAGE ...] [--model models/chexnet_model.pth] [--finding Mass] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from chexnet import io, paths
from chexnet.cli import setup_logging
from chexnet.errors import ChexnetError
from chexnet.labels import LABELS

log = logging.getLogger("chexnet")


def _explain(args: argparse.Namespace) -> int:
    from chexnet.explain import explain_file
    from chexnet.model import CheXNet, load_checkpoint, resolve_device

    device = resolve_device(args.device)
    model = load_checkpoint(CheXNet(), args.model).to(device)
    thresholds = None
    if args.thresholds.is_file():
        thresholds = io.read_json(args.thresholds)["thresholds"]
    else:
        log.warning("no thresholds file %s: findings at probability ≥ 0.5 are explained", args.thresholds)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chexnet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="Grad-CAM++ heat maps for image files")
    explain.add_argument("images", nargs="+", type=Path, help="PNG/JPEG files (8/16-bit gray, RGB, RGBA)")
    explain.add_argument(
        "--model", type=Path, default=paths.MODEL_FILE, help="state_dict (ours or the seed's)"
    )
    explain.add_argument(
        "--thresholds", type=Path, default=paths.THRESHOLDS_FILE, help="from the evaluate stage"
    )
    explain.add_argument(
        "--finding",
        action="append",
        choices=LABELS,
        help="explain this finding (repeatable); default: every finding at or above its threshold",
    )
    explain.add_argument(
        "--layer", default="features[-1]", help="Grad-CAM++ target layer (default: the seed's)"
    )
    explain.add_argument("--image-size", type=int, default=224, help="the size the model was trained at")
    explain.add_argument("--device", default="auto")
    explain.add_argument("--out", type=Path, default=Path("heatmaps"), help="folder for the overlay PNGs")
    explain.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return _explain(args)
    except ChexnetError as error:
        log.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
