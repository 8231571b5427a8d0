"""The default demo run's recorded metrics meet the project's targets (benchmarks/README.md, "The demo").

``metrics/`` is what ``dvc repro`` of the committed params wrote, committed with them (DVC's lock says
which run they come from); this test reads them as the commit holds them (``tests.conftest.committed``),
so a newcomer's own ``dvc repro`` on another CPU (fp32 where bf16 is not native: other figures) does not
change what it judges. The benchmark scripts measure the targets; this test only guards that what the
repository ships, the first run a newcomer reproduces, still meets them: a change that lowers the demo's
test AUROC below its targets or its pointing game below 0.70 fails here, and so does a ``dvc repro``
whose metrics were not committed with the params that made them.

Since 2026-12-02 the demo plants a subgroup gap: 30% of women's findings are labelled but not painted
(``demo.female_occult``), so no model can find them, and they are label noise in training. The AUROC
targets were re-derived for it (benchmarks/README.md, "The demo"): 0.82 on the whole test split
(0.852 measured) and 0.87 on men, the group without the planted effect (0.898); before the plant, 0.90
(0.939). The pointing game keeps its 0.70 (0.706 over 286 boxes: unpainted findings have no box, so
the noise guard is 250 boxes instead of 300).
"""

from __future__ import annotations

import json

import pytest
import yaml

from chexnet.pipeline.paths import reads_demo
from tests.helpers import REPO, committed

AUROC_TARGET, MEN_AUROC_TARGET, POINTING_TARGET, MIN_BOXES = 0.82, 0.87, 0.70, 250
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))

pytestmark = pytest.mark.skipif(
    not reads_demo(PARAMS["data"]["table"], PARAMS["data"]["images"]),
    reason="params.yaml points at your own data: metrics/ are not the demo run's",
)


def _metric(stage: str) -> dict:
    return json.loads(committed(f"metrics/{stage}.json"))


def test_the_recorded_metrics_come_from_the_committed_params():
    """Each metrics file is the one DVC's lock records for its stage (same md5), and the lock's params
    are params.yaml's: the figures below belong to the run the repository describes."""
    import hashlib

    lock, params = yaml.safe_load(committed("dvc.lock")), yaml.safe_load(committed("params.yaml"))
    for stage in ("evaluate", "explain"):
        outs = {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}
        path = f"metrics/{stage}.json"
        assert hashlib.md5(committed(path)).hexdigest() == outs[path], f"{path} is not dvc.lock's"
        for key, value in lock["stages"][stage]["params"]["params.yaml"].items():
            node = params
            for part in key.split("."):
                node = node[part]
            assert node == value, f"params.yaml {key} is {node!r}, the recorded run's {value!r}: dvc repro"


def test_the_default_demo_run_meets_the_auroc_target():
    auroc = _metric("evaluate")["auroc"]["macro"]["value"]
    assert auroc >= AUROC_TARGET, f"test mean AUROC {auroc:.3f} < {AUROC_TARGET}"
    report = json.loads(committed("reports/evaluate.json"))
    men = report["subgroups"]["sex"]["groups"]["M"]["auroc"]["value"]
    assert men >= MEN_AUROC_TARGET, f"men's test mean AUROC {men:.3f} < {MEN_AUROC_TARGET}"


def test_the_default_demo_run_meets_the_pointing_game_target():
    explain = _metric("explain")
    assert explain["cases"] >= MIN_BOXES, f"only {explain['cases']} boxes: the pointing game is noise"
    assert explain["pointing_game"] >= POINTING_TARGET, (
        f"pointing game {explain['pointing_game']:.3f} over {explain['cases']} boxes < {POINTING_TARGET}"
    )
