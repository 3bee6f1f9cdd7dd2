"""The toy world: small RGB scenes of coloured glyphs with COCO-like co-occurrence.

Rules (all deterministic, no `set` iteration anywhere):

* 12 categories, 6 colours. Categories come in 4 *groups* of three (``GROUPS``) that co-occur like knife, fork
  and spoon in COCO: once a category is placed, each of its group-mates joins with probability ``PARTNER_PROB``
  (while there is room).
* Categories have unequal popularity (``POPULARITY``), so POPE's *popular* negatives differ from *random* ones.
* 1-4 objects per scene (a category may appear twice, for counting questions).
* Perception is not trivial: objects are small (7-16 px in a 64 px image), may overlap (partial occlusion),
  a share ``FAINT_PROB`` of them is drawn faint (low contrast, small), and the background is textured noise
  with clutter strokes that are not objects.
* Splits (train / calibration / test) draw their seeds from disjoint ranges: scene ``i`` of split ``s`` is
  generated from seed ``SPLIT_SEED_BASE[s] + i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from PIL import Image, ImageDraw

GROUPS: tuple[tuple[str, ...], ...] = (
    ("star", "moon", "heart"),
    ("square", "triangle", "arrow"),
    ("cross", "diamond", "bar"),
    ("circle", "ring", "hexagon"),
)
CATEGORIES: tuple[str, ...] = tuple(c for group in GROUPS for c in group)
PLURALS: dict[str, str] = {c: (c + "es" if c.endswith(("ss", "x")) else c + "s") for c in CATEGORIES}
PARTNERS: dict[str, tuple[str, ...]] = {c: tuple(m for m in g if m != c) for g in GROUPS for c in g}
POPULARITY: dict[str, float] = {
    "star": 3.0, "square": 2.6, "circle": 2.3, "cross": 2.0,
    "moon": 1.6, "triangle": 1.4, "ring": 1.3, "diamond": 1.2,
    "heart": 1.0, "arrow": 0.9, "hexagon": 0.8, "bar": 0.7,
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 220),
    "white": (245, 245, 245),
}
IMAGE_SIZE = 64
PARTNER_PROB = 0.7
REPEAT_PROB = 0.12
FAINT_PROB = 0.2
OBJECT_COUNT_PROBS = (0.1, 0.25, 0.35, 0.3)  # P(1), P(2), P(3), P(4) objects


class Split(str, Enum):
    """A data split. Seeds of different splits never overlap."""

    TRAIN = "train"
    CALIBRATION = "calibration"
    TEST = "test"


SPLIT_SEED_BASE: dict[Split, int] = {Split.TRAIN: 0, Split.CALIBRATION: 10_000_000, Split.TEST: 20_000_000}
SPLIT_SIZE_LIMIT = 10_000_000


def as_split(split: Split | str) -> Split:
    """Accept ``Split`` or its name; anything else is a clear error."""
    try:
        return Split(split)
    except ValueError:
        names = ", ".join(s.value for s in Split)
        raise ValueError(f"unknown split {split!r}; use one of: {names}") from None


@dataclass(frozen=True)
class ToyObject:
    category: str
    colour: str
    x: float  # centre, pixels
    y: float
    size: float  # bounding-box side, pixels
    faint: bool


@dataclass(frozen=True)
class Scene:
    """One generated scene: its objects (in drawing order) and where it came from."""

    split: Split
    index: int
    objects: tuple[ToyObject, ...]
    background_seed: int = field(repr=False)

    @property
    def seed(self) -> int:
        return SPLIT_SEED_BASE[self.split] + self.index

    @property
    def categories(self) -> tuple[str, ...]:
        """Distinct categories present, in ``CATEGORIES`` order."""
        present = {o.category for o in self.objects}
        return tuple(c for c in CATEGORIES if c in present)

    def count(self, category: str) -> int:
        return sum(o.category == category for o in self.objects)

    def image(self) -> Image.Image:
        return render_scene(self)


def scene_seed(split: Split | str, index: int) -> int:
    split = as_split(split)
    if not 0 <= index < SPLIT_SIZE_LIMIT:
        raise ValueError(f"scene index {index} is outside [0, {SPLIT_SIZE_LIMIT})")
    return SPLIT_SEED_BASE[split] + index


def _choose_categories(rng: np.random.Generator, n_objects: int) -> list[str]:
    weights = np.array([POPULARITY[c] for c in CATEGORIES])
    chosen: list[str] = []
    while len(chosen) < n_objects:
        if chosen and rng.random() < REPEAT_PROB:
            category = chosen[int(rng.integers(len(chosen)))]
        else:
            free = np.array([c not in chosen for c in CATEGORIES])
            p = weights * free
            category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=p / p.sum()))]
        chosen.append(category)
        for mate in PARTNERS[category]:
            if len(chosen) < n_objects and mate not in chosen and rng.random() < PARTNER_PROB:
                chosen.append(mate)
    return chosen


def _place(rng: np.random.Generator, sizes: list[float]) -> list[tuple[float, float]]:
    """Centres with bounded overlap: objects may occlude each other partly, never fully."""
    centres: list[tuple[float, float]] = []
    for size in sizes:
        for _ in range(200):
            half = size / 2 + 1
            x, y = rng.uniform(half, IMAGE_SIZE - half, size=2)
            ok = all(
                np.hypot(x - cx, y - cy) > 0.6 * (size + other) / 2
                for (cx, cy), other in zip(centres, sizes)
            )
            if ok:
                break
        centres.append((float(x), float(y)))
    return centres


def generate_scene(split: Split | str, index: int) -> Scene:
    """Scene ``index`` of ``split``; the same arguments always give the same scene."""
    split = as_split(split)
    rng = np.random.default_rng(scene_seed(split, index))
    n_objects = int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + 1
    categories = _choose_categories(rng, n_objects)
    faint = [bool(rng.random() < FAINT_PROB) for _ in categories]
    sizes = [float(rng.uniform(7, 10) if f else rng.uniform(10, 16)) for f in faint]
    centres = _place(rng, sizes)
    colour_names = list(COLOURS)
    objects = tuple(
        ToyObject(c, colour_names[int(rng.integers(len(colour_names)))], x, y, s, f)
        for c, (x, y), s, f in zip(categories, centres, sizes, faint)
    )
    return Scene(split, index, objects, background_seed=int(rng.integers(2**31)))


def generate_scenes(split: Split | str, n: int, start: int = 0) -> list[Scene]:
    return [generate_scene(split, i) for i in range(start, start + n)]


# --- rendering ---------------------------------------------------------------------------------------------------


def _polygon(cx: float, cy: float, r: float, n: int, rotation: float, inner: float | None = None) -> list[tuple]:
    points = []
    steps = n * 2 if inner else n
    for k in range(steps):
        angle = rotation + 2 * np.pi * k / steps
        radius = inner if (inner and k % 2) else r
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


def object_mask(obj: ToyObject, size: int = IMAGE_SIZE) -> np.ndarray:
    """Float mask in [0, 1], shape (size, size), of one object's glyph."""
    scale = 4  # draw at 4x and downsample: antialiased edges
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = obj.x * scale, obj.y * scale, obj.size * scale / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    c = obj.category
    if c == "circle":
        draw.ellipse(box, fill=255)
    elif c == "ring":
        draw.ellipse(box, fill=255)
        k = r * 0.55
        draw.ellipse((cx - k, cy - k, cx + k, cy + k), fill=0)
    elif c == "square":
        k = r * 0.85
        draw.rectangle((cx - k, cy - k, cx + k, cy + k), fill=255)
    elif c == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.15, r * 1.1, 3, -np.pi / 2), fill=255)
    elif c == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4, -np.pi / 2), fill=255)
    elif c == "star":
        draw.polygon(_polygon(cx, cy, r * 1.1, 5, -np.pi / 2, inner=r * 0.45), fill=255)
    elif c == "cross":
        w = r * 0.36
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif c == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, 0.0), fill=255)
    elif c == "heart":
        k = r * 0.5
        draw.ellipse((cx - r, cy - r * 0.75, cx, cy + r * 0.25), fill=255)
        draw.ellipse((cx, cy - r * 0.75, cx + r, cy + r * 0.25), fill=255)
        draw.polygon([(cx - r * 0.97, cy - k * 0.2), (cx + r * 0.97, cy - k * 0.2), (cx, cy + r)], fill=255)
    elif c == "arrow":
        w = r * 0.28
        draw.rectangle((cx - r, cy - w, cx + r * 0.1, cy + w), fill=255)
        draw.polygon([(cx + r * 0.1, cy - r * 0.8), (cx + r, cy), (cx + r * 0.1, cy + r * 0.8)], fill=255)
    elif c == "bar":
        w = r * 0.3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
    elif c == "moon":
        draw.ellipse(box, fill=255)
        shift = r * 0.55
        draw.ellipse((cx - r + shift, cy - r - shift * 0.3, cx + r + shift, cy + r - shift * 0.3), fill=0)
    else:
        raise ValueError(f"unknown category {c!r}")
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(40, 120, size=3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    texture = np.zeros((size, size, 3))
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 5), rng.uniform(1, 5), rng.uniform(0, 2 * np.pi)
        texture += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)[..., None] * rng.uniform(-15, 15, size=3)
    noise = rng.normal(0, 14, size=(size, size, 3))
    return base + texture + noise


def _clutter(rng: np.random.Generator, image: np.ndarray) -> None:
    """Thin strokes and dots that are not objects (distractors)."""
    size = image.shape[0]
    strokes = []
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, size, size=2)
        x1, y1 = x0 + rng.uniform(-10, 10), y0 + rng.uniform(-10, 10)
        strokes.append(((x0, y0, x1, y1), rng.uniform(60, 200, size=3)))
    for line, colour in strokes:
        layer = Image.new("L", (size, size), 0)
        ImageDraw.Draw(layer).line(line, fill=255, width=1)
        alpha = np.asarray(layer, dtype=np.float32)[..., None] / 255.0 * 0.6
        image[:] = image * (1 - alpha) + colour * alpha



def render_scene(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The scene as a ``size`` x ``size`` RGB image."""
    rng = np.random.default_rng(scene.background_seed)
    image = _background(rng, size)
    _clutter(rng, image)
    for obj in scene.objects:
        mask = object_mask(obj, size)[..., None]
        opacity = rng.uniform(0.3, 0.45) if obj.faint else 1.0
        colour = np.array(COLOURS[obj.colour], dtype=np.float64)
        image = image * (1 - mask * opacity) + colour * mask * opacity
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


def patch_labels(scene: Scene, patch_size: int = 8, min_pixels: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch category and colour indices after occlusion, shape (grid, grid) each.

    A patch belongs to the visible object covering most of it (at least ``min_pixels`` pixels); otherwise it is
    background, coded as ``len(CATEGORIES)`` (category) and ``len(COLOURS)`` (colour).
    """
    grid = IMAGE_SIZE // patch_size
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1)
    for k, obj in enumerate(scene.objects):
        mask = object_mask(obj)
        visible = mask > 0.5
        owner[visible] = k
    categories = np.full((grid, grid), len(CATEGORIES))
    colours = np.full((grid, grid), len(COLOURS))
    colour_names = list(COLOURS)
    for i in range(grid):
        for j in range(grid):
            block = owner[i * patch_size:(i + 1) * patch_size, j * patch_size:(j + 1) * patch_size]
            counts = np.bincount(block[block >= 0], minlength=len(scene.objects))
            if counts.size and counts.max() >= min_pixels:
                obj = scene.objects[int(counts.argmax())]
                categories[i, j] = CATEGORIES.index(obj.category)
                colours[i, j] = colour_names.index(obj.colour)
    return categories, colours
