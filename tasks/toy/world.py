"""The synthetic picture world: scenes of coloured shapes, signs with words, moving shapes.

Everything here is a pure function of its arguments: a scene is sampled from a
:class:`random.Random` and rendered with PIL into a 64x64 RGB image (or 8
frames for a video), so the same seed always gives the same pixels.

Held-out split. Every scene has a text ``key`` that fixes its rendering
completely; :func:`is_heldout` hashes it into one of :data:`HELDOUT_EVERY`
buckets. Evaluation scenes are drawn only from bucket 0 and training scenes
only from the others, so no evaluation picture can ever appear in training
data, while both follow the same distribution (the split is by hash, not by
content).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZE = 64
CELL = SIZE // 2
BACKGROUND = (236, 236, 236)
HELDOUT_EVERY = 5

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 36, 36),
    "green": (34, 160, 60),
    "blue": (40, 76, 224),
    "yellow": (238, 200, 24),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
# Grid cells in reading order: 0 top left, 1 top right, 2 bottom left, 3 bottom right.
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")
WORDS: tuple[str, ...] = (
    "cat",
    "dog",
    "sun",
    "cup",
    "hat",
    "bus",
    "box",
    "pen",
    "key",
    "map",
    "book",
    "fish",
    "bird",
    "milk",
    "lamp",
    "frog",
    "apple",
    "bread",
    "chair",
    "house",
)
DIRECTIONS: tuple[str, ...] = ("right", "left", "up", "down")
# Where a moving shape starts and ends, per direction.
DIRECTION_ENDS: dict[str, tuple[str, str]] = {
    "right": ("left", "right"),
    "left": ("right", "left"),
    "up": ("bottom", "top"),
    "down": ("top", "bottom"),
}
VIDEO_FRAMES = 8
VIDEO_FPS = 8

Combo = tuple[str, str]  # (color, shape)
ALL_COMBOS: tuple[Combo, ...] = tuple((c, s) for c in COLORS for s in SHAPES)


def is_heldout(key: str) -> bool:
    """True for scenes reserved for evaluation (one hash bucket in :data:`HELDOUT_EVERY`)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELDOUT_EVERY == 0


def name(combo: Combo) -> str:
    return f"{combo[0]} {combo[1]}"


def join_words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


# -- shape scenes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    cell: int  # index into POSITIONS
    size: int  # pixels across
    dx: int  # offset from the cell centre
    dy: int

    @property
    def combo(self) -> Combo:
        return (self.color, self.shape)

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def column(self) -> str:
        return "left" if self.cell % 2 == 0 else "right"

    @property
    def row(self) -> str:
        return "top" if self.cell < 2 else "bottom"

    def box(self) -> tuple[float, float, float, float]:
        cx = CELL // 2 + CELL * (self.cell % 2) + self.dx
        cy = CELL // 2 + CELL * (self.cell // 2) + self.dy
        r = self.size / 2
        return (cx - r, cy - r, cx + r, cy + r)


@dataclass(frozen=True)
class Scene:
    """One to four shapes, each in its own cell of a 2x2 grid (sorted by cell)."""

    objects: tuple[Obj, ...]

    @property
    def key(self) -> str:
        parts = [f"{o.shape},{o.color},{o.cell},{o.size},{o.dx},{o.dy}" for o in self.objects]
        return "scene:" + ";".join(parts)

    @property
    def heldout(self) -> bool:
        return is_heldout(self.key)

    def combos(self) -> list[Combo]:
        """Distinct (color, shape) pairs, in cell order."""
        out: list[Combo] = []
        for o in self.objects:
            if o.combo not in out:
                out.append(o.combo)
        return out

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(
            1
            for o in self.objects
            if (shape is None or o.shape == shape) and (color is None or o.color == color)
        )

    def only(self, shape: str | None = None, color: str | None = None) -> Obj | None:
        """The single object with that shape/color, or None when there are 0 or several."""
        found = [
            o
            for o in self.objects
            if (shape is None or o.shape == shape) and (color is None or o.color == color)
        ]
        return found[0] if len(found) == 1 else None

    def at(self, cell: int) -> Obj | None:
        return next((o for o in self.objects if o.cell == cell), None)

    def caption(self) -> str:
        """``a red circle at the top left and a blue star at the bottom right``."""
        return join_words([f"a {o.color} {o.shape} at the {o.position}" for o in self.objects])

    def render(self) -> Image.Image:
        img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
        draw = ImageDraw.Draw(img)
        for o in self.objects:
            _draw_shape(draw, o.shape, o.box(), COLORS[o.color])
        return img


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[float, float, float, float],
    fill: tuple[int, int, int],
) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def sample_scene(
    rng: random.Random,
    heldout: bool,
    min_objects: int = 1,
    max_objects: int = 4,
    distinct: bool = False,
    accept: Callable[[Scene], bool] | None = None,
) -> Scene:
    """A random scene of the held-out (evaluation) or the training part of the world.

    ``distinct`` asks for no repeated (color, shape) pair; ``accept`` may reject scenes.
    """
    for _ in range(100_000):
        n = rng.randint(min_objects, max_objects)
        cells = sorted(rng.sample(range(4), n))
        objects = tuple(
            Obj(
                shape=rng.choice(SHAPES),
                color=rng.choice(list(COLORS)),
                cell=cell,
                size=rng.randint(18, 24),
                dx=rng.randint(-3, 3),
                dy=rng.randint(-3, 3),
            )
            for cell in cells
        )
        scene = Scene(objects)
        if distinct and len(scene.combos()) != len(objects):
            continue
        if accept is not None and not accept(scene):
            continue
        if scene.heldout == heldout:
            return scene
    raise RuntimeError("no scene satisfies the constraints")


# -- signs with words -----------------------------------------------------------------------
@dataclass(frozen=True)
class Sign:
    """A coloured sign with one word in capitals."""

    word: str
    color: str
    top: int  # y of the sign's top edge
    dx: int

    @property
    def key(self) -> str:
        return f"sign:{self.word},{self.color},{self.top},{self.dx}"

    @property
    def heldout(self) -> bool:
        return is_heldout(self.key)

    def caption(self) -> str:
        return f"a {self.color} sign with the word {self.word}"

    def render(self) -> Image.Image:
        img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
        draw = ImageDraw.Draw(img)
        x0, x1 = 2 + self.dx, SIZE - 3 + self.dx
        y0, y1 = self.top, self.top + 26
        draw.rectangle((x0, y0, x1, y1), fill=COLORS[self.color])
        text = self.word.upper()
        font = _fit_font(text, x1 - x0 - 6)
        ink = (0, 0, 0) if self.color == "yellow" else (255, 255, 255)
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=ink, font=font, anchor="mm")
        return img


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit_font(text: str, width: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for size in range(20, 9, -1):
        font = _font(size)
        if font.getlength(text) <= width:
            return font
    return _font(10)


def sample_sign(
    rng: random.Random, heldout: bool, accept: Callable[[Sign], bool] | None = None
) -> Sign:
    for _ in range(100_000):
        sign = Sign(
            word=rng.choice(WORDS),
            color=rng.choice(list(COLORS)),
            top=rng.randint(4, 34),
            dx=rng.randint(-1, 1),
        )
        if accept is not None and not accept(sign):
            continue
        if sign.heldout == heldout:
            return sign
    raise RuntimeError("no sign satisfies the constraints")


# -- videos ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Motion:
    """One shape moving in a straight line across :data:`VIDEO_FRAMES` frames."""

    shape: str
    color: str
    direction: str
    lane: int  # the fixed coordinate (y for left/right, x for up/down)
    size: int

    @property
    def key(self) -> str:
        return f"motion:{self.shape},{self.color},{self.direction},{self.lane},{self.size}"

    @property
    def heldout(self) -> bool:
        return is_heldout(self.key)

    @property
    def start(self) -> str:
        return DIRECTION_ENDS[self.direction][0]

    @property
    def end(self) -> str:
        return DIRECTION_ENDS[self.direction][1]

    def path(self) -> str:
        """``from left to right``, ``from the bottom to the top``..."""
        if self.direction in ("right", "left"):
            return f"from {self.start} to {self.end}"
        return f"from the {self.start} to the {self.end}"

    def caption(self) -> str:
        return f"a {self.color} {self.shape} moving {self.path()}"

    def frames(self, n: int = VIDEO_FRAMES) -> list[Image.Image]:
        low, high = 10, SIZE - 10
        out = []
        for i in range(n):
            t = low + (high - low) * i / (n - 1)
            along = t if self.direction in ("right", "down") else SIZE - t
            cx, cy = (
                (along, self.lane) if self.direction in ("right", "left") else (self.lane, along)
            )
            r = self.size / 2
            img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
            _draw_shape(
                ImageDraw.Draw(img),
                self.shape,
                (cx - r, cy - r, cx + r, cy + r),
                COLORS[self.color],
            )
            out.append(img)
        return out


def sample_motion(rng: random.Random, heldout: bool) -> Motion:
    for _ in range(100_000):
        motion = Motion(
            shape=rng.choice(SHAPES),
            color=rng.choice(list(COLORS)),
            direction=rng.choice(DIRECTIONS),
            lane=rng.randint(16, SIZE - 16),
            size=rng.randint(14, 20),
        )
        if motion.heldout == heldout:
            return motion
    raise RuntimeError("no motion satisfies the constraints")


# -- files ----------------------------------------------------------------------------------
def save_image(img: Image.Image, path: Path) -> None:
    """PNG (lossless) or, for ``.jpg`` names that official layouts require, JPEG quality 95
    without chroma subsampling. Both are byte-for-byte deterministic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, format="JPEG", quality=95, subsampling=0)
    else:
        img.save(path, format="PNG")


def write_video(frames: list[Image.Image], path: Path, fps: int = VIDEO_FPS) -> None:
    """An MPEG-4 Part 2 ``.mp4`` (yuv420p, one thread, fixed bit rate: deterministic bytes)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = SIZE, SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 1_000_000
        stream.codec_context.thread_count = 1
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
