import numpy as np
import pytest

from chexnet.labels import LABELS, NO_FINDING, UnknownLabelError, binarize, findings_string, split_findings


def test_vocabulary_is_nih_order_and_spelling():
    assert LABELS[0] == "Atelectasis" and LABELS[-1] == "Hernia"
    assert len(LABELS) == 14 and "Pleural_Thickening" in LABELS
    assert NO_FINDING not in LABELS


def test_binarize_drops_no_finding_and_keeps_order():
    matrix = binarize(["Effusion|Atelectasis", NO_FINDING, "Hernia"])
    assert matrix.dtype == np.uint8 and matrix.shape == (3, 14)
    assert matrix[0, LABELS.index("Effusion")] == 1 and matrix[0, LABELS.index("Atelectasis")] == 1
    assert matrix[0].sum() == 2
    assert matrix[1].sum() == 0  # No Finding: all negative, the image stays
    assert matrix[2, 13] == 1


def test_unknown_label_is_an_error_with_counts():
    with pytest.raises(UnknownLabelError) as error:
        binarize(["Efusion", "Efusion|Mass", "Pneumonia", "Nodules"], column="patologia")
    message = str(error.value)
    assert "'Efusion' ×2" in message and "'Nodules' ×1" in message and "patologia" in message


def test_findings_string_round_trip():
    for cell in ["Mass|Nodule", NO_FINDING, "Cardiomegaly|Edema|Hernia"]:
        assert findings_string(binarize([cell])[0]) == cell
    assert split_findings(" Mass | No Finding ") == ["Mass"]
