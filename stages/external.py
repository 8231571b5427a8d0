"""external stage (external@<name>, one per entry of evaluate.external): another dataset prepared with
the model's image pipeline and scored on the findings it shares with the model, at the training data's
validation thresholds, with patient-bootstrap intervals and subgroups (docs/evaluation.md)."""

from chexnet.config import data, evaluate, explain
from chexnet.config.schema import ParamsError
from chexnet.core import io
from chexnet.engine import inference
from chexnet.model import thresholds as operating
from chexnet.model.file import load_model
from chexnet.pipeline import external, paths
from chexnet.pipeline.stage_runner import run_stage


def main(params, name: str) -> None:
    cfg, device = params.evaluate, inference.resolve_device(params.device)
    if name not in cfg.external:
        raise ParamsError(f"params: evaluate.external has no set {name!r}; it has {sorted(cfg.external)}")
    io.require(paths.THRESHOLDS_FILE, made_by="evaluate")
    model, info = load_model(paths.MODEL_FILE)
    where, spec = paths.external_dirs(name), cfg.external[name]
    prepared = external.prepare_set(spec, where["data"], info, seed=params.seed, workers=params.data.workers)
    loading = {"seed": params.seed, "batch_size": params.batch_size, "num_workers": params.num_workers}
    thresholds = operating.read_file(paths.THRESHOLDS_FILE, info, paths.MODEL_FILE)  # this model's
    result = external.score_set(
        name, model.to(device), info, where["data"], thresholds, cfg, device=device, **loading
    )
    summary = result.summary | {"prepare": prepared.as_dict(), "table": spec.table}
    if spec.bbox_table:  # pointing game and IoBB on the set's own boxes (docs/explanations.md)
        cam = {"layer": params.explain.target_layer, "fraction": params.explain.cam_threshold}
        cam["device"] = device
        summary["localisation"] = external.localise_set(spec, result, model, info, where["data"], **cam)
    external.write_results(name, result, summary, where)


if __name__ == "__main__":
    run_stage(
        __doc__,
        main,
        sections=(evaluate.EvaluateParams, data.DataParams, explain.ExplainParams),
        argument="name",
    )
