"""card stage: reports/model_card.md from the stages' reports (evaluate's test split and subgroups, each
external test set of evaluate.external), so that adding an external set rewrites the card and reruns
nothing else."""

from chexnet.config import data, evaluate
from chexnet.core import io
from chexnet.data import cache
from chexnet.pipeline import model_card, paths
from chexnet.pipeline.stage_runner import run_stage


def main(params) -> None:
    io.require(paths.report_file("evaluate"), made_by="evaluate")
    external = {}
    for name in params.evaluate.external:
        where = paths.external_dirs(name)["report"]
        io.require(where, made_by=f"external@{name}")
        external[name] = io.read_json(where)
    summary, labels = io.read_json(paths.report_file("evaluate")), cache.load_labels(paths.PREPARED_DIR)
    io.write_text(paths.MODEL_CARD, model_card.model_card_of_this_run(params, summary, labels, external))


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(evaluate.EvaluateParams, data.DataParams))
