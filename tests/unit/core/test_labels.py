import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import MultiLabelBinarizer

from chexnet.core.labels import (
    NIH14,
    NO_FINDING,
    LabelList,
    LabelMismatchError,
    LabelOptions,
    RareLabelError,
    UnknownLabelError,
    binarize,
    binarizer_order,
    choose,
    file_safe,
    findings_string,
    parse_labels_argument,
    seed_checkpoint_labels,
    split_findings,
)


def test_nih14_is_chexnets_order_and_spelling():
    assert NIH14[0] == "Atelectasis" and NIH14[-1] == "Hernia"
    assert len(NIH14) == 14 and "Pleural_Thickening" in NIH14
    assert NO_FINDING not in NIH14


def test_from_data_is_the_seeds_multilabelbinarizer_order():
    cells = ["Effusion|Atelectasis", NO_FINDING, "Hernia", "Consolidation|Effusion"]
    rows = [split_findings(cell) for cell in cells]
    seed = MultiLabelBinarizer().fit(rows)  # the seed's call: no classes=, fitted on the data
    positives = {"Effusion": 2, "Atelectasis": 1, "Hernia": 1, "Consolidation": 1}
    labels, dropped = choose(positives, LabelOptions(min_positives=1), "seed", where="t")
    assert labels.names == tuple(seed.classes_) == ("Atelectasis", "Consolidation", "Effusion", "Hernia")
    assert labels.source == "from_data" and dropped == {}
    assert np.array_equal(binarize(rows, labels), seed.transform(rows))
    assert binarizer_order(NIH14)[2] == "Consolidation"  # sorted position 2: the example


def test_auto_mode_per_preset_and_explicit_lists():
    options = LabelOptions(min_positives=1)
    counts = dict.fromkeys(NIH14, 5)
    assert choose(counts, options, "nih", where="t")[0].names == NIH14  # NIH's table: the paper's order
    assert choose(counts, options, "seed", where="t")[0].names == tuple(sorted(NIH14))
    explicit = LabelOptions(spec=("Mass", "Edema"), min_positives=1)
    with pytest.raises(UnknownLabelError, match=r"'Effusion' ×5"):
        choose(counts, explicit, "seed", where="t")
    labels, _ = choose({"Mass": 3, "Edema": 2}, explicit, "seed", where="t")
    assert labels.names == ("Mass", "Edema") and labels.source == "explicit"


def test_no_finding_token_and_aliases_are_exact_tokens():
    portuguese = LabelOptions(no_finding="Sem Achados", aliases={"Derrame Pleural": "Derrame"})
    assert split_findings("Sem Achados", no_finding="Sem Achados") == []
    assert split_findings(
        " Nódulo | Derrame Pleural ", no_finding="Sem Achados", aliases=portuguese.aliases
    ) == [
        "Nódulo",
        "Derrame",
    ]
    # never substring matching: "Pleural Effusion" is not "Effusion" unless an alias says so
    assert split_findings("Pleural Effusion|No Finding") == ["Pleural Effusion"]
    assert split_findings("Pleural Effusion", aliases={"Pleural Effusion": "Effusion"}) == ["Effusion"]


def test_rare_findings_stop_unless_dropped():
    counts = {"Mass": 40, "Hernia": 2, "Edema": 12}
    with pytest.raises(RareLabelError, match=r"'Hernia' ×2.*drop_rare"):
        choose(counts, LabelOptions(min_positives=10), "seed", where="t")
    labels, dropped = choose(counts, LabelOptions(min_positives=10, drop_rare=True), "seed", where="t")
    assert labels.names == ("Edema", "Mass") and dropped == {"Hernia": 2}
    # an explicit finding the table never shows is rare too (0 positives), never a silent all-negative
    with pytest.raises(RareLabelError, match=r"'Fibrosis' ×0"):
        choose({"Mass": 40}, LabelOptions(spec=("Mass", "Fibrosis"), min_positives=1), "seed", where="t")


def test_names_that_clash_with_index_columns_are_refused():
    for bad in (("image", "Mass"), ("Mass", "Mass"), ("p_Mass",), (" Mass",)):
        with pytest.raises(LabelMismatchError):
            LabelList(bad, "explicit")


def test_findings_string_round_trip_and_masked_entries():
    labels = LabelList(NIH14, "nih14")
    for cell in ["Mass|Nodule", NO_FINDING, "Cardiomegaly|Edema|Hernia"]:
        assert findings_string(binarize([split_findings(cell)], labels)[0], NIH14) == cell
    row = np.zeros(14)
    row[NIH14.index("Mass")], row[NIH14.index("Edema")] = 1, np.nan
    assert findings_string(row, NIH14) == "Mass|Edema?"


def test_seed_checkpoint_labels_and_the_labels_argument(tmp_path: Path):
    assert seed_checkpoint_labels(14).names == tuple(sorted(NIH14))
    assert seed_checkpoint_labels(13) is None  # cannot be guessed
    assert parse_labels_argument("Derrame, Nódulo").names == ("Derrame", "Nódulo")
    (tmp_path / "l.json").write_text(json.dumps({"labels": ["A", "B"]}))
    (tmp_path / "l.txt").write_text("A\nB\n\n")
    assert parse_labels_argument(str(tmp_path / "l.json")).names == ("A", "B")
    assert parse_labels_argument(str(tmp_path / "l.txt")).names == ("A", "B")


def test_file_safe_names():
    assert file_safe("Nódulo") == "Nódulo" and file_safe("Pleural Effusion") == "Pleural_Effusion"
    assert file_safe("a/b") == "a_b" and file_safe("..") == "_"
