"""The model card: what was trained on what, how it was measured, and the limits of those numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chexnet.config.stage import StageParams
from chexnet.core import io
from chexnet.core.labels import LABELS_FILE, LabelList
from chexnet.pipeline import paths
from chexnet.pipeline.card_tables import external_lines, interval, num, subgroup_lines
from chexnet.pipeline.paths import reads_demo

# Rajpurkar et al. 2017 (CheXNet), Table 1: per-class test AUROC on NIH ChestX-ray14.
CHEXNET_PAPER_AUROC = {
    "Atelectasis": 0.8094,
    "Cardiomegaly": 0.9248,
    "Effusion": 0.8638,
    "Infiltration": 0.7345,
    "Mass": 0.8676,
    "Nodule": 0.7802,
    "Pneumonia": 0.7680,
    "Pneumothorax": 0.8887,
    "Consolidation": 0.7901,
    "Edema": 0.8878,
    "Emphysema": 0.9371,
    "Fibrosis": 0.8047,
    "Pleural_Thickening": 0.8062,
    "Hernia": 0.9164,
}
CHEXNET_PAPER_MEAN = 0.841
FEW_POSITIVES = 30  # below this many test positives an interval is wide: say so


ARCHITECTURE_NAMES = {"densenet121": "DenseNet121", "resnet50": "ResNet50"}


def _initial_weights(pretrained: bool | None, asked: str | None) -> str:
    """What the network started from, next to what was asked: ``weights: imagenet`` with no weights on
    this machine trains from random initialisation, and the card says both, not one beside the other."""
    if pretrained:
        return "ImageNet (torchvision DEFAULT)"
    if asked in (None, "imagenet"):
        return "random initialisation: ImageNet weights were asked for (`weights: imagenet`) but were not available"
    return f"random initialisation (`weights: {asked}`)"


def _origin_line(record: dict[str, Any]) -> str:
    """Where the model came from, as its record says (trained here, imported, judged as it is)."""
    origin = record.get("origin") or {}
    source = origin.get("model_origin") or {}
    if origin.get("kind") == "evaluate-only":
        where = (f"imported from a **{source['format']}** file `{source.get('file')}` (sha256 "
                 f"`{source.get('sha256')}`)" if source.get("kind") == "imported" else "trained elsewhere")  # fmt: skip
        left = origin.get("outputs_left_out") or []
        return (f"- **Evaluate-only**: `{origin.get('weights')}` (sha256 `{origin.get('sha256')}`), {where}, judged "
                "as it is on this data: not trained here. "
                + (f"Its outputs not in this data, left out: {', '.join(left)}." if left else ""))  # fmt: skip
    if origin.get("initial_origin"):
        first = origin["initial_origin"]
        return (f"- Fine-tuned here from `{origin.get('initial_weights')}` ({first.get('kind')}"
                f"{', ' + first['format'] + ' format' if first.get('format') else ''}).")  # fmt: skip
    return ""


def _model_lines(
    record: dict[str, Any], train: dict[str, Any], trained: dict[str, Any], names: list[str], source_text: str,
    params: dict[str, Any],
) -> list[str]:  # fmt: skip
    """The card's "Model" section: the network and its input, findings, origin, how it was trained."""
    run_as, trained_train = record.get("run_as") or {}, trained.get("train") or {}
    head = "fc" if record.get("architecture") == "resnet50" else "classifier"
    features = 2048 if head == "fc" else 1024
    name = ARCHITECTURE_NAMES.get(record.get("architecture"), "DenseNet121")
    spec = record.get("input") or {}
    lines = [
        f"- torchvision {name}, head `Linear({features}, {len(names)}) → Sigmoid` (the seed's), one output per finding; "
        f"input: {spec.get('channels', 3)} channel(s), mean {spec.get('mean')}, std {spec.get('std')} (on pixel / {spec.get('scale', 255)}), "
        f"resize `{spec.get('resize', 'square')}` to {record.get('image_size') or '?'} px.",
        f"- Findings ({len(names)}, output order; {source_text}; listed in `models/chexnet_model.json`): "
        + ", ".join(names)
        + ".",
    ]
    origin = _origin_line(record)
    if (record.get("origin") or {}).get("kind") == "evaluate-only":
        return [
            *lines,
            origin,
            f"- Run in {run_as.get('dtype', 'fp32 (precision not recorded)')}; test-time augmentation `{params['evaluate']['tta']}`.",
        ]
    lines += [
        f"- Initial weights: {_initial_weights(train.get('pretrained'), trained.get('weights'))}.",
        *([origin] if origin else []),
        f"- Trained on {train.get('train_device', '?')}, {train.get('epochs_trained', '?')} epochs; kept: epoch "
        f"{train.get('best_epoch', '?')} (best validation mean AUROC {num(train.get('best_val_mean_auroc'))}).",
        f"- Trained with (its record, `models/chexnet_model.json`): epochs {trained.get('epochs', '?')}, batch size {trained.get('batch_size', '?')}, Adam lr {train.get('learning_rate', trained.get('lr', '?'))}, image size "
        f"{record.get('image_size') or '?'} px, seed {trained.get('seed', '?')}, weights `{trained.get('weights', '?')}`, amp `{trained_train.get('amp', '?')}` "
        f"({run_as.get('dtype', 'precision not recorded: run in fp32')}{', ' + run_as['memory_format'] if run_as else ''}: evaluated so, or in fp32 with a warning where the machine lacks it), pos_weight {trained_train.get('pos_weight', '?')}; "
        f"test-time augmentation `{params['evaluate']['tta']}`.",
    ]
    return lines


# long: a template, one line of code per line of the card, in the card's order, so that the card and
# its code read alike (longer than our usual 60 lines on purpose).
def model_card(
    *,
    evaluation: dict[str, Any],
    prepare: dict[str, Any],
    split: dict[str, Any],
    train: dict[str, Any],
    params: dict[str, Any],
    demo_data: bool,
    labels: LabelList,
    label_counts: dict[str, Any],
    record: dict[str, Any],
    external: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Render ``reports/model_card.md`` from the stages' metrics, the label list and the params."""
    names = list(labels.names)
    test_positives = split["test"]["positives"]
    test_masked = split["test"].get("masked", {})
    source_text = {
        "from_data": "every finding in the table, in scikit-learn MultiLabelBinarizer's sorted order (the seed's rule)",
        "nih14": "NIH ChestX-ray14's 14 findings in CheXNet's order",
        "explicit": "the list given in params.yaml (`labels`)",
    }.get(labels.source, labels.source)
    trained = record.get("training") or {}
    auroc, ap = evaluation["auroc"], evaluation["average_precision"]
    boot = evaluation["bootstrap"]
    lines = [
        f"# Model card: chexnet {ARCHITECTURE_NAMES.get(record.get('architecture'), 'DenseNet121')}",
        "",
        "Generated by the card stage (`dvc repro`); every number below comes from this run's files.",
        "",
        "## Model",
        "",
        *_model_lines(record, train, trained, names, source_text, params),
        "",
        "## Data",
        "",
        f"- Table `{params['data']['table']}`, images `{params['data']['images']}`"
        + (" (the built-in **synthetic** demo set)." if demo_data else "."),
        f"- {prepare['rows_in_table']:,} rows in the table; {prepare['rows_selected']:,} selected (subset "
        f"{params['subset']:,}); {prepare['images_written']:,} images used; {prepare['rejected_total']:,} rejected"
        f"{' ' + str(prepare['rejected']) if prepare['rejected'] else ''}; {prepare.get('duplicate_rows_merged', 0):,} duplicate rows merged into their image's row.",
        f"- No-finding token `{label_counts.get('no_finding', 'No Finding')}` (not a class)."
        + (
            f" Dropped as too rare: {label_counts['dropped_rare']}."
            if label_counts.get("dropped_rare")
            else ""
        )
        + (
            f" Ignored (data.ignore_findings): {label_counts['ignored']}."
            if label_counts.get("ignored")
            else ""
        )
        + (
            f" Masked labels (uncertain or blank under `ignore`, left out of loss and metrics): "
            f"{ {k: v for k, v in label_counts['masked_in_table'].items() if v} }."
            if any(label_counts.get("masked_in_table", {}).values())
            else ""
        ),
        "",
        "## Split",
        "",
        f"- Method: `{split.get('method', 'random')}`, by patient (no patient in two splits: checked).",
        "",
        "| split | images | patients |",
        "|---|---|---|",
        *(
            f"| {name} | {split[name]['images']:,} | {split[name]['patients']:,} |"
            for name in ("train", "val", "test")
        ),
        "",
        "## Performance on the test split",
        "",
        f"AUROC and average precision with {int(boot['level'] * 100)}% bootstrap intervals ({boot['resamples']:,} "
        f"resamples of **patients**, seed {boot['seed']}), beside the CheXNet paper's per-class AUROC "
        "(Rajpurkar et al. 2017, arXiv:1711.05225v3, §4: ChestX-ray14 split at random by patient into training "
        "70%, validation 10% and test 20%, with no patient overlap; not NIH's official test list, and not this test "
        "set: for orientation only).",
        "",
        "| finding | test positives | AUROC (95% CI) | AP (95% CI) | CheXNet paper AUROC |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {test_positives[label]}{f' ({test_masked[label]} masked)' if test_masked.get(label) else ''} | "
            f"{interval(auroc[label])} | {interval(ap[label])} | "
            f"{num(CHEXNET_PAPER_AUROC.get(label), 4)} |"
            for label in names
        ),
        f"| **mean (macro)** | | {interval(auroc['macro'])} | {interval(ap['macro'])} | {num(CHEXNET_PAPER_MEAN if set(names) == set(CHEXNET_PAPER_AUROC) else None)} |",
        f"| micro | | {interval(auroc['micro'])} | {interval(ap['micro'])} | |",
        "",
        "## Operating thresholds",
        "",
        f"Chosen per finding on the **validation** split only (`{evaluation['thresholds']['method']}`), saved in "
        "`models/thresholds.json` for predict, then applied once to the test split:",
        "",
        "| finding | threshold | sensitivity | specificity | PPV | F1 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {p['threshold']:.3f} | {num(p['sensitivity'])} | {num(p['specificity'])} | "
            f"{num(p['ppv'])} | {num(p['f1'])} |"
            for label, p in evaluation["at_thresholds"]["per_class"].items()
        ),
        "",
        *(f"- {label}: {reason}" for label, reason in evaluation["thresholds"]["fallbacks"].items()),
        "",
        "## Calibration",
        "",
        f"Expected calibration error over all findings: {num(evaluation['calibration']['ece'])} "
        f"({evaluation['calibration']['bins']} equal-width bins; `plots/reliability.png`). Per finding: "
        + ", ".join(f"{label} {num(v)}" for label, v in evaluation["calibration"]["ece_per_class"].items())
        + ".",
        "",
        *subgroup_lines(evaluation.get("subgroups") or {}),
        *external_lines(auroc, external or {}),
        "## Limits of these numbers",
        "",
    ]
    limits = []
    if demo_data:
        limits.append(
            "Synthetic demo data: the images are drawn caricatures, not radiographs. These figures "
            "show that the pipeline works, and say nothing about clinical performance."
        )
    if not train.get("pretrained"):
        limits.append("Random initialisation: ImageNet weights were not used, unlike CheXNet.")
    few = [label for label in names if test_positives[label] < FEW_POSITIVES]
    if few:
        limits.append(
            f"Fewer than {FEW_POSITIVES} test positives for: {', '.join(few)}; their intervals are wide."
        )
    caution = evaluation.get("caution", {})
    limits += [f"**Cannot be trusted**: {reason}." for reason in caution.get("overall", [])]
    limits += [
        f"**{label}**: {'; '.join(reasons)}." for label, reasons in caution.get("findings", {}).items()
    ]
    limits += [
        f"**{label}**: threshold {reason} (docs/evaluation.md)."
        for label, reason in evaluation.get("thresholds", {}).get("few_validation_images", {}).items()
    ]
    undefined = [label for label in names if auroc[label].get("value") is None]
    if undefined:
        limits.append(
            f"No AUROC for: {', '.join(undefined)} (no positives or no negatives in the test split)."
        )
    if not external:
        limits.append(
            "The test split comes from the same source as the training data; performance on other hospitals, "
            "scanners or populations is not measured (evaluate.external: docs/evaluation.md)."
        )
    limits += [
        "Thresholds are tuned to this validation split's prevalence; PPV changes with prevalence elsewhere.",
        *(
            [
                "The demo's labels are synthetic: they say what was painted, and no figure here says anything "
                "about a real chest X-ray."
            ]
            if demo_data
            else [
                "Labels mined from reports by NLP (NIH ChestX-ray14, CheXpert, MIMIC-CXR) are imperfect; "
                "so is any score against them."
            ]
        ),
        "This is a research model, not a medical device.",
    ]
    lines += [f"- {limit}" for limit in limits]
    return "\n".join(lines) + "\n"


def model_card_for(
    params: StageParams, evaluation: dict[str, Any], labels: LabelList, *, prepare_report: Path,
    split_report: Path, train_metrics: Path, label_counts: Path, demo_dir: Path, model_record: Path,
    external: dict[str, dict[str, Any]] | None = None,
) -> str:  # fmt: skip
    """This run's model card: the evaluate summary with the earlier stages' files (the pipeline says
    where they are). ``train_metrics``: the headline file, not the report, whose timings change every run
    and would rerun evaluate."""
    return model_card(
        evaluation=evaluation,
        prepare=io.read_json(prepare_report),
        split=io.read_json(split_report),
        train=io.read_json(train_metrics),
        params=params.as_dict(),
        demo_data=reads_demo(params.data.table, params.data.images, demo_dir),  # the demo stage's own rule
        labels=labels,
        label_counts=io.read_json(label_counts),
        record=io.read_json(model_record),
        external=external,
    )


def model_card_of_this_run(
    params: StageParams, evaluation: dict[str, Any], labels: LabelList,
    external: dict[str, dict[str, Any]] | None = None,
) -> str:  # fmt: skip
    """:func:`model_card_for` with the earlier stages' files where the pipeline keeps them."""
    return model_card_for(
        params, evaluation, labels, prepare_report=paths.report_file("prepare"),
        split_report=paths.report_file("split"), train_metrics=paths.metrics_file("train"),
        label_counts=paths.PREPARED_DIR / LABELS_FILE, demo_dir=paths.DEMO_DIR, model_record=paths.MODEL_INFO,
        external=external,
    )  # fmt: skip
