"""The shapes world: a seeded, deterministic generator of 64x64 images of one coloured shape
on a plain background, each with its caption, its edge map and a half-resolution copy, and
the scorers that read colour and position back out of a generated image.

Everything here is numpy + Pillow (+ OpenCV for edges); torch is not needed to make data.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 225),
    "yellow": (235, 215, 40), "cyan": (40, 205, 215), "magenta": (215, 50, 205),
    "orange": (245, 140, 30), "purple": (125, 50, 175),
}
SHAPES = ("circle", "square", "triangle")
# the centre of each named region, in pixels of a 64x64 image
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (16, 32), "right": (48, 32), "top": (32, 16), "bottom": (32, 48),
    "center": (32, 32)}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128), "white": (238, 238, 238), "black": (22, 22, 22)}
PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top",
          "bottom": "at the bottom", "center": "in the center"}
# every word a caption uses: the demo tokenizer gives each one a single token
WORDS = sorted({w for p in PHRASE.values() for w in p.split()} | set(COLOURS) | set(SHAPES)
               | set(BACKGROUNDS) | {"a", "background", "shape", "gray", "centre", "middle",
                                     "image", "of", "with", "and"})
HELD_OUT_SEED = 1234
N_HELD_OUT = 48


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    background: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[int, int, int]
    bg_rgb: tuple[int, int, int]

    @property
    def combo(self) -> tuple[str, str, str, str]:
        return (self.colour, self.shape, self.position, self.background)

    @property
    def caption(self) -> str:
        return caption(*self.combo)


def caption(colour: str, shape: str, position: str, background: str) -> str:
    return f"a {colour} {shape} {PHRASE[position]}, {background} background"


def all_combos() -> list[tuple[str, str, str, str]]:
    return list(itertools.product(COLOURS, SHAPES, POSITIONS, BACKGROUNDS))


def held_out() -> list[tuple[str, str, str, str]]:
    """Combinations never shown in training: the semantic tests prompt with these."""
    combos = all_combos()
    rng = np.random.default_rng(HELD_OUT_SEED)
    picks = rng.choice(len(combos), size=N_HELD_OUT, replace=False)
    return [combos[i] for i in sorted(picks)]


def training_combos() -> list[tuple[str, str, str, str]]:
    out = set(held_out())
    return [c for c in all_combos() if c not in out]


def nearest_region(x: float, y: float) -> str:
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2)


def random_scene(rng: np.random.Generator, combos: list[tuple[str, str, str, str]],
                 free: bool = False) -> Scene:
    """A scene of one of `combos`. `free` places the shape anywhere (its caption names the
    nearest region): ControlNet data, where the edge map says exactly where."""
    colour, shape, position, background = combos[rng.integers(len(combos))]
    radius = float(rng.uniform(8.0, 13.0))
    if free:
        cx, cy = (float(v) for v in rng.uniform(radius + 1, SIZE - radius - 1, size=2))
        position = nearest_region(cx, cy)
    else:
        ax, ay = POSITIONS[position]
        cx, cy = (a + float(rng.uniform(-4, 4)) for a in (ax, ay))
    rgb = jitter(rng, COLOURS[colour], 12)
    bg = jitter(rng, BACKGROUNDS[background], 8)
    return Scene(colour, shape, position, background, cx, cy, radius, rgb, bg)  # type: ignore[arg-type]


def jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int
           ) -> tuple[int, int, int]:
    """`rgb` with each channel moved by up to `amount` (a scene's colour is never exact)."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255))  # type: ignore[return-value]
                 for c in rgb)


def scene_of(colour: str, shape: str, position: str, background: str,
             radius: float = 11.0) -> Scene:
    cx, cy = POSITIONS[position]
    return Scene(colour, shape, position, background, float(cx), float(cy), radius,
                 COLOURS[colour], BACKGROUNDS[background])


def shape_mask(scene: Scene, supersample: int = 4) -> np.ndarray:
    """Coverage of the shape per pixel, in [0, 1] (anti-aliased by supersampling)."""
    s = supersample
    img = Image.new("L", (SIZE * s, SIZE * s), 0)
    draw = ImageDraw.Draw(img)
    cx, cy, r = scene.cx * s, scene.cy * s, scene.radius * s
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif scene.shape == "square":
        h = r * 0.9
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=255)
    else:  # an upright triangle whose centroid is the centre
        h = r * 1.15
        draw.polygon([(cx, cy - h), (cx - h * 0.866 * 1.1, cy + h * 0.5 * 1.1),
                      (cx + h * 0.866 * 1.1, cy + h * 0.5 * 1.1)], fill=255)
    img = img.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def render(scene: Scene) -> np.ndarray:
    """The scene as a 64x64x3 uint8 image."""
    m = shape_mask(scene)[..., None]
    img = np.asarray(scene.bg_rgb, np.float32) * (1 - m) + np.asarray(scene.rgb, np.float32) * m
    return np.round(img).astype(np.uint8)


def edge_map(scene: Scene) -> np.ndarray:
    """The shape's outline, white on black (64x64x3 uint8): what a user draws, and close
    to what Canny Edges gives for an image of the shape."""
    import cv2

    m = (shape_mask(scene) > 0.5).astype(np.uint8)
    e = (m - cv2.erode(m, np.ones((3, 3), np.uint8))) * 255  # a closed 1-pixel outline
    return np.repeat(e[..., None], 3, axis=2)


def half(image: np.ndarray) -> np.ndarray:
    """A half-resolution copy (area average): the upscaler's input."""
    return np.asarray(Image.fromarray(image).resize((SIZE // 2, SIZE // 2),
                                                    Image.Resampling.BOX))


def dataset(n: int, seed: int, combos=None, free: bool = False
            ) -> tuple[list[Scene], np.ndarray]:
    """n scenes and their images (n x 64 x 64 x 3 uint8), the same for the same seed."""
    rng = np.random.default_rng(seed)
    combos = combos if combos is not None else training_combos()
    scenes = [random_scene(rng, combos, free) for _ in range(n)]
    return scenes, np.stack([render(s) for s in scenes])


# ---- scoring generated images ------------------------------------------------------------

def foreground(image: np.ndarray, threshold: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels that differ from the background (estimated from the border) by more than
    `threshold` in RGB distance, and the background colour."""
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(img - bg, axis=-1)
    return dist > threshold, bg


def nearest_colour(pixels: np.ndarray) -> np.ndarray:
    """Index into COLOURS of the nearest named colour, per pixel (N x 3)."""
    table = np.asarray(list(COLOURS.values()), np.float32)
    d = ((pixels[:, None, :].astype(np.float32) - table[None]) ** 2).sum(-1)
    return d.argmin(1)


def dominant_colour(image: np.ndarray) -> str | None:
    fg, _ = foreground(image)
    if fg.sum() < 8:
        return None
    votes = np.bincount(nearest_colour(image[fg]), minlength=len(COLOURS))
    return list(COLOURS)[int(votes.argmax())]


def shape_centre(image: np.ndarray) -> tuple[float, float] | None:
    fg, _ = foreground(image)
    if fg.sum() < 8:
        return None
    ys, xs = np.nonzero(fg)
    return float(xs.mean()), float(ys.mean())


def score(image: np.ndarray, colour: str, position: str) -> tuple[bool, bool]:
    """(colour right, position right) for a generated 64x64 RGB uint8 image."""
    got = dominant_colour(image)
    centre = shape_centre(image)
    return got == colour, centre is not None and nearest_region(*centre) == position


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def filled(edges: np.ndarray) -> np.ndarray:
    """The region an outline encloses (outline included), as a boolean mask."""
    import cv2

    e = (edges[..., 0] if edges.ndim == 3 else edges) > 127
    flood = e.astype(np.uint8) * 255
    work = flood.copy()
    mask = np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8)
    cv2.floodFill(work, mask, (0, 0), 255)
    return (work == 0) | e
