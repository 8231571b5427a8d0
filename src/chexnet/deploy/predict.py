"""predict: read new chest X-rays (PNG, JPEG, DICOM), say what the model finds, optionally with heat maps.

Images are read in any pixel mode, batched through the model, and each finding is reported against its
validation-chosen threshold from the evaluate stage (``models/thresholds.json``). A file that cannot be
read is reported with its reason; the others still run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from chexnet.core.labels import file_safe
from chexnet.data.images import is_dicom, load_input, to_cache_pixels
from chexnet.data.input_spec import InputSpec
from chexnet.deploy import dicom_results
from chexnet.deploy.answers import FileAnswer, file_answered, file_failed
from chexnet.engine import inference
from chexnet.engine.opened import LoadedModel
from chexnet.evaluation import figures
from chexnet.explain import cam
from chexnet.model.network import Network

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for PNG, JPEG and DICOM files (sorted), DICOM also
    without a suffix (PACS exports: ``SE0001/IM0001``, found by the ``DICM`` magic)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(
                p
                for p in item.rglob("*")
                if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and is_dicom(p)))
            )
        else:
            files.append(item)
    return files


def _batches(
    files: list[Path], spec: InputSpec, batch_size: int
) -> Iterator[tuple[list[Path], np.ndarray | None, list]]:
    """Decoded batches, fitted to a square by the model's rule; unreadable files come back one by one
    with their error."""
    good: list[Path] = []
    pixels: list[np.ndarray] = []
    failures: list[tuple[Path, Exception]] = []
    for path in files:
        try:
            pixels.append(load_input(path, spec))
            good.append(path)
        except Exception as error:  # any reader failure is that file's answer, never fatal
            failures.append((path, error))
        if len(good) == batch_size:
            yield good, np.stack(pixels), failures
            good, pixels, failures = [], [], []
    if good or failures:
        yield good, (np.stack(pixels) if pixels else None), failures


def unique_stems(files: list[Path]) -> dict[Path, str]:
    """A heat-map file stem per input: its own stem, or, where two inputs share one (``a/x.png`` and
    ``b/x.png``), the path's folders joined in, so no overlay overwrites another."""
    counts: dict[str, int] = {}
    for path in files:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems = {}
    for path in files:
        if counts[path.stem] == 1:
            stems[path] = path.stem
        else:
            parts = [*path.parent.parts[-3:], path.stem]
            stems[path] = "__".join(part.strip("/\\") or "_" for part in parts if part not in ("", "."))
    if len(set(stems.values())) < len(stems):  # still equal (deep twins): number them
        stems = {path: f"{stem}__{i}" for i, (path, stem) in enumerate(stems.items())}
    return stems


def predict_files(
    loaded: LoadedModel,
    files: list[Path],
    *,
    batch_size: int = 16,
    heatmaps: Path | None = None,
    engine: object | None = None,
    dicom_out: Path | None = None,
) -> list[FileAnswer]:
    """An answer for every file, in order: its probabilities and positives at the model's thresholds, or
    its own error; heat maps of the positives under ``heatmaps`` if asked (the model must have been
    opened with a layer).

    ``engine`` (:mod:`chexnet.deploy.engines`) computes the probabilities, PyTorch in the model's
    precision when none is given; heat maps are always PyTorch's (they need gradients), and only
    positives pay for one. ``dicom_out``: for each DICOM input, its results as DICOM objects in its study
    (:mod:`chexnet.deploy.dicom_results`: an SR, and an SC heat map per positive)."""
    labels, thresholds, network = loaded.labels, loaded.thresholds, loaded.network
    stems = unique_stems(files)
    answers: dict[Path, FileAnswer] = {}
    with tqdm(total=len(files), desc="predict", unit="img") as bar:
        for good, pixels, failures in _batches(files, loaded.spec, batch_size):
            for path, error in failures:
                log.error("%s: cannot be read: %s", path, error)
                answers[path] = file_failed(str(path), error)
            if pixels is not None:
                if engine is None:
                    probabilities = inference.predict_images(network, pixels, loaded.device, loaded.precision)
                else:
                    probabilities = engine.probabilities(pixels)
                for path, image, p in zip(good, pixels, probabilities, strict=True):
                    answer = file_answered(str(path), p, labels, thresholds)
                    if heatmaps is not None and answer.positives:
                        written = write_overlays(
                            loaded, image, path, answer.positives, p, out_dir=heatmaps, stem=stems[path]
                        )
                        answer.heatmaps = dict(zip(answer.positives, written, strict=True))
                    if dicom_out is not None and is_dicom(path):
                        overlays = overlay_images(loaded, image, answer.positives) if answer.positives else []
                        answer.dicom = dicom_results.write_results(
                            path, answer, loaded, overlays, out_dir=dicom_out, stem=stems[path]
                        )
                    answers[path] = answer
            bar.update(len(good) + len(failures))
    return [answers[path] for path in files]


def explain_file(
    path: str | Path, loaded: LoadedModel, *, out_dir: str | Path, findings: list[str] | None = None
) -> list[dict[str, object]]:
    """Explain one image file (any format :func:`chexnet.data.images.load_input` reads: PNG, JPEG, DICOM).

    Heat maps for ``findings`` if given, else for every finding at or above its threshold, else for the
    single most probable finding. Writes ``<stem>_<Finding>.png`` overlays under ``out_dir`` and returns
    one row per finding explained.
    """
    labels = loaded.labels
    image = load_input(path, loaded.spec)
    with torch.no_grad():
        probabilities = inference.predict_images(
            loaded.network, image[None], loaded.device, loaded.precision
        )[0]
    if findings is None:
        findings = [label for j, label in enumerate(labels) if probabilities[j] >= loaded.thresholds[label]]
        findings = findings or [labels[int(np.argmax(probabilities))]]
    overlays = write_overlays(loaded, image, Path(path), findings, probabilities, out_dir=Path(out_dir))
    return [
        {"finding": label, "probability": float(probabilities[labels.index(label)]), "overlay": overlay}
        for label, overlay in zip(findings, overlays, strict=True)
    ]


def overlay_images(
    loaded: LoadedModel, image: np.ndarray, findings: list[str], *, network: Network | None = None
) -> list[np.ndarray]:
    """Grad-CAM++ overlays (RGB, 8 bits) of one image, as the model is fed it, for each finding, on the
    layer the model was opened with; ``network``: a copy of the model's own to run them on."""
    labels = loaded.labels
    indices = [labels.index(label) for label in findings]
    heats, _ = cam.grad_cam_pp_batch(
        network or loaded.network,
        np.repeat(image[None], len(indices), axis=0),
        indices,
        target_layer=loaded.layer,
        device=loaded.device,
        precision=loaded.precision,
    )
    shown = to_cache_pixels(image)  # shown in 8 bits
    return [cam.overlay(shown, heat) for heat in heats]


def write_overlays(
    loaded: LoadedModel,
    image: np.ndarray,
    path: Path,
    findings: list[str],
    probabilities: np.ndarray,
    *,
    out_dir: Path,
    stem: str | None = None,
    network: Network | None = None,
) -> list[str]:
    """:func:`overlay_images` beside the image as ``<out_dir>/<stem>_<Finding>.png`` (the service's
    heat-map worker passes its own ``network``)."""
    labels = loaded.labels
    written, shown = [], to_cache_pixels(image)
    for label, blended in zip(
        findings, overlay_images(loaded, image, findings, network=network), strict=True
    ):
        target = out_dir / f"{stem or path.stem}_{file_safe(label)}.png"
        title = f"{path.name} — {label}: p={probabilities[labels.index(label)]:.3f}"
        figures.cam_figure(target, shown, blended, title)
        written.append(str(target))
    return written
