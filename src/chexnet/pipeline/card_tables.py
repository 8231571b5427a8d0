"""The model card's tables: figures with the intervals that mean something, the subgroup section and
the external test sets (the rest of the card: :mod:`chexnet.pipeline.model_card`)."""

from __future__ import annotations

from typing import Any


def num(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def interval(entry: dict[str, Any]) -> str:
    """A figure with its interval when it has one that means something; its counts when it is a rate
    (``3/61``), ``exact`` when the interval is Clopper–Pearson's, ``no CI`` when it has none."""
    if entry.get("value") is None:
        return f"undefined ({entry.get('undefined', 'n/a')})"
    counts = f"{entry['events']}/{entry['of']}" if "events" in entry else ""
    if entry.get("ci_low") is None:
        return f"{entry['value']:.3f} ({'; '.join(filter(None, [counts, 'no CI']))})"
    exact = ", exact" if entry.get("interval") == "clopper-pearson" else ""
    tail = f"; {counts}" if counts else ""
    between = " to " if entry["ci_low"] < 0 else "–"  # "-0.156 to -0.011", not "-0.156–-0.011"
    return f"{entry['value']:.3f} ({entry['ci_low']:.3f}{between}{entry['ci_high']:.3f}{exact}{tail})"


def gap_line(key: str, gap: dict[str, Any]) -> str:
    return (
        f"- Largest {key} gap: {gap['group']} − {gap['reference']} (reference fixed in advance): "
        f"{interval(gap)}, {gap['interval']}"
    )


def subgroup_lines(by_attribute: dict[str, Any]) -> list[str]:
    """The card's subgroup section: per attribute a table of groups, then the largest gaps."""
    if not by_attribute:
        return ["## Subgroups", "", "No subgroup attribute in this data (docs/evaluation.md).", ""]
    lines = [
        "## Subgroups",
        "",
        "Test split by group (`plots/subgroups.png`; every definition and its source in docs/evaluation.md). "
        "Intervals are 95% patient-bootstrap intervals; a rate resting on fewer than 5 events or non-events "
        "gets the exact Clopper–Pearson interval of its counts (`exact`); a group too small for either gets "
        "none (`no CI`). Underdiagnosis: the share of images holding a finding that the model calls "
        '"no finding", i.e. no output at or above its threshold, as `chexnet predict` answers. Gaps are '
        "group − reference, with intervals simultaneous over all of an attribute's gaps (max-|t| "
        "bootstrap), so the largest one, picked after looking, keeps its 95% coverage.",
        "",
    ]
    for attribute, entry in by_attribute.items():
        common = entry.get("auroc_findings", [])
        lines += [f"**{attribute}** (macro AUROC over the {len(common)} finding(s) every group can score: "
                  f"{', '.join(common) or 'none'})", "",
                  "| group | images | patients | macro AUROC | sensitivity | specificity | underdiagnosis |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, g in entry["groups"].items():
            note = f" ({g['too_small']})" if g.get("too_small") else ""
            lines.append(
                f"| {name}{note} | {g['images']} | {g['patients']} | {interval(g['auroc'])} | "
                f"{interval(g['sensitivity'])} | {interval(g['specificity'])} | {interval(g['underdiagnosis'])} |"
            )
        lines += [gap_line(key, gap) for key, gap in entry.get("largest_gap", {}).items()]
        lines += [f"- {key}: not compared ({gap['not_compared']})"
                  for key, gap in entry.get("gaps", {}).items() if "not_compared" in gap]  # fmt: skip
        lines.append("")
    return lines


def external_lines(test_auroc: dict[str, Any], external: dict[str, dict[str, Any]]) -> list[str]:
    """The card's external validation: each set's size and macro AUROC beside the test split's on the
    same findings, then AUROC per finding side by side, then what was not scored and why."""
    if not external:
        return []
    lines = [
        "## External test sets",
        "",
        "The model as evaluated above, on other data: each set prepared with the model's image pipeline, "
        "scored on the findings it shares with the model (by name, after its aliases), at the thresholds "
        "chosen on this run's validation split (docs/evaluation.md).",
        "",
        "| set | images | patients | findings scored | macro AUROC (95% CI) | test split, same findings |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in external.items():
        shared = e["findings_scored"]
        internal = [test_auroc[f]["value"] for f in shared if test_auroc.get(f, {}).get("value") is not None]
        lines.append(
            f"| {name} | {e['images']:,} | {e['patients']:,} | {len(shared)} | {interval(e['auroc']['macro'])} | "
            f"{num(sum(internal) / len(internal) if internal else None)} |"
        )
    findings = [
        f
        for f in test_auroc
        if f not in ("macro", "micro") and any(f in e["auroc"] for e in external.values())
    ]
    lines += [
        "",
        "| finding | test split | " + " | ".join(external) + " |",
        "|---|---|" + "---|" * len(external),
    ]
    for finding in findings:
        cells = [interval(e["auroc"][finding]) if finding in e["auroc"] else "—" for e in external.values()]
        lines.append(f"| {finding} | {interval(test_auroc[finding])} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, e in external.items():
        if e.get("not_predicted_by_the_model"):
            lines.append(
                f"- {name}: not scored, the model has no output for: {', '.join(e['not_predicted_by_the_model'])}."
            )
        if e.get("not_in_this_set"):
            lines.append(f"- {name}: the set does not label: {', '.join(e['not_in_this_set'])}.")
        for attribute, entry in (e.get("subgroups") or {}).items():
            gap = entry.get("largest_gap", {}).get("underdiagnosis")
            if gap:
                lines.append(f"- {name}, {attribute}:" + gap_line("underdiagnosis", gap)[1:] + ".")
    return [*lines, ""]
