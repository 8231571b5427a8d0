"""demo stage: synthesise the built-in NIH-like demo set (table, PNGs, box table) under data/demo/."""

from chexnet import paths
from chexnet.cli import run_stage
from chexnet.demo import generate_demo


def main(params, _args) -> None:
    table = generate_demo(paths.DEMO_DIR, params.demo)
    print(f"demo: {len(table)} images of {table['paciente_id'].nunique()} patients in {paths.DEMO_DIR}")


if __name__ == "__main__":
    run_stage(__doc__, main)
