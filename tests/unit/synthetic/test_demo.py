from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from chexnet.config.demo import DemoParams
from chexnet.core.labels import NIH14 as LABELS
from chexnet.core.labels import split_findings
from chexnet.data.presets import registry
from chexnet.data.tables import DataError
from chexnet.synthetic import layouts
from chexnet.synthetic.demo import DEMO_BOXES, generate_demo

TINY = DemoParams(n_patients=20, n_images=50, image_size=96, rgba_images=2, gray16_images=2)

SEED_DEMO = layouts.get("seed")


def test_every_preset_has_a_demo_layout_and_every_layout_a_preset():
    """``demo.layout`` names the same things ``data.preset`` does, each written in the shape its preset
    reads (tests/unit/data/test_more_presets.py reads each back); an unknown name is refused with the
    choices."""
    assert list(layouts.LAYOUTS) == list(registry.PRESETS)
    try:
        layouts.get("nih14", "demo.external_layout")
    except DataError as error:
        assert str(error).startswith("params: demo.external_layout must be one of: seed, nih,")
    else:
        raise AssertionError("an unknown layout was accepted")


def test_demo_set_has_the_users_format_and_variety(tmp_path: Path):
    table = generate_demo(tmp_path, TINY)
    assert list(table.columns) == ["imagem", "patologia", "paciente_id", "sexo", "idade", "incidencia"]
    assert table.equals(pd.read_parquet(tmp_path / SEED_DEMO.table))
    assert len(table) == 50 and table["paciente_id"].nunique() == 20
    assert (table.groupby("paciente_id").size() > 1).any()  # follow-ups
    assert (table["patologia"] == "No Finding").any()
    assert table["patologia"].str.contains("|", regex=False).any()  # multi-finding images
    assert {f for cell in table["patologia"] for f in split_findings(cell)} <= set(LABELS)
    modes = {}
    for name in table["imagem"]:
        with Image.open(tmp_path / SEED_DEMO.images / name) as image:
            assert image.size == (96, 96)
            modes[image.mode] = modes.get(image.mode, 0) + 1
    assert modes.get("RGBA") == 2 and modes.get("I;16") == 2 and modes.get("L") == 46


def test_boxes_are_in_nih_format_and_inside_the_image(tmp_path: Path):
    table = generate_demo(tmp_path, TINY)
    header = (tmp_path / DEMO_BOXES).read_text().splitlines()[0]
    assert header == 'Image Index,Finding Label,"Bbox [x,y,w,h]",,,'
    boxes = pd.read_csv(tmp_path / DEMO_BOXES)
    xywh = boxes.iloc[:, 2:6].to_numpy(float)
    assert (xywh[:, :2] >= 0).all() and (xywh[:, 0] + xywh[:, 2] <= 96 + 1e-6).all()
    assert (xywh[:, 2:] > 0).all()
    assert set(boxes["Finding Label"]) <= set(LABELS)
    labelled = {
        (r.imagem, f) for r in table.itertuples() for f in r.patologia.split("|") if f != "No Finding"
    }
    boxed = set(zip(boxes["Image Index"], boxes["Finding Label"], strict=True))
    occult = labelled - boxed  # the planted gap: some women's findings are labelled, not painted, not boxed
    assert boxed <= labelled and occult
    assert {image for image, _ in occult} <= set(table.loc[table["sexo"] == "F", "imagem"])
    none = generate_demo(tmp_path / "no_gap", dataclasses.replace(TINY, female_occult=0.0))
    boxes = pd.read_csv(tmp_path / "no_gap" / DEMO_BOXES)
    assert set(zip(boxes["Image Index"], boxes["Finding Label"], strict=True)) == {
        (r.imagem, f) for r in none.itertuples() for f in r.patologia.split("|") if f != "No Finding"
    }


def test_findings_are_drawn_where_their_boxes_say(tmp_path: Path):
    """A finding changes pixels inside its box more than outside it (heat maps can be checked against it)."""
    from chexnet.synthetic.painter import Anatomy, draw_radiograph

    anatomy = Anatomy.sample(np.random.default_rng(1))
    for label in ["Nodule", "Mass", "Effusion", "Pneumothorax"]:
        plain, _ = draw_radiograph(128, anatomy, set(), np.random.default_rng(5))
        drawn, boxes = draw_radiograph(128, anatomy, {label}, np.random.default_rng(5))
        ((_, x, y, w, h),) = boxes
        # The image noise after the finding is drawn differs; a 5×5 mean filter averages it away.
        difference = np.abs(ndimage.uniform_filter(drawn - plain, 5))
        inside = np.zeros_like(difference, bool)
        inside[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        assert difference[inside].mean() > 5 * difference[~inside].mean(), label


def test_demo_is_deterministic(tmp_path: Path):
    a = generate_demo(tmp_path / "a", TINY)
    b = generate_demo(tmp_path / "b", TINY)
    assert a.equals(b)
    name = a["imagem"].iloc[0]
    assert (tmp_path / "a" / SEED_DEMO.images / name).read_bytes() == (
        tmp_path / "b" / SEED_DEMO.images / name
    ).read_bytes()


def test_contrast_scales_what_the_findings_change():
    from chexnet.synthetic.painter import Anatomy, draw_radiograph

    anatomy = Anatomy.sample(np.random.default_rng(1))
    draw = lambda findings, contrast: draw_radiograph(  # noqa: E731
        96, anatomy, findings, np.random.default_rng(5), contrast
    )[0]
    normal, double, triple = draw({"Mass"}, 1.0), draw({"Mass"}, 2.0), draw({"Mass"}, 3.0)
    assert np.array_equal(draw({"Mass"}, 1.0), normal)  # the same draw: 1.0 is the patterns as drawn
    unclipped = (normal > 0) & (triple < 1) & (triple > 0)
    step = double - normal  # each unit of contrast adds the finding's pattern once more
    assert np.abs(step).max() > 0.1
    np.testing.assert_allclose((triple - double)[unclipped], step[unclipped], atol=1e-5)


def test_max_findings_bounds_the_new_findings_per_image():
    from chexnet.synthetic.demo import _sample_findings

    rng = np.random.default_rng(0)
    counts = [len(_sample_findings(rng, 0.0, set(), max_findings=5)) for _ in range(2000)]
    assert min(counts) == 1 and max(counts) == 5
    assert counts.count(1) > counts.count(5)  # fewer more likely


def test_the_card_calls_every_demo_layout_synthetic():
    from chexnet.pipeline.paths import reads_demo

    assert reads_demo("data/demo/CheXpert-v1.0-small/train.csv", "data/demo")
    assert reads_demo("data/demo/mimic-cxr-2.0.0-chexpert.csv", "data/demo")
    assert not reads_demo("/data/chexpert/train.csv", "/data/chexpert")
