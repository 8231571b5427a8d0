"""The demo stage and the demo set in new interpreters (the unit tests of the demo:
tests/unit/synthetic/test_demo.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chexnet.synthetic.demo import DEMO_BOXES


def test_same_seed_same_data_set_in_any_process(tmp_path: Path):
    """Python randomises string hashing per process; the demo set must not depend on it."""
    script = (
        "import sys; from chexnet.synthetic.demo import generate_demo;"
        "from chexnet.config.params import DemoParams;"
        "t = generate_demo(sys.argv[1], DemoParams(n_patients=20, n_images=60, image_size=32));"
        "print(t.to_csv(index=False))"
    )
    tables = []
    for hash_seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        out = tmp_path / hash_seed
        run = subprocess.run(
            [sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True, check=True
        )
        tables.append(run.stdout)
    assert tables[0] == tables[1]
    assert (tmp_path / "1" / DEMO_BOXES).read_bytes() == (tmp_path / "2" / DEMO_BOXES).read_bytes()


def test_the_demo_stage_generates_nothing_when_the_data_params_point_at_your_own_data(tmp_path: Path):
    from chexnet.pipeline.paths import reads_demo
    from tests.helpers import REPO

    assert reads_demo("data/demo/table.parquet", "data/demo/images", "data/demo")
    assert not reads_demo("/datalake/gold.parquet", "/data/images", "data/demo")
    (tmp_path / "params.yaml").write_text("data: {table: /datalake/gold.parquet, images: /data/images}\n")
    result = subprocess.run([sys.executable, str(REPO / "stages" / "demo.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "data" / "demo").iterdir()] == ["NOT_GENERATED.txt"]
