"""Running the model: the device and precision, the loader, the batch on the device, probabilities.

One home for what training (its validation pass), evaluate, explain, predict and the benchmarks all do
to feed images through the network, so they cannot drift apart: which device (``auto``: CUDA when
present, the seed's choice), which autocast dtype and memory layout, a loader whose order depends only
on (seed, epoch), uint8 batches normalised on the device, test-time views, and probabilities in dataset
order (gathered across processes when several share the work).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from chexnet.config.evaluate import TTA_MODES
from chexnet.core.errors import ChexnetError
from chexnet.core.labels import LabelList
from chexnet.data.dataset import normalize_batch, split_dataset
from chexnet.data.input_spec import IMAGENET_INPUT, InputSpec
from chexnet.engine.distributed import Context, gather_rows
from chexnet.model.file import RunAs
from chexnet.model.network import LogitsView, Network

log = logging.getLogger(__name__)
SINGLE = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


# --- device and precision ---------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present (the seed's choice), else CPU. A device this machine does not have
    is refused before any work, saying what it has (``device`` param, ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ChexnetError(f"device {name!r} is not a device name: use auto, cpu, cuda or cuda:N") from error
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    has = f"this machine has {count} CUDA device(s)" if count else "this machine has no CUDA device"
    if device.type == "cuda" and (count == 0 or (device.index or 0) >= count):
        raise ChexnetError(f"device {name!r} is not available: {has}; use device: auto or cpu")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ChexnetError(f"device {name!r} (Apple GPU) is not available here: {has}; use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ChexnetError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), as torch's own cpuinfo reports.

    Asked, not tried: an autocast that merely runs (CPUs without these emulate bf16 through fp32 AVX512,
    or fall back to slow reference kernels) says nothing about whether it is faster.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def amp_dtype(option: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``option`` (``train.amp``, checked by the params schema) on ``device``
    (``None``: full fp32)."""
    if option == "off":
        return None
    if option == "auto" and device.type != "cuda":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if option == "fp16" and device.type != "cuda":
        raise ChexnetError("train.amp: fp16 needs CUDA; use bf16 or off on CPU")
    if option == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if option == "bf16" else torch.float16


@dataclass(frozen=True)
class Precision:
    """How a forward (and backward) pass runs: the autocast dtype (``None``: fp32) and memory layout."""

    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def of(cls, amp: str, channels_last: bool | str, device: torch.device) -> Precision:
        """What ``train.amp`` and ``train.channels_last`` choose on ``device``: evaluate and explain run
        the model as it was trained (on a CPU with native bf16: bf16 and channels_last; on CUDA: the
        autocast dtype, NCHW unless asked)."""
        return cls(amp_dtype(amp, device), on_cpu_by_default(channels_last, device))

    @classmethod
    def recorded(cls, run_as: RunAs | None, device: torch.device) -> Precision:
        """The precision a model's record says it was trained in, on ``device``, so that its thresholds
        (chosen on outputs in that precision) meet outputs in that precision. Where the device lacks it
        (bf16 on a CPU without native bf16, fp16 off CUDA) or the record does not say (a seed
        checkpoint, an older record): fp32, said in one log line."""
        if run_as is None:
            log.info("the model does not record the precision it was trained in: it runs in fp32")
            return cls(None, False)
        channels_last = run_as.memory_format == "channels_last"
        wanted = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(run_as.dtype)
        usable = (device.type == "cuda" and (wanted != torch.bfloat16 or torch.cuda.is_bf16_supported())) or (
            device.type == "cpu" and wanted == torch.bfloat16 and cpu_has_native_bf16()
        )
        if wanted is not None and not usable:
            log.warning(
                "the model was trained in %s, which %s does not run natively: it runs in fp32 here, so its "
                "probabilities differ from the training precision's by that precision's rounding",
                run_as.dtype,
                device,
            )
            return cls(None, channels_last)
        return cls(wanted, channels_last)

    def run_as(self) -> RunAs:
        """This precision as a model record says it (what train writes beside the model)."""
        dtype = "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        return RunAs(dtype, "channels_last" if self.channels_last else "contiguous")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


FP32 = Precision()  # plain fp32, NCHW: the default of every caller that does not choose


def on_cpu_by_default(option: bool | str, device: torch.device) -> bool:
    """``auto`` settings that pay on a CPU and not on a GPU (measured: benchmarks/README.md, "CPU levers"):
    channels_last (faster on CPU, slower on CUDA at batch 32) and memory_efficient (on a CPU, RAM is what
    a laptop runs out of; on a GPU the recomputation costs time that memory does not need)."""
    return device.type == "cpu" if option == "auto" else bool(option)


# --- data to the device -----------------------------------------------------------------------------
def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    device: torch.device,
    ctx: Context = SINGLE,
    drop_single: bool = False,
) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): what makes resumed runs identical.

    A DistributedSampler serves one process (whole dataset) or many (a shard each) alike; call
    ``loader.sampler.set_epoch(epoch)`` before each epoch. ``drop_single`` (training): when the last
    batch would hold one image, it is left out of the epoch, because BatchNorm cannot train on a batch
    of one ("Expected more than 1 value per channel"); the seed's loader stops there after a full epoch.
    Any other batch size is kept whole, as the seed's.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed, drop_last=False
    )
    per_process = len(sampler)
    drop_last = drop_single and per_process % batch_size == 1 and per_process > 1
    if drop_last:
        logging.getLogger(__name__).info(
            "training: %d images a process at batch %d leave a last batch of one image, which BatchNorm "
            "cannot train on: it is left out of each epoch (a different image each epoch, as shuffled)",
            per_process,
            batch_size,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def prepare_batch(
    images: torch.Tensor,
    device: torch.device,
    *,
    hflip: bool,
    channels_last: bool,
    spec: InputSpec = IMAGENET_INPUT,
) -> torch.Tensor:
    """uint8 batch → the network's input (by the model's rule ``spec``) on the device; random horizontal
    flips there, not per sample."""
    x = normalize_batch(images, device, spec, channels_last=channels_last)
    if hflip:
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return x


def tta_views(batch: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a normalised ``B×3×S×S`` batch whose probabilities are averaged.

    ``hflip``: the image and its mirror. ``tencrop`` (as arnoweng/CheXNet): the image enlarged by
    256/224 and cut into the four corners and centre, plus their mirrors; from the prepared cache,
    which already holds the image at S px, the enlargement is an upsampling.
    """
    if mode == "none":
        return [batch]
    if mode == "hflip":
        return [batch, batch.flip(-1)]
    if mode != "tencrop":
        raise ChexnetError(f"evaluate.tta must be one of {TTA_MODES}, got {mode!r}")
    size = batch.shape[-1]
    big = round(size * 256 / 224)
    enlarged = F.interpolate(batch, size=(big, big), mode="bilinear", align_corners=False, antialias=False)
    off = big - size
    corners = [(0, 0), (0, off), (off, 0), (off, off), (off // 2, off // 2)]
    crops = [enlarged[..., y : y + size, x : x + size] for y, x in corners]
    return crops + [crop.flip(-1) for crop in crops]


def gray_array(images: np.ndarray) -> np.ndarray:
    """uint8 stays uint8 (the cache, the square rule); float stays float32 (unrounded center_crop)."""
    return np.array(images, dtype=np.uint8 if np.asarray(images).dtype == np.uint8 else np.float32)


# --- probabilities ----------------------------------------------------------------------------------
@torch.no_grad()
def predict_loader(
    net: nn.Module,
    loader: DataLoader,
    ctx: Context,
    *,
    precision: Precision = FP32,
    desc: str = "predict",
    tta: str = "none",
    spec: InputSpec = IMAGENET_INPUT,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels for every sample of ``loader``, in dataset order, from ``net``'s logits
    (a :class:`LogitsView`, possibly wrapped by DDP or ``torch.compile``) fed by ``spec`` (the model's
    input rule); every process gets them all."""
    net.eval()
    scores, truth = [], []
    for images, labels in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not ctx.is_main):
        x = prepare_batch(images, ctx.device, hflip=False, channels_last=precision.channels_last, spec=spec)
        with precision.autocast(ctx.device):
            views = [torch.sigmoid(net(view).float()) for view in tta_views(x, tta)]
        scores.append(torch.stack(views).mean(dim=0).cpu())
        truth.append(labels)
    order = torch.as_tensor(list(iter(loader.sampler)), dtype=torch.long)
    total = len(loader.dataset)
    s = gather_rows(ctx, torch.cat(scores), order, total)
    t = gather_rows(ctx, torch.cat(truth), order, total)
    return s.numpy(), t.numpy()


def predict(
    model: Network,
    loader: DataLoader,
    device: torch.device,
    desc: str = "predict",
    tta: str = "none",
    precision: Precision = FP32,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels for every sample of ``loader``, in dataset order (one process).

    ``tta``: average the probabilities over test-time views (:func:`tta_views`).
    """
    ctx = Context(rank=0, world_size=1, local_rank=0, device=device)
    net = LogitsView(model.to(device, memory_format=precision.memory_format))
    return predict_loader(net, loader, ctx, precision=precision, desc=desc, tta=tta, spec=model.input_spec)


def predict_split(
    model: Network,
    prepared_dir: str | Path,
    split: pd.DataFrame,
    name: str,
    labels: LabelList,
    *,
    batch_size: int,
    seed: int,
    num_workers: int,
    device: torch.device,
    tta: str = "none",
    precision: Precision = FP32,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One split's predictions: its rows (``row, image, patient, width, height``, the true labels) with a
    ``p_<Finding>`` column per finding, and the probability and truth matrices in the same order."""
    dataset = split_dataset(prepared_dir, split, name, labels)
    loader = make_loader(
        dataset, batch_size=batch_size, shuffle=False, seed=seed, num_workers=num_workers, device=device
    )
    scores, truth = predict(model, loader, device, desc=name, tta=tta, precision=precision)
    names = list(labels.names)
    frame = split[split["split"] == name][["row", "image", "patient", "width", "height", *names]]
    frame = frame.reset_index(drop=True)
    for j, label in enumerate(names):
        frame[f"p_{label}"] = scores[:, j]
    return frame, scores, truth


@torch.no_grad()
def predict_images(
    model: Network, images: np.ndarray, device: torch.device, precision: Precision = FP32
) -> np.ndarray:
    """Probabilities ``B×findings`` for gray ``B×S×S`` images (uint8, or float32 from the ``center_crop``
    rule), fed by the model's input rule, in ``precision`` (the model's recorded one where the caller has
    it: :meth:`Precision.recorded`); the sigmoid in fp32."""
    model.eval()
    pixels = torch.from_numpy(gray_array(images))[:, None]
    batch = normalize_batch(pixels, device, model.input_spec, channels_last=precision.channels_last)
    with precision.autocast(device):
        logits = model.logits(batch)
    return torch.sigmoid(logits.float()).cpu().numpy()
