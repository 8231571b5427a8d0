"""check stage: all of params.yaml against the whole schema, and the preset and demo layout names, before
any work.

Each other stage reads only its own sections (so that editing one section's schema reruns only the
stages that use it) and depends on this stage's stamp, reports/check.json, so that a misspelled key or a
bad value anywhere still stops dvc repro before the first stage runs. The stamp's content never depends
on the params' values: when only they change, this stage reruns and nothing downstream because of it.
"""

from chexnet.config.params import SECTION_CLASSES
from chexnet.core import io
from chexnet.core.errors import ChexnetError
from chexnet.data.presets import registry
from chexnet.pipeline import paths
from chexnet.pipeline.stage_runner import run_stage
from chexnet.synthetic import layouts


def main(params) -> None:
    registry.get(params.data.preset)
    layouts.get(params.demo.layout)
    layouts.get(params.demo.external_layout, "demo.external_layout")
    for name, spec in params.evaluate.external.items():
        registry.get(spec.preset, f"evaluate.external.{name}.preset")
    for refusal in paths.demo_external_refusals(params.data, params.evaluate.external):
        raise ChexnetError(refusal)
    io.write_text(paths.EXTERNAL_README, paths.EXTERNAL_README_TEXT)  # the folder the card stage reads
    io.write_json(
        paths.report_file("check"), {"checked": ["top level", *(c.SECTION for c in SECTION_CLASSES)]}
    )


if __name__ == "__main__":
    run_stage(__doc__, main, sections=SECTION_CLASSES)
