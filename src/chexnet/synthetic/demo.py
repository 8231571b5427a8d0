"""A synthetic, NIH-like chest X-ray data set, generated deterministically from a seed.

No real radiographs can be downloaded in many places this project runs (air-gapped hospital machines,
CI), so the first stage of the pipeline draws a small stand-in **in exactly the user's format**: a
Parquet table with a ``patologia`` column of ``|``-separated findings (``No Finding`` for none), an
image-file column and a patient-id column, a folder of PNGs named like NIH's ``PPPPPPPP_FFF.png``, and a
bounding-box table in the layout of NIH's ``BBox_List_2017.csv``.

Each image is a chest-like radiograph drawn by :mod:`chexnet.synthetic.painter`, with each finding's
box, in the table layout of a preset (:mod:`chexnet.synthetic.layouts`). Patients have
several images (follow-ups) that share their anatomy, so a split that leaks patients would be
rewarded: exactly the trap the seed's image-level split falls into. A few images are stored as RGBA and
a few as 16-bit grayscale, as in the real data.

The demo is not a medical data set: prevalences are flattened so every finding has positives in a
small test split, and the patterns are caricatures. Its job is to prove that images, labels, training,
evaluation and heat maps are wired together right.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from chexnet.config.demo import DemoParams
from chexnet.core import io
from chexnet.core.labels import NIH14
from chexnet.synthetic import layouts
from chexnet.synthetic.layouts import DrawnImage
from chexnet.synthetic.painter import Anatomy, draw_radiograph

# Relative frequency of each finding among drawn findings: NIH's counts, square-rooted and floored so
# that rare findings (Hernia: 227 of 112,120 in NIH) still have positives in a small test split.
_NIH_COUNTS = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Effusion": 13317,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Edema": 2303,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Pleural_Thickening": 3385,
    "Hernia": 227,
}
_WEIGHTS = np.array([max(np.sqrt(_NIH_COUNTS[label]), 60.0) for label in NIH14])
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()

# NIH's BBox_List_2017.csv header: x in the third column, y, w, h in three unnamed ones after it.
BBOX_COLUMNS = ["Image Index", "Finding Label", "Bbox [x,y,w,h]", "", "", ""]
DEMO_BOXES = "BBox_List.csv"  # beside the table, in every layout (the image entries of its table)


def _sample_findings(
    rng: np.random.Generator, no_finding_fraction: float, previous: set[str], max_findings: int = 3
) -> set[str]:
    """Findings for one image; a follow-up keeps each earlier finding with probability 0.5. New ones:
    1 to ``max_findings``, k of them with weight proportional to ``max_findings + 1 - k``."""
    # In NIH14 order, never in set order: a set of strings iterates in an order that changes with
    # Python's per-process hash seed, which would make the same seed draw a different data set.
    kept = {label for label in NIH14 if label in previous and rng.random() < 0.5}
    if not kept and rng.random() < no_finding_fraction:
        return set()
    weights = np.arange(max_findings, 0, -1, dtype=float)
    count = int(rng.choice(np.arange(1, max_findings + 1), p=weights / weights.sum()))
    drawn = rng.choice(len(NIH14), size=count, replace=False, p=_WEIGHTS)
    return kept | {NIH14[i] for i in drawn}


def _save_image(path: Path, field: np.ndarray, mode: str) -> None:
    """Store as NIH does (PNG: 8-bit gray mostly; RGBA and 16-bit gray for a few), or as the JPEG that
    CheXpert and MIMIC-CXR-JPG ship (8-bit gray)."""
    gray8 = np.round(field * 255).astype(np.uint8)
    if path.suffix == ".jpg":
        image = Image.fromarray(gray8, mode="L")
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_with(path, lambda tmp: image.save(tmp, format="JPEG", quality=95))
        return
    if mode == "RGBA":
        rgba = np.dstack([gray8, gray8, gray8, np.full_like(gray8, 255)])
        image = Image.fromarray(rgba, mode="RGBA")
    elif mode == "I;16":
        # 12-bit detector range inside a 16-bit container: a reader must scale by the real range.
        image = Image.fromarray(np.round(field * 4095).astype(np.uint16))
    else:
        image = Image.fromarray(gray8, mode="L")
    io.write_with(path, lambda tmp: image.save(tmp, format="PNG"))


EXTERNAL_DIR = "external"  # the second set's folder under the demo folder
EXTERNAL_SEED_OFFSET = 1000  # its patients are drawn from another stream: none is the main set's


def generate_demo(out_dir: str | Path, demo: DemoParams) -> pd.DataFrame:
    """The demo set in ``demo.layout``, and the smaller external set (``demo.external_*``) under
    ``external/`` in ``demo.external_layout``; returns the main table (:func:`draw_set`)."""
    table = draw_set(out_dir, demo)
    if demo.external_images:
        other = dataclasses.replace(
            demo,
            layout=demo.external_layout,
            seed=demo.seed + EXTERNAL_SEED_OFFSET,
            n_patients=demo.external_patients,
            n_images=demo.external_images,
            contrast=demo.external_contrast,
            rgba_images=0,
            gray16_images=0,
        )
        draw_set(Path(out_dir) / EXTERNAL_DIR, other)
    return table


def draw_set(out_dir: str | Path, demo: DemoParams) -> pd.DataFrame:
    """Write the demo set under ``out_dir`` in ``demo.layout`` and return its main table.

    ``seed`` (default): ``table.parquet`` (columns ``imagem``, ``patologia``, ``paciente_id``) and
    ``images/*.png``; ``nih``: ``Data_Entry_2017.csv`` and ``images/*.png``; ``chexpert``:
    ``CheXpert-v1.0-small/train.csv`` and its JPEGs; ``mimic``: ``mimic-cxr-2.0.0-chexpert.csv``,
    ``mimic-cxr-2.0.0-metadata.csv`` and ``files/p1x/.../*.jpg``. Every layout has ``BBox_List.csv``, in
    the image entries of its table. The same seed draws the same images and findings in every layout.
    It always writes to its own folder, never to ``data.table``, so a user who points the pipeline at
    their own table can never have it overwritten by the demo stage.
    """
    out_dir = Path(out_dir)
    layout = layouts.get(demo.layout)
    rng = np.random.default_rng(demo.seed)
    image_dir = out_dir / layout.images
    image_dir.mkdir(parents=True, exist_ok=True)

    # Every patient gets one image; the rest are follow-ups spread over random patients.
    per_patient = np.ones(demo.n_patients, dtype=int)
    np.add.at(per_patient, rng.integers(0, demo.n_patients, demo.n_images - demo.n_patients), 1)
    special = rng.permutation(demo.n_images)
    modes = {int(i): "RGBA" for i in special[: demo.rgba_images]}
    modes |= {int(i): "I;16" for i in special[demo.rgba_images : demo.rgba_images + demo.gray16_images]}

    # Sex and age on their own stream, so that they leave every other draw of the seed as it was.
    people = np.random.default_rng(demo.seed + 7)
    sexes = np.where(people.random(demo.n_patients) < 0.5, "F", "M")
    ages = people.integers(5, 90, demo.n_patients)
    occult = np.random.default_rng(demo.seed + 11)  # which of women's findings go unpainted (its own stream)
    drawn_images, boxes = [], []
    progress = tqdm(total=demo.n_images, desc="demo images", unit="img")
    index = 0
    for patient in range(demo.n_patients):
        anatomy = Anatomy.sample(rng)
        findings: set[str] = set()
        for follow_up in range(per_patient[patient]):
            findings = _sample_findings(rng, demo.no_finding_fraction, findings, demo.max_findings)
            sex, age = str(sexes[patient]), int(ages[patient]) + follow_up
            drawn = DrawnImage(patient, follow_up, index, frozenset(findings), sex, age)
            entry = layout.entry(drawn)
            painted = findings  # the planted gap: a share of women's findings is labelled but not visible
            if sex == "F" and demo.female_occult:
                painted = {f for f in NIH14 if f in findings and occult.random() >= demo.female_occult}
            field, image_boxes = draw_radiograph(demo.image_size, anatomy, painted, rng, demo.contrast)
            _save_image(image_dir / entry, field, modes.get(index, "L"))
            drawn_images.append(drawn)
            boxes.extend((entry, *box) for box in image_boxes)
            index += 1
            progress.update()
    progress.close()

    views = np.where(np.random.default_rng(demo.seed).random(len(drawn_images)) < 0.3, "AP", "PA")
    table = layout.write(out_dir, drawn_images, views, demo.seed)
    io.write_csv(out_dir / DEMO_BOXES, pd.DataFrame(boxes, columns=BBOX_COLUMNS))
    return table
