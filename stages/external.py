"""external stage (external@<name>, one per entry of evaluate.external): another dataset prepared with
the model's image pipeline and scored on the findings it shares with the model, at the training data's
validation thresholds, with patient-bootstrap intervals and subgroups (docs/evaluation.md)."""

from chexnet.config import data, evaluate, explain
from chexnet.config.schema import ParamsError
from chexnet.core import io
from chexnet.engine.opened import LoadedModel
from chexnet.pipeline import external, paths
from chexnet.pipeline.stage_runner import run_stage


def main(params, name: str) -> None:
    cfg = params.evaluate
    if name not in cfg.external:
        raise ParamsError(f"params: evaluate.external has no set {name!r}; it has {sorted(cfg.external)}")
    io.require(paths.THRESHOLDS_FILE, made_by="evaluate")
    where, spec = paths.external_dirs(name), cfg.external[name]
    loaded = LoadedModel.open(
        paths.MODEL_FILE,
        device=params.device,
        thresholds=paths.THRESHOLDS_FILE,  # the training data's validation thresholds, this model's
        layer=params.explain.target_layer if spec.bbox_table else None,
    )
    prepared = external.prepare_set(
        spec, where["data"], loaded.info, seed=params.seed, workers=params.data.workers
    )
    result = external.score_set(
        name,
        loaded,
        where["data"],
        cfg,
        seed=params.seed,
        batch_size=params.batch_size,
        num_workers=params.num_workers,
    )
    summary = result.summary | {"prepare": prepared.as_dict(), "table": spec.table}
    if spec.bbox_table:  # pointing game and IoBB on the set's own boxes (docs/explanations.md)
        summary["localisation"] = external.localise_set(
            spec, result, loaded, where["data"], fraction=params.explain.cam_threshold
        )
    external.write_results(name, result, summary, where)


if __name__ == "__main__":
    run_stage(
        __doc__,
        main,
        sections=(evaluate.EvaluateParams, data.DataParams, explain.ExplainParams),
        argument="name",
    )
