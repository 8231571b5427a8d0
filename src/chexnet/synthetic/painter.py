"""The demo's radiograph painter: a chest-like image and its findings, drawn from a seed.

Each image has a body, lung fields, mediastinum, heart, spine, ribs, diaphragm and noise; each of the 14
findings is drawn as its own pattern in an anatomically plausible place, with the box of where it was
drawn, so that training is learnable and a heat map can be checked against it (:mod:`chexnet.synthetic.demo`
writes the set). Its patterns are caricatures, not medicine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """What stays the same across one patient's images (normalised coordinates, 0..1)."""

    center_x: float
    lung_top: float
    lung_bottom: float
    lung_half_width: float
    lung_gap: float
    heart_width: float
    brightness: float
    contrast: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Anatomy:
        return Anatomy(
            center_x=0.5 + rng.normal(0, 0.015),
            lung_top=0.17 + rng.normal(0, 0.015),
            lung_bottom=0.74 + rng.normal(0, 0.02),
            lung_half_width=0.15 + rng.normal(0, 0.01),
            lung_gap=0.085 + rng.normal(0, 0.005),
            heart_width=0.11 + rng.normal(0, 0.008),
            brightness=rng.normal(0, 0.03),
            contrast=1.0 + rng.normal(0, 0.06),
        )


class _Canvas:
    """One image under construction: a float field in 0..1 plus the boxes of what was drawn on it."""

    def __init__(self, size: int, anatomy: Anatomy, rng: np.random.Generator, shift: tuple[float, float]):
        self.size = size
        self.anatomy = anatomy
        self.rng = rng
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y = coords[:, None] - shift[1]
        self.x = coords[None, :] - shift[0]
        self.shift = shift
        self.field = np.zeros((size, size), np.float32)
        self.boxes: list[tuple[str, float, float, float, float]] = []

    # --- geometry helpers -------------------------------------------------------------------
    def lung_center(self, side: int) -> tuple[float, float]:
        """Centre of the lung on image side ``-1`` (left of the image, patient's right) or ``+1``."""
        a = self.anatomy
        return a.center_x + side * (a.lung_gap + a.lung_half_width), (a.lung_top + a.lung_bottom) / 2

    def lung_mask(self, side: int, bottom: float | None = None) -> np.ndarray:
        a = self.anatomy
        cx, _ = self.lung_center(side)
        bottom = a.lung_bottom if bottom is None else bottom
        cy = (a.lung_top + bottom) / 2
        ry = (bottom - a.lung_top) / 2
        # A superellipse: rounder apex, flatter base, like a lung field.
        return (np.abs((self.x - cx) / a.lung_half_width) ** 2.4 + np.abs((self.y - cy) / ry) ** 2.4) <= 1

    def blob(self, cx: float, cy: float, rx: float, ry: float, softness: float = 0.15) -> np.ndarray:
        """A soft-edged ellipse in 0..1."""
        d = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return np.clip((1 - d) / softness, 0, 1)

    def add_box(self, label: str, x0: float, y0: float, x1: float, y1: float) -> None:
        """Record a finding's box in pixel coordinates of this image (shift applied, clipped to it)."""
        sx, sy = self.shift
        x0, x1 = np.clip([x0 + sx, x1 + sx], 0, 1) * self.size
        y0, y1 = np.clip([y0 + sy, y1 + sy], 0, 1) * self.size
        self.boxes.append((label, float(x0), float(y0), float(x1 - x0), float(y1 - y0)))

    def smooth_noise(self, sigma: float) -> np.ndarray:
        noise = self.rng.standard_normal(self.field.shape).astype(np.float32)
        noise = ndimage.gaussian_filter(noise, sigma * self.size)
        return noise / (noise.std() + 1e-6)


def _draw_anatomy(c: _Canvas, findings: set[str]) -> tuple[np.ndarray, np.ndarray]:
    a = c.anatomy
    body = c.blob(a.center_x, 0.55, 0.44, 0.58, softness=0.05)
    c.field += 0.12 + 0.33 * body
    lungs_bottom = a.lung_bottom + (0.06 if "Emphysema" in findings else 0.0)  # flattened diaphragm
    lungs = [c.lung_mask(side, bottom=lungs_bottom) for side in (-1, 1)]
    lung_any = lungs[0] | lungs[1]
    lung_soft = ndimage.gaussian_filter(lung_any.astype(np.float32), 0.006 * c.size)
    darkness = 0.30 if "Emphysema" in findings else 0.22
    c.field -= darkness * lung_soft
    # Vascular markings: fine texture inside the lungs (absent where a pneumothorax is drawn later).
    c.field += 0.025 * c.smooth_noise(0.006) * lung_soft
    # Ribs: curved bright bands across each lung.
    for k in range(9):
        y0 = a.lung_top - 0.02 + k * 0.068
        curve = y0 + 0.10 * ((c.x - a.center_x) / 0.35) ** 2
        band = np.exp(-(((c.y - curve) / 0.011) ** 2))
        c.field += 0.07 * band * lung_soft
    # Mediastinum and spine.
    spine = np.exp(-(((c.x - a.center_x) / 0.035) ** 2)) * (c.y > 0.05)
    c.field += 0.22 * spine
    mediastinum = c.blob(a.center_x, 0.38, 0.06, 0.25, softness=0.3)
    c.field += 0.25 * mediastinum
    heart_width = a.heart_width * (1.65 if "Cardiomegaly" in findings else 1.0)
    heart_cx, heart_cy = a.center_x + 0.035, a.lung_bottom - 0.1
    heart = c.blob(heart_cx, heart_cy, heart_width, 0.11, softness=0.12)
    c.field += 0.32 * heart
    if "Cardiomegaly" in findings:
        c.add_box(
            "Cardiomegaly", heart_cx - heart_width, heart_cy - 0.11, heart_cx + heart_width, heart_cy + 0.11
        )
    # Diaphragm domes: bright below the lung bases.
    for side in (-1, 1):
        cx, _ = c.lung_center(side)
        dome = lungs_bottom - 0.03 - 0.05 * np.exp(-(((c.x - cx) / 0.12) ** 2))
        c.field += 0.1 * ((c.y > dome) & (np.abs(c.x - cx) < a.lung_half_width * 1.1))
    if "Emphysema" in findings:
        x0 = a.center_x - a.lung_gap - 2 * a.lung_half_width
        x1 = a.center_x + a.lung_gap + 2 * a.lung_half_width
        c.add_box("Emphysema", x0, a.lung_top, x1, lungs_bottom)
    return lungs[0], lungs[1]


def _side(c: _Canvas) -> int:
    """Which lung a one-sided finding goes to: -1 (left of the image) or +1."""
    return int(c.rng.choice((-1, 1)))


def _height(c: _Canvas) -> float:
    return c.anatomy.lung_bottom - c.anatomy.lung_top


def _paint_atelectasis(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Dense wedge in the lower-mid zone, apex towards the hilum."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    cx, _ = c.lung_center(s)
    hx, hy = a.center_x + s * (a.lung_gap + 0.02), a.lung_top + 0.55 * height
    bx, by = cx + s * 0.09, a.lung_top + 0.78 * height
    t = np.clip(((c.x - hx) * s) / max(abs(bx - hx), 1e-3), 0, 1)
    centre_line = hy + (by - hy) * t
    wedge = (np.abs(c.y - centre_line) < 0.012 + 0.06 * t) & ((c.x - hx) * s >= 0) & ((c.x - bx) * s <= 0)
    c.field += 0.30 * ndimage.gaussian_filter(wedge.astype(np.float32), 0.004 * c.size)
    c.add_box("Atelectasis", min(hx, bx), hy - 0.02, max(hx, bx), by + 0.07)


def _paint_effusion(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """White fluid at the base with a meniscus, angle blunted."""
    a = c.anatomy
    rng = c.rng
    s = _side(c)
    cx, _ = c.lung_center(s)
    level = a.lung_bottom - 0.15 - 0.04 * rng.random()
    meniscus = level - 0.05 * ((c.x - cx) * s / a.lung_half_width + 1) ** 2
    fluid = lungs[0 if s < 0 else 1] & (c.y > meniscus)
    c.field += 0.33 * ndimage.gaussian_filter(fluid.astype(np.float32), 0.005 * c.size)
    c.add_box("Effusion", cx - a.lung_half_width, level - 0.2, cx + a.lung_half_width, a.lung_bottom)


def _paint_infiltration(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Patchy, ill-defined opacities in a mid zone."""
    s = _side(c)
    cx, cy = c.lung_center(s)
    region = c.blob(cx, cy, 0.1, 0.12, softness=0.5)
    patches = np.clip(c.smooth_noise(0.012) - 0.3, 0, None)
    c.field += 0.24 * patches * region * lungs[0 if s < 0 else 1]
    c.add_box("Infiltration", cx - 0.1, cy - 0.12, cx + 0.1, cy + 0.12)


def _paint_mass(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Large round lobulated opacity."""
    rng = c.rng
    s = _side(c)
    cx, cy = c.lung_center(s)
    mx, my, r = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.12, 0.0), rng.uniform(0.055, 0.075)
    lobes = 1 + 0.08 * np.sin(6 * np.arctan2(c.y - my, c.x - mx))
    c.field += 0.38 * c.blob(mx, my, r * lobes, r * lobes, softness=0.2)
    c.add_box("Mass", mx - r * 1.1, my - r * 1.1, mx + r * 1.1, my + r * 1.1)


def _paint_nodule(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Small sharp round opacity."""
    rng = c.rng
    s = _side(c)
    cx, cy = c.lung_center(s)
    nx, ny, r = cx + rng.uniform(-0.07, 0.07), cy + rng.uniform(-0.15, 0.1), rng.uniform(0.016, 0.022)
    c.field += 0.45 * c.blob(nx, ny, r, r, softness=0.25)
    c.add_box("Nodule", nx - 2 * r, ny - 2 * r, nx + 2 * r, ny + 2 * r)


def _paint_pneumonia(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Fluffy cloud in a lower lobe."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    cx, _ = c.lung_center(s)
    py = a.lung_top + 0.68 * height
    cloud = np.exp(-(((c.x - cx) / 0.085) ** 2 + ((c.y - py) / 0.075) ** 2))
    texture = 0.75 + 0.25 * c.smooth_noise(0.01)
    c.field += 0.30 * cloud * texture * lungs[0 if s < 0 else 1]
    c.add_box("Pneumonia", cx - 0.13, py - 0.11, cx + 0.13, py + 0.11)


def _paint_consolidation(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Homogeneous upper-zone opacity with air bronchograms."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    cx, _ = c.lung_center(s)
    uy = a.lung_top + 0.3 * height
    dense = c.blob(cx, uy, 0.1, 0.08, softness=0.1) * lungs[0 if s < 0 else 1]
    bronchi = np.exp(-((((c.x - cx) * np.cos(0.5) + (c.y - uy) * np.sin(0.5)) / 0.006) ** 2))
    c.field += 0.36 * dense - 0.2 * bronchi * dense
    c.add_box("Consolidation", cx - 0.1, uy - 0.08, cx + 0.1, uy + 0.08)


def _paint_edema(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Bilateral perihilar "bat wing" haze and Kerley B lines."""
    a = c.anatomy
    height = _height(c)
    for s in (-1, 1):
        hx = a.center_x + s * (a.lung_gap + 0.06)
        c.field += 0.22 * c.blob(hx, a.lung_top + 0.5 * height, 0.09, 0.13, softness=0.9)
        for k in range(4):
            ky = a.lung_bottom - 0.05 - 0.025 * k
            kx = a.center_x + s * (a.lung_gap + 2 * a.lung_half_width - 0.02)
            c.field += 0.2 * ((np.abs(c.y - ky) < 0.003) & (np.abs(c.x - kx) < 0.025))
    x0 = a.center_x - a.lung_gap - 2 * a.lung_half_width
    c.add_box("Edema", x0, a.lung_top + 0.3 * height, 2 * a.center_x - x0, a.lung_bottom)


def _paint_fibrosis(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Reticular net in the peripheral lower zones."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    cx, _ = c.lung_center(s)
    net = (np.abs(np.sin(c.x * 95)) < 0.25) | (np.abs(np.sin(c.y * 95 + c.x * 30)) < 0.25)
    zone = c.blob(cx + s * 0.07, a.lung_top + 0.7 * height, 0.08, 0.13, softness=0.5)
    c.field += 0.28 * net * zone * lungs[0 if s < 0 else 1]
    c.add_box(
        "Fibrosis",
        cx + s * 0.07 - 0.08,
        a.lung_top + 0.7 * height - 0.13,
        cx + s * 0.07 + 0.08,
        a.lung_top + 0.7 * height + 0.13,
    )


def _paint_pleural_thickening(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Bright band along the lateral chest wall and apex."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    lung = lungs[0 if s < 0 else 1]
    rim = lung & ~ndimage.binary_erosion(lung, iterations=max(2, int(0.022 * c.size)))
    upper = c.y < a.lung_top + 0.6 * height
    c.field += 0.35 * ndimage.gaussian_filter((rim & upper).astype(np.float32), 0.003 * c.size)
    cx, _ = c.lung_center(s)
    c.add_box(
        "Pleural_Thickening",
        cx - a.lung_half_width,
        a.lung_top,
        cx + a.lung_half_width,
        a.lung_top + 0.6 * height,
    )


def _paint_hernia(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Retrocardiac gas bubble with an air-fluid level."""
    a = c.anatomy
    hx, hy, r = a.center_x - 0.01, a.lung_bottom - 0.06, 0.05
    ring = c.blob(hx, hy, r, r * 0.8, softness=0.25)
    inner = c.blob(hx, hy, r * 0.75, r * 0.6, softness=0.2) * (c.y < hy)
    c.field += 0.18 * ring - 0.45 * inner
    c.add_box("Hernia", hx - r, hy - r * 0.8, hx + r, hy + r * 0.8)


def _paint_pneumothorax(c: _Canvas, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Black, markingless rim at the apex-lateral side, thin pleural line."""
    a = c.anatomy
    height = _height(c)
    s = _side(c)
    lung = lungs[0 if s < 0 else 1]
    cx, _ = c.lung_center(s)
    edge_x = cx + s * a.lung_half_width * 0.35
    line_y = a.lung_top + 0.55 * height
    free_air = lung & ((c.x - edge_x) * s > 0) & (c.y < line_y - 0.2 * ((c.x - edge_x) * s))
    free_soft = ndimage.gaussian_filter(free_air.astype(np.float32), 0.002 * c.size)
    c.field = c.field * (1 - free_soft) + 0.05 * free_soft
    pleura = free_air ^ ndimage.binary_erosion(free_air, iterations=2)
    c.field += 0.25 * pleura
    c.add_box(
        "Pneumothorax",
        min(edge_x, cx + s * a.lung_half_width),
        a.lung_top,
        max(edge_x, cx + s * a.lung_half_width),
        line_y,
    )


# One painter per localised finding, applied in this order (the order fixes how the generator is
# drawn from, so the same seed gives the same images). Cardiomegaly and Emphysema change the anatomy.
_PAINTERS = {
    "Atelectasis": _paint_atelectasis,
    "Effusion": _paint_effusion,
    "Infiltration": _paint_infiltration,
    "Mass": _paint_mass,
    "Nodule": _paint_nodule,
    "Pneumonia": _paint_pneumonia,
    "Consolidation": _paint_consolidation,
    "Edema": _paint_edema,
    "Fibrosis": _paint_fibrosis,
    "Pleural_Thickening": _paint_pleural_thickening,
    "Hernia": _paint_hernia,
    "Pneumothorax": _paint_pneumothorax,
}


def _draw_findings(c: _Canvas, findings: set[str], lungs: tuple[np.ndarray, np.ndarray]) -> None:
    """Draw each localised finding as its own pattern, in its own plausible place."""
    for name, paint in _PAINTERS.items():
        if name in findings:
            paint(c, lungs)


def draw_radiograph(
    size: int, anatomy: Anatomy, findings: set[str], rng: np.random.Generator, contrast: float = 1.0
) -> tuple[np.ndarray, list[tuple[str, float, float, float, float]]]:
    """Draw one image: a float32 array in 0..1 and the boxes ``(label, x, y, w, h)`` in its pixels.

    ``contrast`` scales what the findings change in the image (1: the patterns as drawn)."""
    shift = (float(rng.normal(0, 0.012)), float(rng.normal(0, 0.012)))
    canvas = _Canvas(size, anatomy, rng, shift)
    lungs = _draw_anatomy(canvas, findings)
    healthy = canvas.field.copy()
    _draw_findings(canvas, findings, lungs)
    if contrast != 1.0:
        canvas.field = healthy + contrast * (canvas.field - healthy)
    field = ndimage.gaussian_filter(canvas.field, 0.0015 * size)
    field = (field - 0.3) * anatomy.contrast + 0.3 + anatomy.brightness
    field += rng.normal(0, 0.018, field.shape).astype(np.float32)
    return np.clip(field, 0, 1), canvas.boxes
