"""A prediction as DICOM objects a radiologist's viewer already shows, in the study of the image it
describes (issue #34; docs/dicom.md): a **Structured Report** with the findings, and a **Secondary
Capture** with the Grad-CAM++ heat map of each positive finding. Written with highdicom, which builds
valid SR and SC instances and checks their templates.

The SR follows DICOM's TID 1500 "Measurement Report" (PS3.16), which IHE's AI Results profile (AIR)
uses for AI results: one TID 1501 measurement group for the whole image, holding

- the model's identity as TID 4019 "Algorithm Identification": name, version, and the sha256 of the
  weights as a parameter;
- per finding, its probability (a TID 300 measurement, unit ``1``: no units, UCUM) and whether it is
  positive at its validation threshold (a qualitative evaluation, SNOMED CT Present / Absent), and the
  threshold itself (a measurement under chexnet's private coding scheme, :data:`PRIVATE_SCHEME`).

Each finding is named by a code from DICOM PS3.16 where one exists (SNOMED CT, as pydicom's code
dictionary carries them: :data:`FINDING_CODES`), else by the private scheme. The series description
and the SR's document say **not for diagnostic use** unless the user states otherwise. Both objects get
new UIDs and a new series each, in the source's study, with its patient module copied (highdicom
copies the patient, study and specimen modules from the source); nothing else is copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

PRIVATE_SCHEME = "99CHEXNET"  # a private coding scheme designator (PS3.3 8.1: "99" prefixes a private one)
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
UTF8 = "ISO_IR 192"  # Specific Character Set: UTF-8 (PS3.3 C.12.1.1.2)
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902  # high numbers, out of the modality's usual range

# NIH ChestX-ray14's findings → (code, scheme, meaning) from DICOM PS3.16 (pydicom.sr.codedict, which is
# generated from it); the rest have none there and take the private scheme.
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "Cardiomegaly": ("287272002", "SCT", "Cardiomegaly"),
    "Edema": ("19242006", "SCT", "Pulmonary edema"),
    "Effusion": ("60046008", "SCT", "Pleural effusion"),
    "Fibrosis": ("112674009", "SCT", "Fibrosis"),
    "Mass": ("4147007", "SCT", "Mass"),
    "Nodule": ("27925004", "SCT", "Nodule"),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax"),
}


@dataclass(frozen=True)
class ModelIdentity:
    """What the SR's Algorithm Identification names: the model, chexnet's version, the weights' sha256."""

    name: str
    sha256: str
    version: str = field(default_factory=lambda: _installed_version())


def _installed_version() -> str:
    """chexnet's version as installed (pyproject.toml), without importing the top-level package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chexnet")
    except PackageNotFoundError:
        return "unknown"


def finding_code(finding: str):
    """The coded concept of a finding: DICOM PS3.16's where it has one, else chexnet's private code."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = FINDING_CODES.get(finding, (_private_value(finding), PRIVATE_SCHEME, finding))
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _private_value(name: str) -> str:
    """A short, stable private code value for a name (Code Value is at most 16 characters)."""
    import hashlib

    return "F" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:12].upper()


def _threshold_code(finding: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value="T" + _private_value(finding)[1:], scheme_designator=PRIVATE_SCHEME,
                        meaning=f"Threshold for {finding}"[:64])  # fmt: skip


def _device_context(model: ModelIdentity):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    attributes = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name="chexnet", manufacturer_name="chexnet", model_name=model.name[:64]
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=attributes
        )
    )


def structured_report(
    source,
    probabilities: Mapping[str, float],
    thresholds: Mapping[str, float],
    model: ModelIdentity,
    *,
    for_diagnosis: bool = False,
):
    """The TID 1500 SR of one image's prediction (module docstring), in ``source``'s study."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name[:64], version=model.version, parameters=[f"sha256={model.sha256}"]
    )
    measurements, evaluations = [], []
    for finding, probability in probabilities.items():
        code = finding_code(finding)
        measurements.append(hd.sr.Measurement(name=code, value=float(probability), unit=codes.UCUM.NoUnits,
                                              algorithm_id=algorithm))  # fmt: skip
        measurements.append(hd.sr.Measurement(name=_threshold_code(finding), value=float(thresholds[finding]),
                                              unit=codes.UCUM.NoUnits, algorithm_id=algorithm))  # fmt: skip
        positive = probability >= thresholds[finding]
        evaluations.append(hd.sr.QualitativeEvaluation(name=code, value=codes.SCT.Present if positive
                                                       else codes.SCT.Absent))  # fmt: skip
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="chexnet findings"),
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    report = hd.sr.MeasurementReport(
        observation_context=_device_context(model),
        procedure_reported=CodedConcept(
            value="CXR-AI", scheme_designator=PRIVATE_SCHEME, meaning="Chest radiograph findings by chexnet"
        ),
        imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport,
    )
    use = "" if for_diagnosis else f" - {NOT_FOR_DIAGNOSIS}"
    document = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="chexnet",
        series_description=f"chexnet findings{use}"[:64],
        is_complete=True,
    )
    document.SpecificCharacterSet = UTF8  # finding names in any language (the source's may be Latin-1)
    return document


def heat_map_capture(
    source,
    overlay_rgb: np.ndarray,
    finding: str,
    probability: float,
    model: ModelIdentity,
    *,
    instance_number: int = 1,
    series_uid: str | None = None,
    for_diagnosis: bool = False,
):
    """A Secondary Capture of one finding's Grad-CAM++ overlay (RGB, 8 bits), its label burned in: that
    it is a model's heat map, of which finding, at what probability, and not for diagnostic use."""
    import highdicom as hd

    image = _with_label(overlay_rgb, f"chexnet heat map: {finding} p={probability:.3f}",
                        "" if for_diagnosis else NOT_FOR_DIAGNOSIS)  # fmt: skip
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=image,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid or hd.UID(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer="chexnet",
        patient_orientation=_orientation(source),
    )
    capture.SpecificCharacterSet = UTF8
    capture.BurnedInAnnotation = "YES"
    capture.SeriesDescription = f"chexnet heat maps{'' if for_diagnosis else ' - ' + NOT_FOR_DIAGNOSIS}"[:64]
    capture.ImageComments = f"Grad-CAM++ of {finding} by {model.name} (sha256 {model.sha256[:16]}…)"[:10240]
    return capture


def _orientation(source) -> tuple[str, str]:
    value = getattr(source, "PatientOrientation", None)
    if value and len(value) == 2 and all(str(v) for v in value):
        return (str(value[0]), str(value[1]))
    return ("L", "F")  # a PA chest film's usual rows → patient left, columns → feet


def _with_label(rgb: np.ndarray, *lines: str) -> np.ndarray:
    """``rgb`` with a black band on top holding ``lines`` in white (PIL's built-in font)."""
    from PIL import Image, ImageDraw

    text = [line for line in lines if line]
    band = 14 * len(text) + 6
    canvas = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + band), "black")
    canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)), (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(text):
        draw.text((4, 3 + 14 * i), line, fill="white")
    return np.asarray(canvas)


def results_for(source, answer, loaded, overlays: list[np.ndarray]) -> list:
    """The SR of ``answer`` and a heat-map SC per positive finding (``overlays``, in ``answer.positives``'
    order, one series for all of them) for the opened DICOM ``source``: what ``--dicom-out`` writes and
    ``chexnet listen`` sends back."""
    from pathlib import Path

    import highdicom as hd

    model = ModelIdentity(Path(loaded.path).stem, loaded.sha256)
    results = [structured_report(source, answer.probabilities, loaded.thresholds, model)]
    series = hd.UID()
    for number, (finding, overlay) in enumerate(zip(answer.positives, overlays, strict=True), start=1):
        results.append(heat_map_capture(source, overlay, finding, answer.probabilities[finding], model,
                                        instance_number=number, series_uid=series))  # fmt: skip
    return results


def write_results(path, answer, loaded, overlays: list[np.ndarray], *, out_dir, stem: str) -> dict[str, str]:
    """:func:`results_for` the DICOM file at ``path``, written atomically as ``<out_dir>/<stem>_SR.dcm``
    and ``<stem>_SC_<Finding>.dcm``; returns what was written, by kind."""
    from pathlib import Path

    from chexnet.core import io
    from chexnet.core.labels import file_safe
    from chexnet.data.dicom import open_dicom

    results = results_for(open_dicom(path), answer, loaded, overlays)  # checked again, as predict read it
    names = ["sr", *(f"sc:{finding}" for finding in answer.positives)]
    files = [f"{stem}_SR.dcm", *(f"{stem}_SC_{file_safe(finding)}.dcm" for finding in answer.positives)]
    written: dict[str, str] = {}
    for name, file, dataset in zip(names, files, results, strict=True):
        target = Path(out_dir) / file
        io.write_with(target, lambda tmp, dataset=dataset: dataset.save_as(tmp, enforce_file_format=True))
        written[name] = str(target)
    return written
