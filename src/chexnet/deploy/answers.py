"""The shapes of the service's answers, typed, so that the OpenAPI page (``/docs``, ``/openapi.json``)
shows what a client gets back, every error included, and a schema-based fuzzer can check the service
against it (tests/test_serve.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FileAnswer(BaseModel):
    """One uploaded file: its probabilities and positives, or its own error (the others still run)."""

    file: str = Field(description="the file name as uploaded")
    ok: bool
    probabilities: dict[str, float] | None = Field(None, description="sigmoid probability per finding")
    positives: list[str] | None = Field(None, description="findings at or above their threshold")
    heatmaps: dict[str, str] | None = Field(
        None, description="Grad-CAM++ overlay per positive finding, a data:image/png;base64 URL"
    )
    heatmaps_skipped: str | None = Field(None, description="why heat maps were not made for this file")
    status: int | None = Field(None, description="this file's HTTP-like status when not ok (413, 415, 422)")
    error: str | None = Field(None, description="why this file was not read")


class PredictAnswer(BaseModel):
    """``POST /predict``: the engine, the thresholds applied, and one answer per file in order."""

    engine: str
    thresholds: dict[str, float]
    results: list[FileAnswer]


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
