"""The one shape of a prediction, typed: what ``chexnet predict --json`` prints and ``POST /predict``
answers (both build it here, so the two cannot drift: tests/system/test_serve.py compares them on the same
files), what the OpenAPI page (``/docs``, ``/openapi.json``) shows, every error included, and what a
schema-based fuzzer checks the service against."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from chexnet.data.pixels import ImageReadError
from chexnet.deploy.uploads import FileError
from chexnet.engine.opened import LoadedModel

log = logging.getLogger(__name__)


class FileAnswer(BaseModel):
    """One uploaded file: its probabilities and positives, or its own error (the others still run)."""

    file: str = Field(description="the file name as uploaded")
    ok: bool
    probabilities: dict[str, float] | None = Field(None, description="sigmoid probability per finding")
    positives: list[str] | None = Field(None, description="findings at or above their threshold")
    heatmaps: dict[str, str] | None = Field(
        None,
        description="Grad-CAM++ overlay per positive finding: a data:image/png;base64 URL from the "
        "service, the PNG file written from chexnet predict --heatmaps",
    )
    heatmaps_skipped: str | None = Field(None, description="why heat maps were not made for this file")
    dicom: dict[str, str] | None = Field(
        None,
        description="chexnet predict --dicom-out: the Structured Report and heat-map Secondary Captures "
        "written for a DICOM input, in its study",
    )
    status: int | None = Field(None, description="this file's HTTP-like status when not ok (413, 415, 422)")
    error: str | None = Field(None, description="why this file was not read")


class ModelAnswer(BaseModel):
    """Which model answered: the sha256 of its weights file, its findings in output order, its size."""

    sha256: str
    findings: list[str]
    image_size: int


class ThresholdsAnswer(BaseModel):
    """The operating points applied, and where they came from (a thresholds.json, the model's record,
    or the 0.5 default: :mod:`chexnet.model.thresholds`)."""

    source: str
    values: dict[str, float]


class PredictAnswer(BaseModel):
    """A prediction: the model, the engine, the thresholds applied, and one answer per file in order."""

    model: ModelAnswer
    engine: str
    thresholds: ThresholdsAnswer
    results: list[FileAnswer]


def thresholds_answer(loaded: LoadedModel) -> ThresholdsAnswer:
    """The thresholds the model was opened with and their source (``/predict`` and ``/model`` both)."""
    points = loaded.operating_points
    return ThresholdsAnswer(source=points.source, values=points.values)


def prediction_document(loaded: LoadedModel, engine: str, results: list[FileAnswer]) -> PredictAnswer:
    """The answer for ``results`` of the model ``loaded`` run by ``engine`` (its name)."""
    return PredictAnswer(
        model=ModelAnswer(sha256=loaded.sha256, findings=loaded.labels, image_size=loaded.image_size),
        engine=engine,
        thresholds=thresholds_answer(loaded),
        results=results,
    )


def file_failed(name: str, error: Exception) -> FileAnswer:
    """A file that could not be answered, with the status of its reason (413: too large to decode, 415:
    not an image by its content, 422: unreadable); the other files still run."""
    if isinstance(error, FileError):
        return FileAnswer(file=name, ok=False, status=error.status, error=str(error))
    if isinstance(error, ImageReadError):
        status = 413 if error.reason == "too_large" else 422
        return FileAnswer(file=name, ok=False, status=status, error=str(error))
    log.warning("a file failed: %s", type(error).__name__)  # no file name: it may hold patient data
    message = " ".join(str(error).split())[:300]
    return FileAnswer(
        file=name, ok=False, status=422, error=f"cannot be read: {type(error).__name__}: {message}"
    )


def file_answered(name: str, probabilities, labels: list[str], thresholds: dict[str, float]) -> FileAnswer:
    """A file's probabilities and the findings at or above their thresholds."""
    values = [float(p) for p in probabilities]
    positives = [label for label, p in zip(labels, values, strict=True) if p >= thresholds[label]]
    return FileAnswer(
        file=name, ok=True, probabilities=dict(zip(labels, values, strict=True)), positives=positives
    )


class ErrorAnswer(BaseModel):
    """A refused request: one line that says why and what to do."""

    error: str


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the refusals a route may answer with."""
    meaning = {
        400: "the request is malformed (no files, too many files, a bad parameter)",
        401: "the bearer token is missing or wrong",
        411: "the request has no Content-Length",
        413: "the request is larger than the service takes",
        415: "not a multipart upload",
        500: "an internal error (the server's log says why)",
        504: "not answered in time",
    }
    return {status: {"model": ErrorAnswer, "description": meaning[status]} for status in statuses}
