"""Where each stage reads and writes: the one list of file contracts, mirrored by dvc.yaml."""

from pathlib import Path

DEMO_DIR = Path("data/demo")
PREPARED_DIR = Path("data/prepared")
SPLIT_FILE = Path("data/split.parquet")
MODEL_FILE = Path("models/chexnet_model.pth")
MODEL_INFO = Path("models/chexnet_model.json")  # labels, image size, input transform: travels with the model
PREDICTIONS_DIR = Path("data/predictions")  # val.parquet and test.parquet
PREDICTIONS_FILE = PREDICTIONS_DIR / "test.parquet"
THRESHOLDS_FILE = Path("models/thresholds.json")  # per-class thresholds chosen on validation

METRICS_DIR = Path("metrics")  # headline figures, written with reports/<stage>.json (pipeline.headlines)

PLOTS_DIR = Path("plots")
DVCLIVE_DIR = Path("dvclive")  # per-epoch train/val loss and val AUROC, logged by dvclive
CHECKPOINT_NAME = "train_checkpoint.pt"  # inside params train.checkpoint_dir
ROC_CSV = PLOTS_DIR / "roc.csv"  # long format: finding, fpr, tpr, threshold (any label list)
PR_CSV = PLOTS_DIR / "pr.csv"  # long format: finding, recall, precision, threshold
CALIBRATION_CSV = PLOTS_DIR / "calibration.csv"
CONFUSION_PNG = PLOTS_DIR / "confusion.png"
RELIABILITY_PNG = PLOTS_DIR / "reliability.png"
PREDICTION_GRID = PLOTS_DIR / "predictions.png"
SUBGROUPS_PNG = PLOTS_DIR / "subgroups.png"  # underdiagnosis and AUROC per group
EVALUATE_FIGURES = {"confusion": CONFUSION_PNG, "reliability": RELIABILITY_PNG, "grid": PREDICTION_GRID,
                    "subgroups": SUBGROUPS_PNG}  # fmt: skip
CAM_DIR = PLOTS_DIR / "cam"
REPORTS_DIR = Path("reports")
REPORT_TEXT = REPORTS_DIR / "classification_report.txt"
REPORT_JSON = REPORTS_DIR / "classification_report.json"
EXPLAIN_TABLE = REPORTS_DIR / "explain.csv"
MODEL_CARD = REPORTS_DIR / "model_card.md"


def reads_demo(table: str | Path, images: str | Path, demo_dir: str | Path = DEMO_DIR) -> bool:
    """Whether the data params read the demo set (its table or its images live under ``demo_dir``): the
    one rule for "this is the synthetic demo" (the demo stage generates it; the model card says so)."""
    root = Path(demo_dir).resolve()
    return any(Path(path).resolve().is_relative_to(root) for path in (table, images))


def report_file(stage: str) -> Path:
    """``reports/<stage>.json``: everything a stage measured (a plain output)."""
    return REPORTS_DIR / f"{stage}.json"


def metrics_file(stage: str) -> Path:
    """``metrics/<stage>.json``: its headline figures (a DVC metric)."""
    return METRICS_DIR / f"{stage}.json"


def demo_hint(path: str | Path, data: object) -> str:
    """Why a demo file is missing: the data params point at the user's own data, so the demo stage wrote
    no demo set (its box table is the default ``data.bbox_table``)."""
    demo = Path(path).resolve().is_relative_to(DEMO_DIR.resolve())
    own = not reads_demo(data.table, data.images)
    return (
        " (it is the demo set's, and data.table is your own data: no demo set is made)"
        if demo and own
        else ""
    )


EXTERNAL_DATA_DIR = Path("data/external")  # one cache per external test set (external@<name>)
EXTERNAL_REPORTS = REPORTS_DIR / "external"  # <name>.json per set; the card stage depends on the folder
EXTERNAL_README = EXTERNAL_REPORTS / "README.md"  # written by the check stage, so the folder always exists
EXTERNAL_README_TEXT = (
    "# External test sets\n\nOne `<name>.json` per entry of `evaluate.external`, written by the DVC stage "
    "`external@<name>` (docs/evaluation.md). A file whose set was removed from params.yaml is left here "
    "by DVC and ignored by the model card.\n"
)


def demo_external_refusals(data: object, external: dict) -> list[str]:
    """External sets that read the demo while the data is the user's: the demo stage draws nothing then
    (its second hospital neither), so each is refused with the fix, before any stage runs."""
    if reads_demo(data.table, data.images):
        return []
    return [
        f"params: evaluate.external.{name} is the demo's second hospital ({spec.table}), but data.table is "
        f"your own ({data.table}), so the demo stage draws nothing for it: remove it from evaluate.external "
        "(evaluate.external: {} for none), or point it at your external table"
        for name, spec in external.items()
        if reads_demo(spec.table, spec.images)
    ]


def external_dirs(name: str) -> dict[str, Path]:
    """Where the external set ``name`` is prepared and reported: its cache (and predictions), report,
    headline metrics, curves and subgroup figure."""
    plots = PLOTS_DIR / "external" / name
    return {
        "data": EXTERNAL_DATA_DIR / name,
        "report": EXTERNAL_REPORTS / f"{name}.json",
        "metrics": METRICS_DIR / "external" / f"{name}.json",
        "roc": plots / "roc.csv",
        "pr": plots / "pr.csv",
        "calibration": plots / "calibration.csv",
        "subgroups": plots / "subgroups.png",
    }
