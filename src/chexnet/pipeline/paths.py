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
