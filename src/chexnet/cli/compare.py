"""``chexnet compare A B``: is model B better than model A on the same test images? (docs/evaluation.md,
"Comparing two models")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(commands: argparse._SubParsersAction) -> None:
    comparing = commands.add_parser(
        "compare",
        help="two models on the same test images: AUROC differences with paired intervals, DeLong, Holm",
        description="A and B: a predictions file (data/predictions/test.parquet), `workspace`, or a Git "
        "revision or dvc experiment name (as `dvc metrics diff` takes them).",
    )
    comparing.add_argument("a", help="the model compared against (e.g. HEAD, main, a file)")
    comparing.add_argument("b", help="the model compared (e.g. an experiment name, workspace, a file)")
    comparing.add_argument("--split", default="test", help="which split's predictions (default test)")
    comparing.add_argument("--thresholds-a", type=Path, help="A's thresholds.json (a file A's; default: "
                           "the revision's models/thresholds.json)")  # fmt: skip
    comparing.add_argument("--thresholds-b", type=Path, help="B's thresholds.json, likewise")
    comparing.add_argument(
        "--resamples", type=int, default=1000, help="paired patient resamples (default 1000)"
    )
    comparing.add_argument("--seed", type=int, default=0)
    comparing.add_argument("--json", action="store_true", help="the whole comparison as JSON on stdout")
    comparing.add_argument("-v", "--verbose", action="store_true")


def _cell(entry: dict[str, Any]) -> str:
    ci = entry["difference_ci"]
    if ci["ci_low"] is None:
        return f"{entry['difference']:+.3f}"
    return f"{entry['difference']:+.3f} ({ci['ci_low']:+.3f} to {ci['ci_high']:+.3f})"


def render(result: dict[str, Any]) -> str:
    """The comparison as a table people read: per finding, then the macro mean."""
    lines = [
        f"A: {result['a']}",
        f"B: {result['b']}",
        f"{result['images']} images of {result['patients']} patients; B − A with a paired patient-bootstrap "
        f"{result['bootstrap']['level']:.0%} interval; DeLong p, {result['adjustment']}",
        "",
        f"{'finding':<24} {'AUROC A':>8} {'AUROC B':>8}  {'B − A (paired CI)':<28} {'p':>7} {'p Holm':>7}  "
        "calls changed",
    ]
    for name, entry in result["findings"].items():
        if "undefined" in entry:
            lines.append(f"{name:<24} undefined: {entry['undefined']}")
            continue
        calls = entry.get("decisions")
        changed = (f"{calls['changed']} (B right {calls['b_right_where_a_wrong']}, "
                   f"A right {calls['a_right_where_b_wrong']})") if calls else "—"  # fmt: skip
        lines.append(f"{name:<24} {entry['auroc_a']:>8.3f} {entry['auroc_b']:>8.3f}  {_cell(entry):<28} "
                     f"{entry['p']:>7.3g} {entry['p_holm']:>7.3g}  {changed}")  # fmt: skip
    macro = result["macro"]
    if "difference" in macro:
        lines.append(f"{'macro':<24} {macro['auroc_a']:>8.3f} {macro['auroc_b']:>8.3f}  {_cell(macro):<28}")
    for side, missing in result["not_compared"].items():
        if missing:
            lines.append(f"not compared, {side.replace('_', ' ')}: {', '.join(missing)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from chexnet.evaluation.compare import compare_models
    from chexnet.pipeline.compare import pair, read_predictions

    a = read_predictions(args.a, args.split, args.thresholds_a)
    b = read_predictions(args.b, args.split, args.thresholds_b)
    paired = pair(a, b)
    both = a.thresholds is not None and b.thresholds is not None
    result = compare_models(
        paired.truth, paired.scores_a, paired.scores_b, paired.patients, paired.findings,
        thresholds_a=a.thresholds if both else None, thresholds_b=b.thresholds if both else None,
        resamples=args.resamples, seed=args.seed,
    )  # fmt: skip
    result = {"a": a.source, "b": b.source, **result, "not_compared": paired.not_compared}
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else render(result))
    return 0
