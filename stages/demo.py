"""demo stage: synthesise the built-in NIH-like demo set (table, images, box table) under data/demo/,
in the table layout named by demo.layout (seed, nih, chexpert or mimic)."""

from chexnet import paths
from chexnet.cli import run_stage
from chexnet.demo import generate_demo


def main(params, _args) -> None:
    table = generate_demo(paths.DEMO_DIR, params.demo)
    print(f"demo: {len(table)} images in the {params.demo.layout} layout in {paths.DEMO_DIR}")


if __name__ == "__main__":
    run_stage(__doc__, main)
