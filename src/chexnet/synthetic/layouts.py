"""How the demo set is written in each preset's table layout: one writer per preset, by its name.

A preset (:mod:`chexnet.data.presets`) says how a table is *read*; a layout here says how the demo stage
*writes* a stand-in in that shape (file names, columns, spellings), so that every reader is exercised on
a set whose truth is known. The layouts know the presets (their reading constants), the presets do not
know the layouts: the data layer carries no demo code, and a layout edit reruns only the check and demo
stages. ``demo.layout`` names one of :data:`LAYOUTS`; a test keeps their names those of the presets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexnet.core import io
from chexnet.core.labels import NIH14, NO_FINDING, SEPARATOR
from chexnet.data.presets import padchest, rsna, vindr
from chexnet.data.tables import DataError


@dataclass(frozen=True)
class DrawnImage:
    """One generated demo image's facts, before a layout decides its file name and table row."""

    patient: int
    follow_up: int
    index: int
    findings: frozenset[str]
    sex: str = "F"  # F | M: the patient's, drawn on its own stream (chexnet.synthetic.demo)
    age: int = 60  # years at this image


# A writer writes the layout's table file(s) under the demo folder and returns the main table; it gets
# the folder, the drawn images, each image's frontal view (PA/AP) and the demo seed.
Writer = Callable[[Path, list[DrawnImage], np.ndarray, int], pd.DataFrame]


@dataclass(frozen=True)
class Layout:
    """How the demo stage writes its set in one preset's layout."""

    table: str  # the main table under the demo folder (what data.table names)
    images: str  # the image folder under the demo folder ("": the demo folder itself)
    entry: Callable[[DrawnImage], str]  # an image's entry in the table (its path under the images)
    write: Writer


def get(name: str, key: str = "demo.layout") -> Layout:
    """The layout called ``name``; anything else is refused naming the param ``key`` and the choices."""
    if name not in LAYOUTS:
        raise DataError(f"params: {key} must be one of: {', '.join(LAYOUTS)}; got {name!r}")
    return LAYOUTS[name]


# --- what several layouts share --------------------------------------------------------------------


def nih_file_name(drawn: DrawnImage) -> str:
    """NIH's ``PPPPPPPP_FFF.png``: patient, then follow-up."""
    return f"{10000 + drawn.patient:08d}_{drawn.follow_up:03d}.png"


def findings_cells(drawn: list[DrawnImage]) -> list[str]:
    """Each image's ``|``-separated findings in NIH's order, ``No Finding`` for none (the long tables)."""
    return [SEPARATOR.join(f for f in NIH14 if f in d.findings) or NO_FINDING for d in drawn]


def _wide_value(rng: np.random.Generator, present: bool) -> float:
    """A CheXpert-style cell: mostly 1.0 when present (15 % uncertain, -1.0), mostly blank when absent
    (10 % an explicit 0.0, 5 % uncertain): so every uncertainty and blank policy has work to do."""
    draw = rng.random()
    if present:
        return -1.0 if draw < 0.15 else 1.0
    return 0.0 if draw < 0.10 else (-1.0 if draw < 0.15 else np.nan)


def wide_labels(drawn: list[DrawnImage], seed: int) -> pd.DataFrame:
    """The wide tables' finding columns (CheXpert, MIMIC): ``No Finding`` first, then NIH's 14."""
    rng = np.random.default_rng(seed + 1)  # its own stream: the images stay those of the seed layout
    wide = pd.DataFrame({f: [_wide_value(rng, f in d.findings) for d in drawn] for f in NIH14})
    wide.insert(0, NO_FINDING, [1.0 if not d.findings else np.nan for d in drawn])
    return wide


# --- seed: the seed's gold table -------------------------------------------------------------------

SEED_TABLE = "table.parquet"


def _write_seed(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "imagem": [nih_file_name(d) for d in drawn],
            "patologia": findings_cells(drawn),
            "paciente_id": [10000 + d.patient for d in drawn],
            "sexo": [d.sex for d in drawn],
            "idade": [d.age for d in drawn],
            "incidencia": views,
        }
    )
    io.write_parquet(out_dir / SEED_TABLE, table)
    return table


# --- nih: Data_Entry_2017.csv ----------------------------------------------------------------------

NIH_TABLE = "Data_Entry_2017.csv"


def _write_nih(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "Image Index": [nih_file_name(d) for d in drawn],
            "Finding Labels": findings_cells(drawn),
            "Follow-up #": [d.follow_up for d in drawn],
            "Patient ID": [10000 + d.patient for d in drawn],
            "Patient Age": [d.age for d in drawn],
            "Patient Gender": [d.sex for d in drawn],
            "View Position": views,
        }
    )
    io.write_csv(out_dir / NIH_TABLE, table)
    return table


# --- chexpert: train.csv, one column per finding ---------------------------------------------------

CHEXPERT_TABLE = "CheXpert-v1.0-small/train.csv"


def _chexpert_entry(drawn: DrawnImage) -> str:
    patient, study = 10000 + drawn.patient, drawn.follow_up
    return f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study + 1}/view1_frontal.jpg"


def _write_chexpert(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    meta = pd.DataFrame(
        {
            "Path": [_chexpert_entry(d) for d in drawn],
            "Sex": ["Female" if d.sex == "F" else "Male" for d in drawn],
            "Age": [d.age for d in drawn],
            "Frontal/Lateral": "Frontal",
            "AP/PA": views,
        }
    )
    table = pd.concat([meta, wide_labels(drawn, seed)], axis=1)
    io.write_csv(out_dir / CHEXPERT_TABLE, table)
    return table


# --- mimic: the -chexpert table, -metadata and MIMIC-IV's patients ---------------------------------

MIMIC_TABLE = "mimic-cxr-2.0.0-chexpert.csv"
MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"  # data.metadata_table (MIMIC ships it gzipped)
MIMIC_PATIENTS = "patients.csv"  # MIMIC-IV hosp/patients.csv(.gz): data.demographics_table
MIMIC_ANCHOR_YEAR = 2150  # MIMIC-IV's shifted years lie in 2100-2200


def _dicom_id(drawn: DrawnImage) -> str:
    return f"{drawn.index:08x}-{drawn.patient:08x}-demo"


def _subject_id(drawn: DrawnImage) -> int:
    """The demo patient's MIMIC-style ``subject_id`` (eight digits, as MIMIC's are)."""
    return 10_000_000 + 10000 + drawn.patient


def _mimic_entry(drawn: DrawnImage) -> str:
    subject = _subject_id(drawn)
    return f"files/p{str(subject)[:2]}/p{subject}/s{50_000_000 + drawn.index}/{_dicom_id(drawn)}.jpg"


def _write_mimic(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    keys = pd.DataFrame(
        {
            "subject_id": [_subject_id(d) for d in drawn],
            "study_id": [50_000_000 + d.index for d in drawn],
        }
    )
    table = pd.concat([keys, wide_labels(drawn, seed)], axis=1)
    metadata = keys.assign(dicom_id=[_dicom_id(d) for d in drawn], ViewPosition=views)
    io.write_csv(out_dir / MIMIC_TABLE, table)
    io.write_csv(out_dir / MIMIC_METADATA, metadata[["dicom_id", "subject_id", "study_id", "ViewPosition"]])
    io.write_csv(out_dir / MIMIC_PATIENTS, _mimic_patients(drawn))
    return table


def _mimic_patients(drawn: list[DrawnImage]) -> pd.DataFrame:
    """MIMIC-IV's ``patients`` columns, one row a patient: ``anchor_age`` is the age at the patient's
    first image, as MIMIC-IV gives an age in one (shifted) anchor year, not at each study."""
    first: dict[int, DrawnImage] = {}
    for d in drawn:
        if d.patient not in first or d.follow_up < first[d.patient].follow_up:
            first[d.patient] = d
    rows = sorted(first.values(), key=lambda d: d.patient)
    return pd.DataFrame(
        {
            "subject_id": [_subject_id(d) for d in rows],
            "gender": [d.sex for d in rows],
            "anchor_age": [d.age for d in rows],
            "anchor_year": MIMIC_ANCHOR_YEAR,
            "anchor_year_group": "2011 - 2013",
            "dod": "",
        }
    )


# --- padchest: a Python-list string of findings in PadChest's vocabulary ---------------------------

PADCHEST_TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
# The demo's findings in PadChest's own vocabulary (its terms for NIH's 14), so that an NIH-named model
# meets them only through aliases (params.yaml's default external set).
PADCHEST_NAMES = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Effusion": "pleural effusion",
    "Infiltration": "infiltrates",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Edema": "pulmonary edema",
    "Emphysema": "emphysema",
    "Fibrosis": "pulmonary fibrosis",
    "Pleural_Thickening": "pleural thickening",
    "Hernia": "hiatal hernia",
}


def _padchest_entry(drawn: DrawnImage) -> str:
    return f"2168{drawn.patient:06d}{drawn.index:06d}_{drawn.follow_up:02d}.png"


def _padchest_labels(drawn: DrawnImage) -> str:
    """A PadChest-style list string in its vocabulary (:data:`PADCHEST_NAMES`), ``normal`` for none."""
    names = [PADCHEST_NAMES[f] for f in NIH14 if f in drawn.findings] or [padchest.NORMAL]
    return str(names)


def _write_padchest(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "ImageID": [_padchest_entry(d) for d in drawn],
            "ImageDir": 0,
            "StudyDate_DICOM": [f"{2010 + d.follow_up % 8}0601" for d in drawn],
            "PatientID": [f"pc{10000 + d.patient}" for d in drawn],
            "PatientBirth": [2010 + d.follow_up % 8 - d.age for d in drawn],
            "PatientSex_DICOM": [d.sex for d in drawn],
            "Projection": views,
            "Labels": [_padchest_labels(d) for d in drawn],
        }
    )
    io.write_csv(out_dir / PADCHEST_TABLE, table)
    return table


# --- vindr: one row per reader and finding ---------------------------------------------------------

VINDR_TABLE = "annotations_train.csv"


def _vindr_image_id(drawn: DrawnImage) -> str:
    return f"{drawn.index:08x}{drawn.patient:08x}demo"


def _vindr_entry(drawn: DrawnImage) -> str:
    return _vindr_image_id(drawn) + ".png"


def _write_vindr(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    """Three readers an image; each reports every drawn finding (no boxes here: BBox_List.csv has them)."""
    rows = []
    for d in drawn:
        for reader in ("R1", "R2", "R3"):
            found = [f for f in NIH14 if f in d.findings] or [vindr.NO_FINDING_CLASS]
            rows += [{"image_id": _vindr_image_id(d), "class_name": f, "rad_id": reader} for f in found]
    table = pd.DataFrame(rows).assign(x_min=np.nan, y_min=np.nan, x_max=np.nan, y_max=np.nan)
    io.write_csv(out_dir / VINDR_TABLE, table)
    return table


# --- rsna: pneumonia or not, and the DICOM-header table --------------------------------------------

RSNA_TABLE = "stage_2_train_labels.csv"
RSNA_HEADERS = "stage_2_train_images_dicom_headers.csv"  # data.metadata_table


def _rsna_entry(drawn: DrawnImage) -> str:
    return f"{drawn.index:08x}-{drawn.patient:04x}-demo.png"


def _write_rsna(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    ids = [_rsna_entry(d).removesuffix(".png") for d in drawn]
    table = pd.DataFrame(
        {
            "patientId": ids,
            "x": np.nan,
            "y": np.nan,
            "width": np.nan,
            "height": np.nan,
            "Target": [int(rsna.FINDING in d.findings) for d in drawn],
        }
    )
    headers = pd.DataFrame(
        {
            "PatientID": ids,
            "PatientSex": [d.sex for d in drawn],
            "PatientAge": [d.age for d in drawn],
            "ViewPosition": views,
        }
    )
    io.write_csv(out_dir / RSNA_TABLE, table)
    io.write_csv(out_dir / RSNA_HEADERS, headers)
    return table


# --- google_nih: four adjudicated findings, YES / NO -----------------------------------------------

GOOGLE_NIH_TABLE = "google2019_nih-chest-xray-labels.csv"


def _write_google_nih(out_dir: Path, drawn: list[DrawnImage], views: np.ndarray, seed: int) -> pd.DataFrame:
    """The four findings from the drawn ones: nodule or mass, airspace opacity (consolidation,
    pneumonia, infiltration), pneumothorax; the demo paints no fracture."""

    def yes(d: DrawnImage, *names: str) -> str:
        return "YES" if d.findings & set(names) else "NO"

    table = pd.DataFrame(
        {
            "Image Index": [nih_file_name(d) for d in drawn],
            "Patient ID": [10000 + d.patient for d in drawn],
            "Patient Age": [d.age for d in drawn],
            "Patient Gender": [d.sex for d in drawn],
            "View Position": views,
            "Fracture": "NO",
            "Pneumothorax": [yes(d, "Pneumothorax") for d in drawn],
            "Airspace opacity": [yes(d, "Consolidation", "Pneumonia", "Infiltration") for d in drawn],
            "Nodule or mass": [yes(d, "Nodule", "Mass") for d in drawn],
            "Set Id": "test",
        }
    )
    io.write_csv(out_dir / GOOGLE_NIH_TABLE, table)
    return table


LAYOUTS: dict[str, Layout] = {
    "seed": Layout(SEED_TABLE, "images", nih_file_name, _write_seed),
    "nih": Layout(NIH_TABLE, "images", nih_file_name, _write_nih),
    "chexpert": Layout(CHEXPERT_TABLE, "", _chexpert_entry, _write_chexpert),
    "mimic": Layout(MIMIC_TABLE, "", _mimic_entry, _write_mimic),
    "padchest": Layout(PADCHEST_TABLE, "images", _padchest_entry, _write_padchest),
    "vindr": Layout(VINDR_TABLE, "images", _vindr_entry, _write_vindr),
    "rsna": Layout(RSNA_TABLE, "images", _rsna_entry, _write_rsna),
    "google_nih": Layout(GOOGLE_NIH_TABLE, "images", nih_file_name, _write_google_nih),
}
