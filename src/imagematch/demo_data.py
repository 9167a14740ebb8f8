"""Synthetic images with exact captions: coloured shapes on patterned backgrounds.

The same generator trains the built-in demo model (bench/quality/train_tiny.py), writes the demo images a
newcomer can index on an offline machine (`imagematch demo-images`), and makes the held-out sets of the
offline quality tests. Everything is drawn from a seeded random generator, so it is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 85, 215),
    "yellow": (240, 205, 40),
    "purple": (135, 50, 170),
    "orange": (245, 130, 25),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SIZES = ("small", "large")
# The search the Quick start (README.md) and `imagematch demo-images` suggest: the default demo images hold two
# green circles, and the demo model ranks them first (tests/test_quick_start.py).
EXAMPLE_QUERY = "a green circle"
PATTERNS = ("plain", "striped", "dotted", "checkered")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "pink": (240, 160, 190),
    "brown": (120, 80, 45),
    "cyan": (60, 200, 210),
    "green": (100, 190, 110),
    "blue": (90, 120, 230),
}


@dataclass(frozen=True, slots=True)
class Scene:
    shape: str
    colour: str
    size: str
    pattern: str
    background: str
    x: float  # centre, as a fraction of the width
    y: float
    angle: float
    cluttered: bool = False  # scattered distractor shapes around the subject

    @property
    def caption(self) -> str:
        clutter = " among clutter" if self.cluttered else ""
        return f"a {self.size} {self.colour} {self.shape} on a {self.pattern} {self.background} background{clutter}"

    @property
    def short_caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    @property
    def slug(self) -> str:
        return f"{self.size}-{self.colour}-{self.shape}-on-{self.pattern}-{self.background}"


def random_scene(rng: random.Random, *, cluttered: bool = False) -> Scene:
    colour = rng.choice(list(COLOURS))
    background = rng.choice([b for b in BACKGROUNDS if b != colour])
    size = rng.choice(SIZES)
    margin = 0.3 if size == "small" else 0.42
    return Scene(
        shape=rng.choice(SHAPES),
        colour=colour,
        size=size,
        pattern=rng.choice(PATTERNS),
        background=background,
        x=rng.uniform(margin, 1 - margin),
        y=rng.uniform(margin, 1 - margin),
        angle=rng.uniform(0, 2 * math.pi),
        cluttered=cluttered,
    )


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, int(c * factor))) for c in colour)
    return (r, g, b)


def _background(draw: ImageDraw.ImageDraw, side: int, scene: Scene, rng: random.Random) -> None:
    base = BACKGROUNDS[scene.background]
    draw.rectangle((0, 0, side, side), fill=base)
    other = _shade(base, 0.72)
    step = side // 8
    if scene.pattern == "striped":
        for i in range(0, side * 2, step):
            draw.polygon([(i, 0), (i + step // 2, 0), (i + step // 2 - side, side), (i - side, side)], fill=other)
    elif scene.pattern == "dotted":
        for cx in range(step // 2, side, step):
            for cy in range(step // 2, side, step):
                r = step // 5
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=other)
    elif scene.pattern == "checkered":
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    draw.rectangle((i * step, j * step, (i + 1) * step, (j + 1) * step), fill=other)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    def ring(count: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        points = []
        for i in range(count):
            theta = offset + angle + 2 * math.pi * i / count
            r = radii[i % len(radii)]
            points.append((cx + r * math.cos(theta), cy + r * math.sin(theta)))
        return points

    if shape == "square":
        return ring(4, [radius], math.pi / 4)
    if shape == "triangle":
        return ring(3, [radius], -math.pi / 2)
    if shape == "diamond":
        return ring(4, [radius, radius * 0.6], 0)
    if shape == "star":
        return ring(10, [radius, radius * 0.45], -math.pi / 2)
    if shape == "cross":
        w = radius * 0.36
        arm = [(-radius, -w), (-w, -w), (-w, -radius), (w, -radius), (w, -w), (radius, -w)]
        arm += [(radius, w), (w, w), (w, radius), (-w, radius), (-w, w), (-radius, w)]
        cos, sin = math.cos(angle), math.sin(angle)
        return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in arm]
    raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
                radius: float, angle: float) -> None:  # fmt: skip
    outline = _shade(colour, 0.6)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour, outline=outline, width=2)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=colour, outline=outline)


def render(scene: Scene, side: int = 256, seed: int = 0) -> Image.Image:
    """Draw a scene at `side` pixels (drawn at twice the size and reduced, for smooth edges)."""
    rng = random.Random(seed)
    big = side * 2
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _background(draw, big, scene, rng)
    if scene.cluttered:
        for _ in range(14):
            colour = COLOURS[rng.choice([c for c in COLOURS if c != scene.colour])]
            _draw_shape(draw, rng.choice(SHAPES), colour, rng.uniform(0, big), rng.uniform(0, big),
                        big * rng.uniform(0.03, 0.07), rng.uniform(0, 6.3))  # fmt: skip
    radius = big * (rng.uniform(0.1, 0.15) if scene.size == "small" else rng.uniform(0.26, 0.34))
    _draw_shape(draw, scene.shape, COLOURS[scene.colour], scene.x * big, scene.y * big, radius, scene.angle)
    return image.resize((side, side), Image.Resampling.LANCZOS)


def scenes(seed: int, count: int, *, cluttered: bool = False) -> Iterator[Scene]:
    rng = random.Random(seed)
    for _ in range(count):
        yield random_scene(rng, cluttered=cluttered)


def write_demo_images(folder: Path, count: int = 48, seed: int = 2026) -> list[Path]:
    """Demo images for a first try of /upload-samples: varied, and never near-duplicates of each other.

    Flat synthetic graphics often land within the duplicate threshold of one another (pHash is grayscale
    and low-frequency), so candidates too close to an image already written are skipped.
    """
    from imagematch.fingerprint import hamming, perceptual_hash

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    hashes: list[int] = []
    rng = random.Random(seed)
    attempts = 0
    while len(written) < count and attempts < count * 50:
        attempts += 1
        scene = random_scene(rng)
        image = render(scene, seed=attempts)
        phash = perceptual_hash(image)
        if any(hamming(phash, h) <= 14 for h in hashes):
            continue
        hashes.append(phash)
        path = folder / f"{len(written) + 1:03d}-{scene.slug}.png"
        image.save(path, optimize=True)
        written.append(path)
    return written
