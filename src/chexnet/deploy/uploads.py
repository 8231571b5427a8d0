"""What the service does with an upload before it reaches the model: its type by its own bytes, and
the memory its decode may hold (:class:`MemoryBudget`)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from chexnet.core.errors import ChexnetError

KINDS = {b"\x89PNG\r\n\x1a\n": ".png", b"\xff\xd8\xff": ".jpg"}


class FileError(ChexnetError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def kind_of(data: bytes) -> str:
    """``.png``, ``.jpg`` or ``.dcm`` by the file's own bytes (never its name); anything else is a 415."""
    for magic, suffix in KINDS.items():
        if data.startswith(magic):
            return suffix
    if data[128:132] == b"DICM":
        return ".dcm"
    raise FileError(415, "not a PNG, JPEG or DICOM file (by its content)")


class MemoryBudget:
    """Bytes that decodes in flight may hold together: a decode waits until its share is free, so the
    memory of concurrent requests is bounded, not only their bytes (a 0.35 MB PNG can decode to 1 GB)."""

    def __init__(self, total: int):
        self.total, self.free = total, total
        self.changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, cost: int):
        if cost > self.total:
            raise FileError(
                413,
                f"decoding it would take about {cost / 2**30:.1f} GiB, more than this "
                f"service allows ({self.total / 2**30:.1f} GiB)",
            )
        async with self.changed:
            await self.changed.wait_for(lambda: self.free >= cost)
            self.free -= cost
        try:
            yield
        finally:
            async with self.changed:
                self.free += cost
                self.changed.notify_all()
