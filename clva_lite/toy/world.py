"""The toy world: 96 x 96 scenes of 3-6 coloured glyphs from 24 categories in 6 co-occurring groups of four.

Rules (deterministic, no ``set`` iteration):

* 24 categories in 6 *groups* of four (``GROUPS``), co-occurring like knife / fork / spoon / bowl in COCO: once a
  category is placed, each group-mate joins with probability ``PARTNER_PROB`` while there is room; at most
  ``GROUP_CAP`` = 2 distinct members of a group per scene, so POPE's adversarial negatives (the absent categories
  that co-occur most with a present one) are mostly absent group-mates.
* Unequal popularity (``POPULARITY``, a Zipf-like ladder), so POPE's *popular* negatives differ from *random* ones.
* 3-6 objects per scene (a category may repeat, for counting questions), 6 colours.
* Perception is not trivial: objects are 11-20 px (faint ones 8-12 px, opacity 0.3-0.45) over textured noise with
  clutter strokes that are not objects; objects may overlap partly.
* 8 px patches: a 12 x 12 grid, 144 visual tokens; object centres sit on patch centres (``SNAP_TO_PATCHES``).
* Splits (train / calibration / test) draw their seeds from disjoint ranges: scene ``i`` of split ``s`` comes from
  seed ``[SPLIT_SEED_BASE[s] + i, 2]``.
* Glyphs carry a striped surface texture: angle by group, period by member (``TEXTURES``), so a patch inside an
  object shows what it is.
* Worlds (``WORLDS``): ``"plain"`` is the world above. ``"decoys"`` adds, to the same scenes, 0-2 *decoys*: glyphs
  with a category's outline but a flat surface (no stripes; the same mean brightness), mostly shaped like an absent
  group-mate of a present category. Decoys are not objects: captions, answers and benchmarks never name them, so a
  question about a decoy's category is answered "no", and only the surface tells a decoy from the object. They come
  from their own random stream, so a scene's objects, background and clutter are the same in both worlds. A model
  trained in a world records it in its ``config.json`` (``toy_world``); :func:`clva_lite.load_model` makes it the
  active world (:func:`use_world`), so the benchmarks generate that model's scenes from the world it learnt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

GROUPS: tuple[tuple[str, ...], ...] = (
    ("star", "moon", "spark", "heart"),
    ("square", "triangle", "pentagon", "hexagon"),
    ("cross", "tee", "ell", "bar"),
    ("circle", "ring", "egg", "dome"),
    ("arrow", "chevron", "flag", "kite"),
    ("diamond", "hourglass", "trapezoid", "octagon"),
)
CATEGORIES: tuple[str, ...] = tuple(c for group in GROUPS for c in group)
GROUP_OF: dict[str, int] = {c: g for g, group in enumerate(GROUPS) for c in group}
PLURALS: dict[str, str] = {c: (c + "es" if c.endswith(("ss", "x")) else c + "s") for c in CATEGORIES}
PARTNERS: dict[str, tuple[str, ...]] = {c: tuple(m for m in g if m != c) for g in GROUPS for c in g}
# Zipf-like ladder; every group holds one popular and one rare category.
_LADDER = [3.0, 2.7, 2.4, 2.2, 2.0, 1.85, 1.7, 1.6, 1.5, 1.4, 1.3, 1.2,
           1.1, 1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
_ORDER = [g[k] for k in range(4) for g in GROUPS]  # group leaders first, then second members, ...
POPULARITY: dict[str, float] = {c: _LADDER[_ORDER.index(c)] for c in CATEGORIES}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 220),
    "white": (245, 245, 245),
}
IMAGE_SIZE = 96
PATCH_SIZE = 8
GRID = IMAGE_SIZE // PATCH_SIZE
NUM_VISUAL_TOKENS = GRID * GRID
PARTNER_PROB = 0.75
REPEAT_PROB = 0.1
FAINT_PROB = 0.2
OBJECT_COUNT_PROBS = (0.25, 0.3, 0.25, 0.2)  # P(3), P(4), P(5), P(6) objects
MIN_OBJECTS = 3
GROUP_CAP = 2  # distinct members of one group per scene
OBJECT_SIZES = (18.0, 30.0)  # px, uniform range of a visible object's size
FAINT_SIZES = (12.0, 18.0)  # px, the same for faint objects
# Object centres on patch centres: a ViT's 8 px patch tokens then see each glyph cut the same way, instead of at one of
# 64 sub-patch offsets (supervised presence AUC after 300 steps 0.81 snapped vs 0.56 free; clva_lite.toy.diagnose).
SNAP_TO_PATCHES = True
# Each category's glyph carries a surface texture: stripes at its group's angle with its own period, as real objects
# carry local texture (fur, wheels, leaves) that a single ViT patch can see. Without it a patch inside a solid glyph
# is one flat colour, the shape lives only in the edges, and even a tower trained with per-patch labels named the
# category of 0.32 of the object patches (docs/toy-recipe-history.md, striped-glyph section).
TEXTURES = True
TEXTURE_ANGLES = tuple(np.pi * g / len(GROUPS) for g in range(len(GROUPS)))  # radians, one per group
TEXTURE_PERIODS = (2.5, 3.5, 4.5, 6.0)  # pixels, one per member of a group
TEXTURE_DEPTH = 0.7  # stripes darken the glyph's colour by up to this fraction (hue kept for colour questions)
WORLDS = ("plain", "decoys")
DECOY_COUNT_PROBS = (0.3, 0.5, 0.2)  # P(0), P(1), P(2) decoys in a scene of the "decoys" world
DECOY_GROUPMATE_PROB = 0.8  # a decoy takes the shape of an absent group-mate of a present category (else any absent)



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


_active_world = "plain"


def as_world(world: str) -> str:
    """Accept a name in ``WORLDS``; anything else is a clear error."""
    if world not in WORLDS:
        raise ValueError(f"unknown toy world {world!r}; use one of: {', '.join(WORLDS)}")
    return world


def active_world() -> str:
    """The world :func:`generate_scene` draws from when none is named (``"plain"`` until :func:`use_world`)."""
    return _active_world


def use_world(world: str) -> str:
    """Make ``world`` the active one for this process; returns the previous one."""
    global _active_world
    previous, _active_world = _active_world, as_world(world)
    return previous


@contextmanager
def using_world(world: str) -> Iterator[str]:
    """``with using_world("decoys"):`` scenes come from that world inside the block, the previous one after it."""
    previous = use_world(world)
    try:
        yield world
    finally:
        use_world(previous)


@dataclass(frozen=True)
class Scene:
    """One generated scene: its objects (in drawing order), its decoys (never named; empty in the plain world) and
    where it came from."""

    split: Split
    index: int
    objects: tuple[ToyObject, ...]
    background_seed: int = field(repr=False)
    decoys: tuple[ToyObject, ...] = ()

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


def _group_count(chosen: list[str], category: str) -> int:
    """Distinct members of ``category``'s group already in ``chosen``."""
    return len({c for c in chosen if GROUP_OF[c] == GROUP_OF[category]})


def _choose_categories(rng: np.random.Generator, n_objects: int) -> list[str]:
    """Popularity-weighted draws; after each new category its group-mates (in a random order) join with
    probability ``PARTNER_PROB``; at most ``GROUP_CAP`` distinct members of one group per scene, so a present
    category always has absent group-mates (POPE's adversarial negatives)."""
    weights = np.array([POPULARITY[c] for c in CATEGORIES])
    chosen: list[str] = []
    while len(chosen) < n_objects:
        if chosen and rng.random() < REPEAT_PROB:
            category = chosen[int(rng.integers(len(chosen)))]
        else:
            free = np.array([c not in chosen and _group_count(chosen, c) < GROUP_CAP for c in CATEGORIES])
            p = weights * free
            category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=p / p.sum()))]
        chosen.append(category)
        mates = list(PARTNERS[category])
        rng.shuffle(mates)
        for mate in mates:
            if (len(chosen) < n_objects and mate not in chosen and _group_count(chosen, mate) < GROUP_CAP
                    and rng.random() < PARTNER_PROB):
                chosen.append(mate)
    return chosen


def _patch_range(size: float) -> tuple[int, int]:
    """The lowest and highest patch index (per axis) whose centre keeps a glyph of ``size`` px inside the image."""
    half = size / 2 + 1
    return math.ceil((half - PATCH_SIZE / 2) / PATCH_SIZE), int((IMAGE_SIZE - half - PATCH_SIZE / 2) // PATCH_SIZE)


def _place(rng: np.random.Generator, sizes: list[float]) -> list[tuple[float, float]]:
    """Object centres, drawn until they are not too close; with ``SNAP_TO_PATCHES`` each centre is a patch centre,
    so a glyph always falls on the 8 px patch grid the same way."""
    centres: list[tuple[float, float]] = []
    for size in sizes:
        half = size / 2 + 1
        low, high = _patch_range(size)
        for _ in range(200):
            if SNAP_TO_PATCHES:
                x, y = (PATCH_SIZE * rng.integers(low, high + 1, size=2) + PATCH_SIZE / 2).astype(float)
            else:
                x, y = rng.uniform(half, IMAGE_SIZE - half, size=2)
            if all(np.hypot(x - cx, y - cy) > 0.6 * (size + other) / 2 for (cx, cy), other in zip(centres, sizes)):
                break
        centres.append((float(x), float(y)))
    return centres


def _decoys(scene: Scene, rng: np.random.Generator) -> tuple[ToyObject, ...]:
    """0-2 decoys of absent categories (distinct, mostly absent group-mates), on patch centres clear of the objects."""
    present = scene.categories
    count = int(rng.choice(len(DECOY_COUNT_PROBS), p=DECOY_COUNT_PROBS))
    decoys: list[ToyObject] = []
    colour_names = list(COLOURS)
    for _ in range(count):
        taken = set(present) | {d.category for d in decoys}
        mates = [m for c in present for m in PARTNERS[c] if m not in taken]
        pool = mates if mates and rng.random() < DECOY_GROUPMATE_PROB else [c for c in CATEGORIES if c not in taken]
        category = pool[int(rng.integers(len(pool)))]
        size = float(rng.uniform(*OBJECT_SIZES))
        low, high = _patch_range(size)
        others = list(scene.objects) + decoys
        for _ in range(50):
            x, y = (PATCH_SIZE * rng.integers(low, high + 1, size=2) + PATCH_SIZE / 2).astype(float)
            if all(np.hypot(x - o.x, y - o.y) > 0.8 * (size + o.size) / 2 for o in others):
                decoys.append(ToyObject(category, colour_names[int(rng.integers(len(colour_names)))], float(x),
                                        float(y), size, False))
                break
    return tuple(decoys)


def generate_scene(split: Split | str, index: int, world: str | None = None) -> Scene:
    """Scene ``index`` of ``split`` in ``world`` (default: :func:`active_world`); the same arguments always give the
    same scene, and a scene's objects are the same in every world."""
    split = as_split(split)
    world = as_world(world) if world is not None else _active_world
    rng = np.random.default_rng([scene_seed(split, index), 2])
    n_objects = int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + MIN_OBJECTS
    categories = _choose_categories(rng, n_objects)
    faint = [bool(rng.random() < FAINT_PROB) for _ in categories]
    sizes = [float(rng.uniform(*FAINT_SIZES) if f else rng.uniform(*OBJECT_SIZES)) for f in faint]
    centres = _place(rng, sizes)
    colour_names = list(COLOURS)
    objects = tuple(
        ToyObject(c, colour_names[int(rng.integers(len(colour_names)))], x, y, s, f)
        for c, (x, y), s, f in zip(categories, centres, sizes, faint)
    )
    scene = Scene(split, index, objects, background_seed=int(rng.integers(2**31)))
    if world == "decoys":
        return replace(scene, decoys=_decoys(scene, np.random.default_rng([scene_seed(split, index), 3])))
    return scene


def generate_scenes(split: Split | str, n: int, start: int = 0, world: str | None = None) -> list[Scene]:
    return [generate_scene(split, i, world) for i in range(start, start + n)]


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
    elif c == "pentagon":
        draw.polygon(_polygon(cx, cy, r, 5, -np.pi / 2), fill=255)
    elif c == "octagon":
        draw.polygon(_polygon(cx, cy, r, 8, np.pi / 8), fill=255)
    elif c == "spark":  # four-pointed star
        draw.polygon(_polygon(cx, cy, r * 1.1, 4, -np.pi / 2, inner=r * 0.3), fill=255)
    elif c == "tee":
        w = r * 0.3
        draw.rectangle((cx - r, cy - r, cx + r, cy - r + 2 * w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif c == "ell":
        w = r * 0.32
        draw.rectangle((cx - r, cy - r, cx - r + 2 * w, cy + r), fill=255)
        draw.rectangle((cx - r, cy + r - 2 * w, cx + r, cy + r), fill=255)
    elif c == "egg":  # upright ellipse
        draw.ellipse((cx - r * 0.62, cy - r, cx + r * 0.62, cy + r), fill=255)
    elif c == "dome":  # half disc
        draw.pieslice((cx - r, cy - r * 0.6, cx + r, cy + r * 1.4), 180, 360, fill=255)
    elif c == "chevron":
        w = r * 0.45
        draw.polygon([(cx - r, cy - r), (cx - r + w, cy - r), (cx + r * 0.55, cy), (cx - r + w, cy + r),
                      (cx - r, cy + r), (cx + r * 0.55 - w, cy)], fill=255)
    elif c == "flag":
        w = r * 0.14
        draw.rectangle((cx - r, cy - r, cx - r + 2 * w, cy + r), fill=255)
        draw.polygon([(cx - r + 2 * w, cy - r), (cx + r, cy - r * 0.5), (cx - r + 2 * w, cy)], fill=255)
    elif c == "kite":
        draw.polygon([(cx, cy - r), (cx + r * 0.6, cy - r * 0.3), (cx, cy + r), (cx - r * 0.6, cy - r * 0.3)],
                     fill=255)
    elif c == "hourglass":
        draw.polygon([(cx - r * 0.8, cy - r), (cx + r * 0.8, cy - r), (cx, cy)], fill=255)
        draw.polygon([(cx - r * 0.8, cy + r), (cx + r * 0.8, cy + r), (cx, cy)], fill=255)
    elif c == "trapezoid":
        draw.polygon([(cx - r * 0.5, cy - r * 0.6), (cx + r * 0.5, cy - r * 0.6), (cx + r, cy + r * 0.6),
                      (cx - r, cy + r * 0.6)], fill=255)
    else:
        raise ValueError(f"unknown category {c!r}")
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def surface_texture(obj: ToyObject, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) brightness factor in [1 - TEXTURE_DEPTH, 1] for ``obj``'s category: stripes centred on the
    object (no random draw, so adding textures left every scene's background and clutter as they were)."""
    if not TEXTURES:
        return np.ones((size, size))
    group = GROUP_OF[obj.category]
    angle, period = TEXTURE_ANGLES[group], TEXTURE_PERIODS[GROUPS[group].index(obj.category)]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    phase = ((xx - obj.x) * np.cos(angle) + (yy - obj.y) * np.sin(angle)) / period
    return 1 - TEXTURE_DEPTH * (0.5 + 0.5 * np.cos(2 * np.pi * phase))
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
    """The scene as a ``size`` x ``size`` RGB image (a fresh copy: callers may draw on it)."""
    settings = (TEXTURES, TEXTURE_DEPTH, TEXTURE_PERIODS, TEXTURE_ANGLES)  # an experiment may change these
    return Image.fromarray(_rendered_pixels(scene, size, settings).copy(), mode="RGB")


@lru_cache(maxsize=512)  # evaluations ask several questions about each scene: render it once (27 KB each)
def _rendered_pixels(scene: Scene, size: int, settings: tuple) -> np.ndarray:
    """(size, size, 3) uint8 pixels of ``scene``; read-only, shared by the cache. ``settings`` (the texture
    constants the drawing reads) is only part of the cache key."""
    rng = np.random.default_rng(scene.background_seed)
    image = _background(rng, size)
    _clutter(rng, image)
    for decoy in scene.decoys:  # under the objects; a flat surface with the stripes' mean brightness
        mask = object_mask(decoy, size)[..., None]
        colour = np.array(COLOURS[decoy.colour], dtype=np.float64) * (1 - TEXTURE_DEPTH / 2)
        image = image * (1 - mask) + colour * mask
    for obj in scene.objects:
        mask = object_mask(obj, size)[..., None]
        opacity = rng.uniform(0.3, 0.45) if obj.faint else 1.0
        colour = np.array(COLOURS[obj.colour], dtype=np.float64) * surface_texture(obj, size)[..., None]
        image = image * (1 - mask * opacity) + colour * mask * opacity
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    pixels.flags.writeable = False
    return pixels


def patch_labels(scene: Scene, patch_size: int = PATCH_SIZE, min_pixels: float = 6.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch category and colour indices after occlusion, shape (grid, grid) each (background coded as
    ``len(CATEGORIES)`` / ``len(COLOURS)``). Used for analysis only: no v2 training stage reads it."""
    grid = IMAGE_SIZE // patch_size
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1)
    for k, obj in enumerate(scene.objects):
        owner[object_mask(obj) > 0.5] = k
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


def object_patch_mask(scene: Scene) -> np.ndarray:
    """(V,) bool, row-major: patches covered by a visible object."""
    return patch_labels(scene)[0].reshape(-1) < len(CATEGORIES)


def decoy_patch_mask(scene: Scene, patch_size: int = PATCH_SIZE, min_pixels: float = 6.0) -> np.ndarray:
    """(V,) bool, row-major: patches where at least ``min_pixels`` of a decoy show (not hidden by an object); all
    False in the plain world."""
    grid = IMAGE_SIZE // patch_size
    shown = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    for decoy in scene.decoys:
        shown |= object_mask(decoy) > 0.5
    for obj in scene.objects:
        shown &= object_mask(obj) <= 0.5
    return (shown.reshape(grid, patch_size, grid, patch_size).sum((1, 3)) >= min_pixels).reshape(-1)
