"""``data:``: where the table and the images are, which columns hold what, and how findings are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chexnet.config.common import PRESET_NAME
from chexnet.config.schema import ParamsError, check_ranges, param
from chexnet.core.labels import BLANK_POLICIES, UNCERTAIN_POLICIES, LabelOptions

VIEWS = ("PA", "AP", "lateral")  # data.views: what the chexpert and mimic presets can filter on
# data.resize: how prepare fits an image to S × S (chexnet.data.input_spec applies them). square: the
# whole image resized (the seed's); center_crop: the central square resized (torchxrayvision's models).
RESIZE_RULES = ("square", "center_crop")
# data.bbox_layout: how a box table is laid out (chexnet.explain.boxes reads each; docs/explanations.md)
BOX_LAYOUTS = ("nih", "vindr", "rsna", "columns")


@dataclass(frozen=True)
class DataSource:
    """A table of findings, its image folder, and how to read them: the one type behind ``data:`` and
    every ``evaluate.external.<name>``, so each takes every option the other takes and both are checked
    by this code (tests/unit/config/test_params.py derives the options from this class and tries each in
    both).

    The table and images have no default here (an external set must name its own); ``data:`` defaults to
    the demo's. Every file param is named in params.yaml, ``inputs/none`` for no file: dvc.yaml lists
    them as dependencies."""

    PREFIX: ClassVar[str] = "data."  # how error messages name the section

    table: str = param(free=True)  # Parquet or CSV
    images: str = param(free=True)  # searched recursively
    preset: str = param("seed", pattern=PRESET_NAME)  # the layout of the table (README "Your own data")
    metadata_table: str = param("", file=True)  # mimic: mimic-cxr-2.0.0-metadata.csv(.gz)
    demographics_table: str = param("", file=True)  # one row a patient, joined on the patient column
    image_column: str = param("", free=True)  # "" = the preset's; set one to override it
    label_column: str = param("", free=True)
    patient_column: str = param("", free=True)  # "none": patient ids from NIH file names PPPPPPPP_FFF.png
    bbox_table: str = param("", file=True)  # expert boxes: the pointing game (inputs/none: no boxes)
    bbox_layout: str = param("nih", choices=BOX_LAYOUTS)
    bbox_columns: dict[str, str] = param(factory=dict)  # columns layout: {image, finding, x, y, w|x2, h|y2}
    max_rejected_fraction: float = param(0.01, low=0, high=1)  # prepare fails above this share
    # How findings are read (docs/data.md).
    no_finding: str = param("No Finding", pattern=r".*\S.*")  # the "nothing found" token (not a class)
    aliases: dict[str, str] = param(factory=dict)  # exact names mapped, e.g. Pleural Effusion: Effusion
    ignore_findings: list[str] = param(factory=list)  # findings removed before anything (counted)
    uncertain: str | dict[str, str] = param("ignore", choices=UNCERTAIN_POLICIES)  # or {Finding: policy}
    blank: str = param("negative", choices=BLANK_POLICIES)  # chexpert/mimic blank (not mentioned)
    views: list[str] = param(factory=list, choices=VIEWS)  # keep only these views ([] = all)
    # Subgroups for evaluate, beyond the preset's sex/age/view: {attribute: column}, e.g. {site: hospital}
    subgroups: dict[str, str] = param(factory=dict)

    def __post_init__(self) -> None:
        check_ranges(self, self.PREFIX)
        policies = [self.uncertain] if isinstance(self.uncertain, str) else self.uncertain.values()
        if any(p not in UNCERTAIN_POLICIES for p in policies):
            raise ParamsError(
                f"params: {self.PREFIX}uncertain must be one of {', '.join(UNCERTAIN_POLICIES)} (or a "
                f"mapping finding: policy, with an optional default), got {self.uncertain!r}"
            )
        if self.blank not in BLANK_POLICIES:
            raise ParamsError(f"params: {self.PREFIX}blank must be one of {', '.join(BLANK_POLICIES)}")
        if any(v not in VIEWS for v in self.views):
            raise ParamsError(f"params: {self.PREFIX}views may hold {', '.join(VIEWS)}, got {self.views}")
        if not self.no_finding.strip():
            raise ParamsError(f"params: {self.PREFIX}no_finding must name the table's no-finding token")

    def rare_findings(self) -> tuple[int, bool]:
        """``(min_positives, drop_rare)``: an external set keeps every finding its table holds, none
        refused as rare (which of them the model scores is decided against the model's list after)."""
        return 1, True

    def label_options(self, labels: str | list[str] = "from_data") -> LabelOptions:
        """How this source's cells become labels (``labels``: the top-level ``labels``, or every finding
        the table holds), as the one object :mod:`chexnet.core.labels` builds the label list from."""
        min_positives, drop_rare = self.rare_findings()
        return LabelOptions(
            spec=labels if isinstance(labels, str) else tuple(labels),
            no_finding=self.no_finding,
            aliases=dict(self.aliases),
            ignore=tuple(self.ignore_findings),
            min_positives=min_positives,
            drop_rare=drop_rare,
            uncertain=self.uncertain if isinstance(self.uncertain, str) else dict(self.uncertain),
            blank=self.blank,
        )


@dataclass(frozen=True)
class DataParams(DataSource):
    """``data:``: the training data, a :class:`DataSource` with the demo's files as defaults, and what
    only the training data has: how its label list is chosen (``min_positives``, ``drop_rare``; an
    external set is scored on the model's list), the decoder threads, and the resize rule (an external
    set is fitted by the model's recorded rule, never its own)."""

    SECTION: ClassVar[str] = "data"

    table: str = param("data/demo/table.parquet", free=True)
    images: str = param("data/demo/images", free=True)
    bbox_table: str = param("data/demo/BBox_List.csv", file=True)  # inputs/none: no boxes
    workers: int = param(0, low=0)  # decoder threads for prepare; 0 = every core
    resize: str = param("square", choices=RESIZE_RULES)  # must be the model's input rule (its record)
    min_positives: int = param(10, low=1)  # fewer positives in the whole table stop prepare ...
    drop_rare: bool = False  # ... unless they are dropped (counted in metrics/prepare.json)

    def rare_findings(self) -> tuple[int, bool]:
        return self.min_positives, self.drop_rare
