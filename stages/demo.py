"""demo stage: synthesise the built-in NIH-like demo set (table, images, box table) under data/demo/,
in the table layout named by demo.layout (seed, nih, chexpert or mimic). When data.table and data.images
point at your own data, it generates nothing (a note in data/demo/ says why): no demo work on your run."""

import logging

from chexnet.config.data import DataParams
from chexnet.config.demo import DemoParams
from chexnet.core import io
from chexnet.pipeline import paths
from chexnet.pipeline.paths import reads_demo
from chexnet.pipeline.stage_runner import run_stage
from chexnet.synthetic.demo import generate_demo

log = logging.getLogger("chexnet.demo")


def main(params) -> None:
    if not reads_demo(params.data.table, params.data.images, paths.DEMO_DIR):
        io.write_text(
            paths.DEMO_DIR / "NOT_GENERATED.txt", "data.table and data.images point at your own data.\n"
        )
        log.info("data.table is %s: your own data, so no demo set is generated", params.data.table)
        return
    table = generate_demo(paths.DEMO_DIR, params.demo)
    print(f"demo: {len(table)} images in the {params.demo.layout} layout in {paths.DEMO_DIR}")


if __name__ == "__main__":
    run_stage(__doc__, main, sections=(DemoParams, DataParams))
