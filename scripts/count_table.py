"""Print docs/data.md's count table (Markdown) from the real label tables torchxrayvision's wheel ships.

    python scripts/count_table.py > /tmp/counts.md

Every cell is chexnet's own reading (chexnet.data.counts, the same steps as prepare); the comparison with
torchxrayvision's dataset classes is tests/unit/data/test_counts.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chexnet.core.labels import LabelOptions
from chexnet.data.counts import label_counts

RUNS = [  # (dataset, preset, file, metadata file, views, [(uncertain, blank)])
    ("NIH ChestX-ray14", "nih", "Data_Entry_2017_v2020.csv.gz", "", ["PA", "AP"], [("ignore", "negative")]),
    ("CheXpert-v1.0-small train", "chexpert", "chexpert_train.csv.gz", "", ["PA", "AP"],
     [("ignore", "ignore"), ("ignore", "negative"), ("zeros", "negative"), ("ones", "negative")]),
    ("PadChest", "padchest", "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "", ["PA", "AP"],
     [("ignore", "negative")]),
    ("VinDr-CXR (Kaggle train)", "vindr", "vinbigdata-train.csv.gz", "", [], [("ignore", "negative")]),
    ("RSNA Pneumonia", "rsna", "kaggle_stage_2_train_labels.csv.zip",
     "kaggle_stage_2_train_images_dicom_headers.csv.gz", ["PA", "AP"], [("ignore", "negative")]),
    ("Google NIH relabels", "google_nih", "google2019_nih-chest-xray-labels.csv.gz", "", ["PA", "AP"],
     [("ignore", "negative")]),
]  # fmt: skip
PADCHEST_SHOWN = 25  # PadChest names ~190 findings: the most frequent are shown


def main() -> int:
    import torchxrayvision

    data = Path(os.path.dirname(torchxrayvision.__file__)) / "data"
    for title, preset, name, metadata, views, policies in RUNS:
        meta = str(data / metadata) if metadata else ""
        print(f"\n**{title}** (`preset: {preset}`, views {'+'.join(views) or 'all'})\n")
        tables = [(u, b, label_counts(preset, data / name, LabelOptions(min_positives=1, drop_rare=True,
                   uncertain=u, blank=b), views, meta)) for u, b in policies]  # fmt: skip
        first = tables[0][2]
        if preset == "padchest":
            first = first.sort_values("positives", ascending=False).head(PADCHEST_SHOWN)
        heads = [f"uncertain {u}, blank {b}" for u, b, _ in tables] if len(tables) > 1 else ["counts"]
        print(f"images: {int(first['images'].iloc[0]):,}. Each cell: positives / negatives / masked.\n")
        print("| finding | " + " | ".join(heads) + " |")
        print("|---|" + "---|" * len(heads))
        for finding in first["finding"]:
            cells = []
            for _, _, t in tables:
                r = t.set_index("finding").loc[finding]
                cells.append(f"{int(r.positives):,} / {int(r.negatives):,} / {int(r.masked):,}")
            print(f"| {finding} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
