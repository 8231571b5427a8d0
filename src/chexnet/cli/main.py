"""``chexnet`` (or ``python -m chexnet``): use a trained model outside the pipeline.

chexnet predict IMAGE|FOLDER ... [--json | --csv] [--heatmaps DIR] [--dicom-out DIR] [--model PATH]
                                         [--labels LIST|FILE]
chexnet explain IMAGE ... [--finding Mass] [--out DIR] [--model PATH] [--labels LIST|FILE]
chexnet import SOURCE --out models/NAME.pth [--format F] [--labels LIST|FILE] [--weights-name N]
                                         a foreign checkpoint (seed, arnoweng, jrzech, torchxrayvision,
                                         torchvision) as a chexnet model file (docs/models.md)
chexnet check [--params params.yaml]     params checked as the stages read them, before dvc repro
chexnet compare A B [--json]             two models on the same test images (docs/evaluation.md)
chexnet export | serve | listen          ONNX, the HTTP service, the DICOM node (docs/predict.md, dicom.md)

A model trained here carries its findings and input size in the JSON file beside it
(models/chexnet_model.json). A checkpoint with no such file is read as the seed's: its outputs in
MultiLabelBinarizer's sorted order; --labels gives its findings when its table held others.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

from chexnet.cli import compare as compare_command
from chexnet.cli import deploy as deploy_commands
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelMismatchError, parse_labels_argument
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import setup_logging

log = logging.getLogger("chexnet")


def _open(args: argparse.Namespace):
    """The model opened as every path opens one (:class:`chexnet.engine.opened.LoadedModel`), with the
    Grad-CAM++ layer checked when heat maps are asked for, and their folder writable."""
    from chexnet.engine.opened import LoadedModel

    wants_heatmaps = args.command == "explain" or getattr(args, "heatmaps", None) is not None
    if wants_heatmaps:
        folder, option = (args.heatmaps, "--heatmaps") if args.command == "predict" else (args.out, "--out")
        io.require_writable_dir(folder, option)
    if getattr(args, "dicom_out", None) is not None:  # its heat-map captures need the layer too
        io.require_writable_dir(args.dicom_out, "--dicom-out")
        wants_heatmaps = True
    return LoadedModel.open(
        args.model,
        device=args.device,
        labels=parse_labels_argument(args.labels) if args.labels else None,
        thresholds=args.thresholds,
        layer=args.layer if wants_heatmaps else None,
        image_size=args.image_size,
    )


def _predict(args: argparse.Namespace) -> int:
    from chexnet.deploy.answers import prediction_document
    from chexnet.deploy.engines import open_engine
    from chexnet.deploy.predict import collect_inputs, predict_files

    if args.batch_size < 1:
        raise ChexnetError(f"--batch-size must be 1 or more, got {args.batch_size}")
    loaded = _open(args)
    files = collect_inputs(args.inputs)
    if not files:
        log.error("no PNG, JPEG or DICOM files in %s", ", ".join(map(str, args.inputs)))
        return 1
    engine = open_engine(args.engine, loaded, args.batch_size, args.onnx)
    log.info("engine: %s", engine.name)
    answers = predict_files(loaded, files, batch_size=args.batch_size, heatmaps=args.heatmaps, engine=engine,
                            dicom_out=args.dicom_out)  # fmt: skip
    labels = loaded.labels
    if args.json:  # the service's document (chexnet.deploy.answers): one schema for both
        print(prediction_document(loaded, engine.name, answers).model_dump_json(indent=2, exclude_none=True))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "error", "findings", *labels])
        for answer in answers:
            row = (
                [f"{answer.probabilities[label]:.6f}" for label in labels]
                if answer.ok
                else [""] * len(labels)
            )
            writer.writerow([answer.file, answer.error or "", "|".join(answer.positives or []), *row])
    else:
        print("\t".join(["file", "findings", *labels]))
        for answer in answers:
            if not answer.ok:
                print(f"{answer.file}\tERROR: {answer.error}")
                continue
            found = ", ".join(answer.positives) or "No Finding"
            print(
                "\t".join([answer.file, found, *(f"{answer.probabilities[label]:.3f}" for label in labels)])
            )
    return 0 if all(answer.ok for answer in answers) else 1


def _explain(args: argparse.Namespace) -> int:
    from PIL import Image

    from chexnet.deploy.predict import explain_file

    loaded = _open(args)
    unknown = [name for name in args.finding or [] if name not in loaded.labels]
    if unknown:
        raise LabelMismatchError(f"--finding {unknown}: the model {args.model} predicts {loaded.labels}")
    failed = 0
    for image in args.images:
        try:
            rows = explain_file(image, loaded, out_dir=args.out, findings=args.finding)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
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
        "--thresholds",
        type=Path,
        help="from the evaluate stage (default: thresholds.json beside --model)",
    )
    parser.add_argument(
        "--layer",
        default="auto",
        help="Grad-CAM++ target layer (default auto: the network's own, DenseNet121's features[-1] as the "
        "seed, ResNet50's layer4)",
    )
    parser.add_argument(
        "--labels",
        help="the checkpoint's findings in output order, 'A,B,...' or a file (JSON list or one a line); "
        "only for a checkpoint with no JSON file beside it (default there: the seed's sorted NIH 14)",
    )
    parser.add_argument(
        "--image-size", type=int, help="only for a seed checkpoint (default 224); ours carry their own"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    parser.add_argument("-v", "--verbose", action="store_true")


def _counts_parser(commands: argparse._SubParsersAction) -> None:
    counting = commands.add_parser("counts", help="positives, negatives and masked labels per finding of a "
                                   "table, as prepare would read it (no image is read)")  # fmt: skip
    counting.add_argument("table", type=Path, help="the label table (Parquet or CSV, .gz/.zip too)")
    counting.add_argument("--preset", default="seed", help="its layout, as data.preset (default seed)")
    counting.add_argument("--metadata-table", default="", help="as data.metadata_table (mimic, rsna)")
    counting.add_argument("--views", default="", help="as data.views, e.g. PA,AP (default: all)")
    counting.add_argument("--uncertain", default="ignore", help="wide tables: ignore | zeros | ones")
    counting.add_argument("--blank", default="negative", help="wide tables: negative | ignore")
    counting.add_argument("-v", "--verbose", action="store_true")


def run_command(command, args: argparse.Namespace) -> int:
    """Run one command; whatever goes wrong is one line on stderr and exit status 1 (130 on Ctrl-C),
    never a traceback (``-v`` logs it)."""
    try:
        return command(args)
    except ChexnetError as error:
        log.error("%s", error)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except OSError as error:  # a file or folder that cannot be read or written: its name and why
        where = f"{error.filename}: " if error.filename else ""
        log.error("%s%s; check the path and its permissions", where, error.strerror or error)
        return 1
    except Exception as error:  # ONNX Runtime, decoders, plotting: one line, the traceback with -v
        log.error("%s: %s", type(error).__name__, " ".join(str(error).split())[:500])
        log.error("this is not a message chexnet knows: rerun with -v for the traceback, and report it")
        log.debug("traceback", exc_info=True)
        return 1


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
    predict.add_argument("--dicom-out", type=Path, help="for each DICOM input, write here a Structured "
                         "Report of its findings and a Secondary Capture heat map per positive finding, "
                         "in its study (docs/dicom.md)")  # fmt: skip
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--engine", default="auto", help="torch | onnx | auto (default: the faster for this "
                         "device and batch size, as measured in benchmarks/README.md)")  # fmt: skip
    predict.add_argument("--onnx", type=Path, help="the model's ONNX export (default: exported once, cached)")
    _common(predict)
    explain = commands.add_parser("explain", help="Grad-CAM++ heat maps for image files")
    explain.add_argument("images", nargs="+", type=Path, help="PNG/JPEG files (8/16-bit gray, RGB, RGBA)")
    explain.add_argument(
        "--finding",
        action="append",
        help="explain this finding (repeatable); default: every finding at or above its threshold",
    )
    explain.add_argument("--out", type=Path, default=Path("heatmaps"), help="folder for the overlay PNGs")
    _common(explain)
    importing = commands.add_parser(
        "import", help="a foreign checkpoint as a chexnet model file (usable as --model and as weights:)"
    )
    importing.add_argument("source", type=Path, help="the checkpoint file (.pth, .pth.tar, .pt, checkpoint)")
    importing.add_argument(
        "--out", type=Path, required=True, help="the model file to write, e.g. models/x.pth"
    )
    importing.add_argument("--format", default="auto", help="auto (detected) | seed | arnoweng | jrzech | "
                           "torchxrayvision | torchvision")  # fmt: skip
    importing.add_argument("--labels", help="its findings in output order, 'A,B,...' or a file (default: "
                           "the format's own list)")  # fmt: skip
    importing.add_argument("--weights-name", help="torchxrayvision: which published weights, e.g. "
                           "densenet121-res224-all (default: from the file name)")  # fmt: skip
    importing.add_argument("-v", "--verbose", action="store_true")
    checking = commands.add_parser(
        "check", help="check params.yaml before dvc repro (empty or missing files, layer, device)"
    )
    checking.add_argument("--params", type=Path, default=Path("params.yaml"))
    checking.add_argument("-v", "--verbose", action="store_true")
    _counts_parser(commands)
    compare_command.add_parser(commands)
    deploy_commands.add_parsers(commands)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    commands_by_name = {"predict": _predict, "explain": _explain, "check": _check, "import": _import,
                        "counts": _counts, "compare": compare_command.run,
                        **deploy_commands.COMMANDS}  # fmt: skip
    return run_command(commands_by_name[args.command], args)


def _import(args: argparse.Namespace) -> int:
    from chexnet.model.sources import import_checkpoint

    labels = parse_labels_argument(args.labels).names if args.labels else None
    io.require_writable_file(args.out, "--out")
    info = import_checkpoint(args.source, args.out, fmt=args.format, labels=labels,
                             weights_name=args.weights_name)  # fmt: skip
    print(json.dumps({"model": str(args.out), **info.as_dict()}, indent=2, ensure_ascii=False))
    return 0


def _counts(args: argparse.Namespace) -> int:
    from chexnet.core.labels import BLANK_POLICIES, UNCERTAIN_POLICIES, LabelOptions
    from chexnet.data.counts import label_counts

    if args.uncertain not in UNCERTAIN_POLICIES or args.blank not in BLANK_POLICIES:
        raise ChexnetError(f"--uncertain is one of {UNCERTAIN_POLICIES}, --blank one of {BLANK_POLICIES}")
    options = LabelOptions(min_positives=1, drop_rare=True, uncertain=args.uncertain, blank=args.blank)
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    counts = label_counts(args.preset, args.table, options, views, args.metadata_table)
    print(counts.to_csv(sep="\t", index=False), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from chexnet.pipeline.check import check

    problems = check(args.params)
    for problem in problems:
        log.error("%s", problem)
    if not problems:
        print(f"{args.params}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
