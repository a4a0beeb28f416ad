"""Synthetic bi-temporal aerial scenes of a suburb, with change labels.

The pure core is :func:`make_scene`: ``(before, after, label)`` arrays for one scene,
deterministic for a given ``(size, seed)``. :func:`write_scene_pair` writes one scene as
three GeoTIFFs with a real projected CRS (UTM 33N, 0.5 m pixels by default).

What a scene contains (0.5 m pixels, so 2 px = 1 m):

- textured ground: dry grass, green grass and bare soil mixed by low-frequency noise;
- a street grid (asphalt, sidewalks) at a random orientation, a few cars;
- lots along the streets with lawns, driveways and buildings 8-40 px a side
  (rectangles and L shapes; gable, hip and flat roofs in varied colours), lit by the
  sun of each date and casting shadows;
- trees (textured crowns with shadows), along streets, in yards and in clusters;
- fields and woods gathered in districts, so density varies from rural to dense suburb.

The label (255 = change) is the footprint of every building that appears (most) or
vanishes (some) between the dates: a cluster of new development plus scattered
single changes, about 2-8 % of the pixels. Nothing else is labelled, although plenty
changes: sun direction and height (so roof shading and shadows), illumination, gamma
and colour balance, vegetation season, lawns around new houses, a cleared patch of
soil, cars, blur, sensor noise and a random misregistration of the whole after image
(up to 1 px along each axis by default). A plain pixel difference therefore finds many
false changes: with the best threshold chosen on the truth, its F1 is about 0.2.
"""
from __future__ import annotations

import math
import os
from statistics import NormalDist
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["Scene", "make_scene", "write_scene_pair", "scene_origin", "DEFAULT_CRS", "DEFAULT_PIXEL_SIZE"]

DEFAULT_CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N
DEFAULT_PIXEL_SIZE = 0.5  # metres

# Roof colours (RGB, 0..255): greys, browns, terracotta, bluish slate, beige.
_ROOF_PALETTE = np.array([
    [68, 68, 72], [92, 92, 96], [118, 116, 116], [150, 148, 145], [108, 88, 74],
    [134, 104, 84], [160, 98, 72], [140, 86, 66], [92, 98, 106], [172, 160, 136],
], dtype=np.float32)
_FLAT_PALETTE = np.array([[205, 205, 200], [178, 180, 178], [150, 152, 150], [190, 182, 165]], dtype=np.float32)
_CAR_PALETTE = np.array([
    [230, 230, 230], [30, 30, 35], [150, 20, 25], [40, 60, 120], [170, 170, 175], [90, 90, 95],
], dtype=np.float32)


class Scene(NamedTuple):
    """One synthetic scene.

    Attributes:
        before: uint8 (3, H, W) RGB image of the first date.
        after: uint8 (3, H, W) RGB image of the second date (misregistered by up to
            ``misregistration`` px along each axis, as real pairs are).
        label: uint8 (H, W), 255 where a building appeared or vanished, else 0; on the
            grid of ``before``.
    """

    before: np.ndarray
    after: np.ndarray
    label: np.ndarray


@dataclass
class _Rect:
    """A rotated rectangle (or L shape) in pixel coordinates."""

    cx: float
    cy: float
    length: float  # along the street (axis u), px
    depth: float  # across the street (axis v), px
    angle: float  # radians, direction of axis u in (x, y)
    wing: Optional[tuple[float, float, float, float]] = None  # (du, dv, length, depth) in the local frame

    def coverage(self, height: int, width: int, pad: float = 1.5):
        """Soft coverage (0..1) of the shape inside its bounding box.

        Returns ``(rows slice, cols slice, coverage float32 (h, w), u, v)`` with u, v
        the local coordinates of each pixel centre, or None when outside the image.
        """
        radius = 0.5 * math.hypot(self.length, self.depth) + pad
        if self.wing is not None:
            du, dv, wl, wd = self.wing
            radius = max(radius, math.hypot(du, dv) + 0.5 * math.hypot(wl, wd) + pad)
        r0, r1 = max(int(self.cy - radius), 0), min(int(self.cy + radius) + 2, height)
        c0, c1 = max(int(self.cx - radius), 0), min(int(self.cx + radius) + 2, width)
        if r0 >= r1 or c0 >= c1:
            return None
        ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - self.cy
        xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - self.cx
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = xs * ca + ys * sa
        v = -xs * sa + ys * ca
        cov = _box(u, v, self.length, self.depth)
        if self.wing is not None:
            du, dv, wl, wd = self.wing
            cov = np.maximum(cov, _box(u - du, v - dv, wl, wd))
        return slice(r0, r1), slice(c0, c1), cov, u, v


def _box(u: np.ndarray, v: np.ndarray, length: float, depth: float) -> np.ndarray:
    """Antialiased coverage of an axis-aligned box centred at u = v = 0."""
    return np.clip(length / 2 - np.abs(u) + 0.5, 0, 1) * np.clip(depth / 2 - np.abs(v) + 0.5, 0, 1)


@dataclass
class _Building:
    shape: _Rect
    colour: np.ndarray  # (3,) float
    roof: str  # "gable", "hip", "flat"
    height: float  # px (0.5 m each)
    exists: list  # [before, after] booleans
    lot: _Rect
    drive: Optional[_Rect]
    area: int = 0  # pixels of the footprint inside the image
    cache: Optional[tuple] = None


@dataclass
class _Tree:
    cx: float
    cy: float
    radius: float
    height: float
    colour: np.ndarray
    exists: list = field(default_factory=lambda: [True, True])


@dataclass
class _Date:
    """Conditions of one acquisition date."""

    sun: tuple[float, float]  # unit vector (dx, dy) from an object towards its shadow
    shadow_factor: float  # shadow length per px of height (cot of the sun elevation)
    shadow_strength: float  # 0..1 darkening in full shadow
    grass: np.ndarray  # (3,) natural grass colour (season)
    lawn: np.ndarray  # (3,) lawn colour (season)
    foliage: np.ndarray  # (3,) tree colour multiplier (season)
    gain: np.ndarray  # (3,) per-channel gain
    gamma: float
    haze: float  # 0..255 added uniformly, contrast reduced
    blur: float  # gaussian sigma, px
    noise: float  # sensor noise sigma, 0..255 units


def _noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth random field (H, W), zero mean and unit std, features about ``cell`` px."""
    if cell <= 2:
        field_ = ndimage.gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), cell / 2)
    else:
        gh, gw = int(height / cell) + 3, int(width / cell) + 3
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        big = Image.fromarray(grid, mode="F").resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
        off = int(cell)
        field_ = np.asarray(big, dtype=np.float32)[off:off + height, off:off + width]
    field_ = field_ - field_.mean()
    return field_ / (field_.std() + 1e-6)


def _fractal(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 4) -> np.ndarray:
    """Sum of :func:`_noise` octaves (cell, cell/2, ...), amplitudes halving; unit std."""
    total = np.zeros((height, width), np.float32)
    amp = 1.0
    for _ in range(octaves):
        total += amp * _noise(rng, height, width, max(cell, 1.0))
        cell /= 2
        amp *= 0.5
    return total / (total.std() + 1e-6)


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y - dy, x - dx]``, zero where that falls outside."""
    out = np.zeros_like(a)
    h, w = a.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def _shadow(heights: np.ndarray, date: _Date) -> np.ndarray:
    """Shadow (H, W) in 0..1 cast by a height map (px) under the date's sun."""
    dx, dy = date.sun
    reach = float(heights.max()) * date.shadow_factor
    shadow = np.zeros(heights.shape, bool)
    last = None
    for t in range(1, int(math.ceil(reach)) + 1):
        off = (int(round(t * dy)), int(round(t * dx)))
        if off == last:
            continue
        last = off
        caster = _shift(heights, *off) - t / date.shadow_factor
        shadow |= caster > heights + 0.5
    return ndimage.gaussian_filter(shadow.astype(np.float32), 0.7)


def _paint(img: np.ndarray, rows: slice, cols: slice, colour: np.ndarray, cov: np.ndarray) -> None:
    """Blend ``colour`` ((3,) or (3, h, w)) into ``img`` with coverage ``cov`` (h, w)."""
    if colour.ndim == 1:
        colour = colour[:, None, None]
    region = img[:, rows, cols]
    region += (colour - region) * cov[None]


def _make_date(rng: np.random.Generator, grass: np.ndarray, lawn: np.ndarray, strength: float) -> _Date:
    azimuth = rng.uniform(0, 2 * math.pi)
    season = rng.uniform(-1, 1) * strength  # <0 greener spring, >0 dry autumn
    dry = np.array([1.0 + 0.35 * season, 1.0 + 0.08 * season, 1.0 - 0.2 * season], np.float32)
    return _Date(
        sun=(math.cos(azimuth), math.sin(azimuth)),
        shadow_factor=rng.uniform(0.45, 1.1),
        shadow_strength=rng.uniform(0.45, 0.65),
        grass=grass * dry * rng.uniform(0.92, 1.08),
        lawn=lawn * np.array([1.0 + 0.25 * season, 1.0 - 0.05 * season, 1.0 - 0.1 * season], np.float32),
        foliage=np.array([1.0 + 0.3 * season, 1.0 + 0.05 * season, 1.0 - 0.1 * season], np.float32),
        gain=(rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength)
              * rng.uniform(1 - 0.04 * strength, 1 + 0.04 * strength, 3)).astype(np.float32),
        gamma=float(np.exp(rng.uniform(-0.15, 0.15) * strength)),
        haze=rng.uniform(0, 12) * strength,
        blur=rng.uniform(0.2, 0.2 + 0.7 * strength),
        noise=rng.uniform(1.0, 1.0 + 3.0 * strength),
    )


def make_scene(
    size: int,
    seed: int,
    *,
    change_fraction: tuple[float, float] = (0.02, 0.08),
    misregistration: float = 1.0,
    nuisance: float = 1.0,
) -> Scene:
    """Generate one bi-temporal scene (deterministic for a given ``size`` and ``seed``).

    Args:
        size: edge of the square scene in pixels (0.5 m pixels; at least 32).
        seed: any non-negative integer.
        change_fraction: range the target fraction of changed pixels is drawn from;
            ``(0, 0)`` gives a pair without labelled change. Reached approximately.
        misregistration: largest shift of the after image in pixels (each axis).
        nuisance: 0..1 strength of the unlabelled photometric and season changes.

    Returns:
        :class:`Scene` ``(before, after, label)``: uint8 (3, size, size) twice and
        uint8 (size, size) with 0/255.
    """
    if size < 32:
        raise ValueError("size must be at least 32 px")
    # Every step draws from the one generator in this order: reordering them changes every scene.
    rng = np.random.default_rng(seed)
    h = w = int(size)
    palette = _make_palette(rng)
    dates = [_make_date(rng, palette.grass, palette.lawn, nuisance) for _ in range(2)]
    ground = _make_ground(rng, h, w, palette)
    streets = _make_streets(rng, h, w, ground, palette)
    buildings, n_fields = _lay_out_buildings(rng, streets, h, w)
    buildings = _inside_image(buildings, h, w)
    label = _choose_changes(rng, buildings, change_fraction, h, w)
    trees = _plant_trees(rng, h, w, buildings, streets.road, n_fields, label)
    cars = [_park_cars(rng, h, w, streets) for _ in range(2)]  # different on each date
    patches = _soil_patches(rng, h, w, nuisance)
    world = _World(h, w, palette, ground, streets, buildings, trees, cars, patches)
    before, after = [_render(world, d, date, rng) for d, date in enumerate(dates)]
    after = _misregister(rng, after, misregistration)
    return Scene(_to_uint8(before), _to_uint8(after), (label * 255).astype(np.uint8))


# --------------------------------------------------------------------------- make_scene's steps


@dataclass
class _Palette:
    """The scene's base colours (3,) float32 RGB 0..255."""

    grass: np.ndarray
    dry: np.ndarray
    soil: np.ndarray
    lawn: np.ndarray
    asphalt: np.ndarray
    sidewalk: np.ndarray
    concrete: np.ndarray


def _make_palette(rng: np.random.Generator) -> _Palette:
    """Each base colour drawn around a typical value (grass, soil, roads...)."""
    grass = np.array([116, 124, 80], np.float32) * rng.uniform(0.9, 1.1, 3)
    dry = np.array([152, 140, 102], np.float32) * rng.uniform(0.9, 1.1, 3)
    soil = np.array([150, 124, 98], np.float32) * rng.uniform(0.85, 1.1, 3)
    lawn = np.array([104, 122, 76], np.float32) * rng.uniform(0.9, 1.1, 3)
    asphalt = np.array([118, 118, 120], np.float32) * rng.uniform(0.75, 1.15)
    sidewalk = np.array([188, 186, 180], np.float32) * rng.uniform(0.9, 1.05)
    concrete = np.array([196, 194, 188], np.float32) * rng.uniform(0.85, 1.05)
    return _Palette(grass, dry, soil, lawn, asphalt, sidewalk, concrete)


@dataclass
class _Ground:
    """Ground texture shared by both dates: image = w_grass * grass(date) + fixed.

    ``w_grass`` (H, W) and ``fixed`` (3, H, W) float32; ``tex`` (H, W) brightness variation
    and ``grain`` (H, W) fine grain (grass blades, roof texture), unit std."""

    w_grass: np.ndarray
    fixed: np.ndarray
    tex: np.ndarray
    grain: np.ndarray


def _make_ground(rng: np.random.Generator, h: int, w: int, palette: _Palette) -> _Ground:
    """Dry grass, green grass and bare soil mixed by low-frequency noise; the grass colour
    depends on the season, so it stays a separate weight."""
    mix = _fractal(rng, h, w, cell=rng.uniform(60, 160), octaves=3)
    grass_w = np.clip(0.5 + 0.35 * mix, 0, 1)
    soil_w = np.clip(_fractal(rng, h, w, cell=rng.uniform(40, 120), octaves=2) - 0.9, 0, 1) * 0.8
    tex = _fractal(rng, h, w, cell=24, octaves=3)
    grain = _noise(rng, h, w, 1.2)
    brightness = 1 + 0.09 * tex + 0.05 * grain
    w_grass = grass_w * (1 - soil_w) * brightness
    fixed = ((1 - grass_w) * (1 - soil_w) * brightness)[None] * palette.dry[:, None, None] \
        + (soil_w * brightness)[None] * palette.soil[:, None, None]
    return _Ground(w_grass, fixed, tex, grain)


@dataclass
class _Streets:
    """A street grid at angle ``theta``: streets along axis a every ``spacing_b`` px (across
    lots), cross streets every ``spacing_a`` px, offsets ``a0``/``b0``; widths in px.

    ``road`` (H, W) asphalt coverage; the streets as one premultiplied layer: image =
    image * (1 - ``alpha``) + ``colour`` (3, H, W)."""

    theta: float
    ct: float
    st: float
    spacing_a: float
    spacing_b: float
    road_w: float
    walk_w: float
    a0: float
    b0: float
    road: np.ndarray
    alpha: np.ndarray
    colour: np.ndarray

    def xy(self, a: float, b: float) -> tuple[float, float]:
        """Pixel (x, y) of the street-frame point (a, b)."""
        return a * self.ct - b * self.st, a * self.st + b * self.ct


def _make_streets(rng: np.random.Generator, h: int, w: int, ground: _Ground, palette: _Palette) -> _Streets:
    """Asphalt and sidewalks of a street grid at a random orientation."""
    theta = rng.uniform(0, math.pi)
    ct, st = math.cos(theta), math.sin(theta)
    spacing_b = rng.uniform(70, 120)  # between parallel streets (across lots)
    spacing_a = rng.uniform(180, 320)  # between cross streets
    road_w = rng.uniform(7, 11)
    walk_w = rng.uniform(2, 3.5)
    b0, a0 = rng.uniform(0, spacing_b), rng.uniform(0, spacing_a)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    a_map = xx * ct + yy * st
    b_map = -xx * st + yy * ct
    del yy, xx
    dist_b = np.abs(np.mod(b_map - b0 + spacing_b / 2, spacing_b) - spacing_b / 2)
    dist_a = np.abs(np.mod(a_map - a0 + spacing_a / 2, spacing_a) - spacing_a / 2)
    dist_road = np.minimum(dist_a, dist_b)
    road = np.clip(road_w / 2 - dist_road + 0.5, 0, 1)
    walk = np.clip(road_w / 2 + 1 + walk_w - dist_road + 0.5, 0, 1) * np.clip(dist_road - road_w / 2 - 1 + 0.5, 0, 1)
    del a_map, b_map, dist_a, dist_b, dist_road
    alpha = np.clip(road + walk, 0, 1)
    grain, tex = ground.grain, ground.tex
    colour = (walk * (1 + 0.03 * grain))[None] * palette.sidewalk[:, None, None] \
        + (road * (1 + 0.04 * tex + 0.03 * grain))[None] * palette.asphalt[:, None, None]
    return _Streets(theta, ct, st, spacing_a, spacing_b, road_w, walk_w, a0, b0, road, alpha, colour)


def _block_indices(s: _Streets, h: int, w: int) -> tuple[range, range]:
    """(k, j) ranges of the street blocks covering the image (k across lots, j along)."""
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float32)
    a_c = corners[:, 0] * s.ct + corners[:, 1] * s.st
    b_c = -corners[:, 0] * s.st + corners[:, 1] * s.ct
    k_range = range(int(math.floor((b_c.min() - s.b0) / s.spacing_b)) - 1,
                    int(math.ceil((b_c.max() - s.b0) / s.spacing_b)) + 1)
    j_range = range(int(math.floor((a_c.min() - s.a0) / s.spacing_a)) - 1,
                    int(math.ceil((a_c.max() - s.a0) / s.spacing_a)) + 1)
    return k_range, j_range


def _districts(rng: np.random.Generator) -> Callable[[float, float], bool]:
    """``rural(x, y)``: whether a block there is left as a field. Fields gather in districts:
    a smooth random function of position, thresholded (a share of 5-45 % of the blocks)."""
    p_field = rng.uniform(0.05, 0.45)  # share of blocks left as fields (rural .. dense suburb)
    waves = [(rng.normal(0, 2 * math.pi / 700, 2), rng.uniform(0, 2 * math.pi)) for _ in range(6)]
    cut = NormalDist().inv_cdf(p_field) * math.sqrt(len(waves) / 2)

    def rural(x: float, y: float) -> bool:
        return sum(math.cos(k[0] * x + k[1] * y + ph) for k, ph in waves) + rng.normal(0, 0.4) < cut

    return rural


def _lay_out_buildings(rng: np.random.Generator, s: _Streets, h: int, w: int) -> tuple[list[_Building], int]:
    """Every block between streets: a field, or lots with houses on both sides.

    Returns (the buildings, the number of field blocks)."""
    k_range, j_range = _block_indices(s, h, w)
    lot_depth = s.spacing_b / 2 - s.road_w / 2 - 1 - s.walk_w
    buildings: list[_Building] = []
    n_fields = 0
    rural = _districts(rng)
    p_vacant = rng.uniform(0.05, 0.25)  # share of empty lots in a built block
    for k in k_range:
        for j in j_range:
            a_lo = s.a0 + j * s.spacing_a + s.road_w / 2 + s.walk_w + 2
            a_hi = s.a0 + (j + 1) * s.spacing_a - s.road_w / 2 - s.walk_w - 2
            b_street = s.b0 + k * s.spacing_b
            if rural(*s.xy((a_lo + a_hi) / 2, b_street + s.spacing_b / 2)):
                n_fields += 1
                continue
            buildings += _build_block(rng, s, a_lo, a_hi, b_street, lot_depth, p_vacant, h, w)
    return buildings, n_fields


def _build_block(rng: np.random.Generator, s: _Streets, a_lo: float, a_hi: float, b_street: float,
                 lot_depth: float, p_vacant: float, h: int, w: int) -> list[_Building]:
    """The lots on both sides of the gap between two parallel streets (a block shares a
    few roof colours); some lots stay vacant."""
    buildings = []
    style_roofs = rng.choice(len(_ROOF_PALETTE), size=3)
    for side, street in ((+1, b_street), (-1, b_street + s.spacing_b)):
        lot_w = rng.uniform(18, 44)
        n_lots = int((a_hi - a_lo) // lot_w)
        if n_lots < 1:
            continue
        lot_w = (a_hi - a_lo) / n_lots
        bl_frac = rng.uniform(0.5, 0.8)
        for i in range(n_lots):
            if rng.random() < p_vacant:
                continue
            bld = _make_building(rng, s, street, side, a_lo + (i + 0.5) * lot_w, lot_w, bl_frac, lot_depth,
                                 style_roofs, h, w)
            if bld is not None:
                buildings.append(bld)
    return buildings


def _make_building(rng: np.random.Generator, s: _Streets, street: float, side: int, a_mid: float, lot_w: float,
                   bl_frac: float, lot_depth: float, style_roofs: np.ndarray, h: int, w: int) -> Optional[_Building]:
    """A house on the lot centred at ``a_mid`` along the street, facing it from ``side``:
    footprint (maybe an L), roof, lot and driveway. None when far off the image."""
    length = float(np.clip(lot_w * bl_frac * rng.uniform(0.9, 1.1), 8, 40))
    depth = float(np.clip(rng.uniform(0.45, 0.75) * lot_depth, 8, 40))
    setback = rng.uniform(2, max(2.5, lot_depth - depth - 3))
    b_mid = street + side * (s.road_w / 2 + 1 + s.walk_w + setback + depth / 2)
    lot_b = street + side * (s.road_w / 2 + 1 + s.walk_w + lot_depth / 2)
    angle = s.theta + rng.normal(0, 0.03)
    x, y = s.xy(a_mid, b_mid)
    if not (-60 < x < w + 60 and -60 < y < h + 60):
        return None
    wing = None
    if rng.random() < 0.25:
        wl = length * rng.uniform(0.35, 0.6)
        wd = depth * rng.uniform(0.3, 0.6)
        du = rng.choice([-1, 1]) * (length / 2 - wl / 2)
        wing = (float(du), float(side * (depth / 2 + wd / 2 - 0.5)), float(wl), float(wd))
    roof, colour = _pick_roof(rng, style_roofs)
    shape = _Rect(x, y, length, depth, angle, wing)
    lx, ly = s.xy(a_mid, lot_b)
    lot = _Rect(lx, ly, lot_w - 1.5, lot_depth, s.theta)
    drive = _make_driveway(rng, s, street, side, a_mid, lot_w, setback)
    return _Building(shape, colour, str(roof), float(rng.uniform(6, 13)), [True, True], lot, drive)


def _pick_roof(rng: np.random.Generator, style_roofs: np.ndarray) -> tuple[str, np.ndarray]:
    """(roof kind, colour (3,) float32): flat roofs light; most others in the block's style."""
    roof = rng.choice(["gable", "hip", "flat"], p=[0.55, 0.3, 0.15])
    if roof == "flat":
        colour = _FLAT_PALETTE[rng.integers(len(_FLAT_PALETTE))]
    elif rng.random() < 0.7:
        colour = _ROOF_PALETTE[rng.choice(style_roofs)]
    else:
        colour = _ROOF_PALETTE[rng.integers(len(_ROOF_PALETTE))]
    return roof, np.clip(colour + rng.normal(0, 6, 3), 20, 240).astype(np.float32)


def _make_driveway(rng: np.random.Generator, s: _Streets, street: float, side: int, a_mid: float, lot_w: float,
                   setback: float) -> Optional[_Rect]:
    """A driveway from the sidewalk to the house at one side of the lot (most lots), or None."""
    if not (rng.random() < 0.8 and setback > 3):
        return None
    dw = rng.uniform(5, 7)
    du = rng.choice([-1, 1]) * (lot_w / 2 - dw / 2 - 1)
    db_lo = s.road_w / 2 + 1 + s.walk_w - 1
    db_hi = s.road_w / 2 + 1 + s.walk_w + setback + 1
    dbm = street + side * (db_lo + db_hi) / 2
    dam = a_mid + du
    x, y = s.xy(dam, dbm)
    return _Rect(x, y, dw, db_hi - db_lo, s.theta)


def _inside_image(buildings: list[_Building], h: int, w: int) -> list[_Building]:
    """The buildings whose footprint reaches the image, with their coverage cached and area counted."""
    for bld in buildings:
        cov = bld.shape.coverage(h, w)
        bld.cache = cov
        bld.area = 0 if cov is None else int((cov[2] >= 0.5).sum())
    return [b for b in buildings if b.cache is not None]


def _choose_changes(rng: np.random.Generator, buildings: list[_Building], change_fraction: tuple[float, float],
                    h: int, w: int) -> np.ndarray:
    """Mark buildings new or vanished until the target changed area is reached: one or two
    clusters of new development, then scattered single changes. Returns the label (H, W) bool."""
    lo, hi = change_fraction
    target = rng.uniform(lo, hi) * h * w if hi > 0 else 0.0
    changed = 0.0
    if target > 0 and buildings:
        inside = [b for b in buildings if b.area > 0]
        n_clusters = 1 if rng.random() < 0.6 else 2
        for c in range(n_clusters):
            free = [b for b in inside if b.exists == [True, True]]
            if not free:
                break
            changed = _develop_cluster(rng, free, target * 0.8 * (c + 1) / n_clusters, changed)
        free = [b for b in inside if b.exists == [True, True]]
        rng.shuffle(free)
        for b in free:
            if changed >= target:
                break
            b.exists = [False, True] if rng.random() < 0.4 else [True, False]
            changed += b.area
    label = np.zeros((h, w), bool)
    for b in buildings:
        if b.exists[0] != b.exists[1]:
            rows, cols, cov = b.cache[:3]
            label[rows, cols] |= cov >= 0.5
    return label


def _develop_cluster(rng: np.random.Generator, free: list[_Building], goal: float, changed: float) -> float:
    """Make the unchanged buildings nearest a random one new until ``goal`` changed pixels;
    returns the changed pixel count."""
    seed_b = free[rng.integers(len(free))]
    d = [math.hypot(b.shape.cx - seed_b.shape.cx, b.shape.cy - seed_b.shape.cy) + rng.uniform(0, 25)
         for b in free]
    for idx in np.argsort(d):
        if changed >= goal:
            break
        free[idx].exists = [False, True]  # new development
        changed += free[idx].area
    return changed


def _plant_trees(rng: np.random.Generator, h: int, w: int, buildings: list[_Building], road: np.ndarray,
                 n_fields: int, label: np.ndarray) -> list[_Tree]:
    """Trees scattered and in woods, off buildings and roads; about half of those near new
    development are cleared in the after image."""
    footprint = np.zeros((h, w), np.float32)
    for b in buildings:
        rows, cols, cov = b.cache[:3]
        np.maximum(footprint[rows, cols], cov, out=footprint[rows, cols])
    blocked = ndimage.maximum_filter(np.maximum(footprint, road), size=3)
    trees: list[_Tree] = []
    for x, y in _tree_candidates(rng, h, w, 1 + n_fields // 2):
        r = rng.uniform(3, 10)
        if not (0 <= x < w and 0 <= y < h):
            continue
        r0, r1 = max(int(y - r - 1), 0), min(int(y + r + 2), h)
        c0, c1 = max(int(x - r - 1), 0), min(int(x + r + 2), w)
        if blocked[r0:r1, c0:c1].max() > 0.05:
            continue
        colour = np.array([58, 80, 44], np.float32) * rng.uniform(0.8, 1.2, 3)
        trees.append(_Tree(float(x), float(y), float(r), float(r * rng.uniform(1.4, 2.2)), colour))
    if label.any():  # trees cleared for the new development
        near_label = ndimage.binary_dilation(label[::4, ::4], iterations=6)
        for t in trees:
            if near_label[min(int(t.cy) // 4, near_label.shape[0] - 1), min(int(t.cx) // 4, near_label.shape[1] - 1)]:
                if rng.random() < 0.5:
                    t.exists = [True, False]
    return trees


def _tree_candidates(rng: np.random.Generator, h: int, w: int, n_woods: int) -> np.ndarray:
    """(N, 2) candidate tree centres (x, y): uniform, plus clusters (woods) in a few places."""
    n_candidates = int(h * w / 900 * rng.uniform(0.6, 1.4))
    cand = rng.uniform(0, 1, (n_candidates, 2)) * [w, h]
    for _ in range(n_woods):
        centre = rng.uniform(0, 1, 2) * [w, h]
        spread = rng.uniform(15, 60)
        cand = np.concatenate([cand, centre + rng.normal(0, spread, (int(rng.uniform(10, 60)), 2))])
    return cand


def _park_cars(rng: np.random.Generator, h: int, w: int, s: _Streets) -> list[tuple[_Rect, np.ndarray]]:
    """Cars of one date: (rectangle, colour (3,) float32), on the asphalt along a street."""
    cars = []
    n_cars = int(h * w / 512 ** 2 * rng.uniform(5, 25))
    for _ in range(n_cars):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if s.road[int(y), int(x)] < 1:
            continue
        along = s.theta if rng.random() < 0.5 else s.theta + math.pi / 2  # the nearest street's direction
        colour = _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))] * rng.uniform(0.9, 1.1)
        cars.append((_Rect(float(x), float(y), 8.5, 4.0, along), colour.astype(np.float32)))
    return cars


def _soil_patches(rng: np.random.Generator, h: int, w: int, nuisance: float) -> list[_Rect]:
    """Cleared patches of soil in the after image (not labelled): none, one or two."""
    patches: list[_Rect] = []
    if rng.random() < 0.6 * nuisance:
        for _ in range(rng.integers(1, 3)):
            patches.append(_Rect(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 70), rng.uniform(20, 60),
                                 rng.uniform(0, math.pi)))
    return patches


@dataclass
class _World:
    """Everything on the ground, for :func:`_render`: ``cars`` per date, ``patches`` after only."""

    h: int
    w: int
    palette: _Palette
    ground: _Ground
    streets: _Streets
    buildings: list
    trees: list
    cars: list
    patches: list


def _render(world: _World, d: int, date: _Date, rng: np.random.Generator) -> np.ndarray:
    """The image (3, H, W) float32 0..255 of date ``d`` (0 before, 1 after), through its camera."""
    img = _paint_ground(world, d, date)
    heights = np.zeros((world.h, world.w), np.float32)  # px above ground, for the shadows
    _paint_lots(img, world, d, date)
    img *= 1 - world.streets.alpha[None]
    img += world.streets.colour
    _paint_driveways(img, world, d)
    _paint_cars(img, heights, world, d)
    _paint_roofs(img, heights, world, d, date)
    _paint_trees(img, heights, world, d, date)
    _cast_shadows(img, heights, date)
    return _photometric(img, date, rng)


def _paint_ground(world: _World, d: int, date: _Date) -> np.ndarray:
    """The ground in the date's season; on the after date, the cleared soil patches."""
    img = world.ground.w_grass[None] * date.grass[:, None, None]
    img += world.ground.fixed
    if d == 1:
        grain = world.ground.grain
        for p in world.patches:
            cov = p.coverage(world.h, world.w)
            if cov is not None:
                rows, cols, c = cov[:3]
                _paint(img, rows, cols, world.palette.soil[:, None, None] * (1 + 0.08 * grain[rows, cols])[None] * 0.95,
                       c * 0.9)
    return img


def _paint_lots(img: np.ndarray, world: _World, d: int, date: _Date) -> None:
    """Lawn where the house stands on this date; bare soil where it was demolished (after)."""
    h, w, tex, grain, soil = world.h, world.w, world.ground.tex, world.ground.grain, world.palette.soil
    for b in world.buildings:
        if b.exists[d]:
            cov = b.lot.coverage(h, w, pad=1)
            if cov is not None:
                rows, cols, c = cov[:3]
                _paint(img, rows, cols,
                       date.lawn[:, None, None] * (1 + 0.05 * tex[rows, cols] + 0.03 * grain[rows, cols])[None],
                       c * 0.85)
        elif b.exists[1 - d] and d == 1:
            cov = b.shape.coverage(h, w, pad=4)
            if cov is not None:
                rows, cols, c, u, v = cov
                c2 = _box(u, v, b.shape.length + 6, b.shape.depth + 6)
                _paint(img, rows, cols, soil[:, None, None] * (1 + 0.1 * grain[rows, cols])[None], c2 * 0.9)


def _paint_driveways(img: np.ndarray, world: _World, d: int) -> None:
    """Concrete driveways of the houses standing on this date."""
    for b in world.buildings:
        if b.exists[d] and b.drive is not None:
            cov = b.drive.coverage(world.h, world.w)
            if cov is not None:
                rows, cols, c = cov[:3]
                _paint(img, rows, cols, world.palette.concrete, c)


def _paint_cars(img: np.ndarray, heights: np.ndarray, world: _World, d: int) -> None:
    """The date's cars (darker windscreen and roof band), 3 px high."""
    for rect, colour in world.cars[d]:
        cov = rect.coverage(world.h, world.w)
        if cov is not None:
            rows, cols, c, u, v = cov
            shade = 1 + 0.25 * (np.abs(u) < 2.2)  # windscreen/roof contrast
            _paint(img, rows, cols, colour[:, None, None] / shade[None], c)
            np.maximum(heights[rows, cols], 3.0 * (c > 0.5), out=heights[rows, cols])


def _paint_roofs(img: np.ndarray, heights: np.ndarray, world: _World, d: int, date: _Date) -> None:
    """The roofs of the buildings standing on this date, shaded by the date's sun."""
    for b in world.buildings:
        if not b.exists[d]:
            continue
        rows, cols, c, u, v = b.cache
        shade = _roof_shade(b, u, v, date.sun, world.ground.grain[rows, cols])
        _paint(img, rows, cols, b.colour[:, None, None] * shade[None], c)
        np.maximum(heights[rows, cols], b.height * (c > 0.5), out=heights[rows, cols])


def _roof_shade(b: _Building, u: np.ndarray, v: np.ndarray, sun: tuple[float, float], grain: np.ndarray) -> np.ndarray:
    """Brightness factor (h, w) of a roof at local coordinates (u, v): a flat roof's darker
    rim, or each pitched face lit by how much it faces the sun."""
    s = b.shape
    sx, sy = sun
    ca, sa = math.cos(s.angle), math.sin(s.angle)
    # the sun's direction in the local frame (towards the light = -shadow direction)
    lu, lv = -(sx * ca + sy * sa), -(-sx * sa + sy * ca)
    if b.roof == "flat":
        inner = _box(u, v, s.length - 3, s.depth - 3)
        if s.wing is not None:
            du, dv, wl, wd = s.wing
            inner = np.maximum(inner, _box(u - du, v - dv, wl - 3, wd - 3))
        return 0.85 + 0.15 * inner + 0.03 * grain
    if b.roof == "hip":
        across_u = np.abs(u) - max(s.length - s.depth, 0) / 2 > np.abs(v)
        nu = np.where(across_u, np.sign(u), 0.0)
        nv = np.where(across_u, 0.0, np.sign(v))
    elif s.length >= s.depth:
        nu, nv = 0.0, np.sign(v)
    else:
        nu, nv = np.sign(u), 0.0
    if s.wing is not None:
        du, dv, wl, wd = s.wing
        in_wing = _box(u - du, v - dv, wl, wd) > _box(u, v, s.length, s.depth)
        nu = np.where(in_wing, np.sign(u - du), nu)
        nv = np.where(in_wing, 0.0, nv)
    return 1 + 0.22 * (nu * lu + nv * lv) + 0.04 * grain


def _paint_trees(img: np.ndarray, heights: np.ndarray, world: _World, d: int, date: _Date) -> None:
    """Textured crowns in the date's foliage, lit from the sun's side, dome-shaped heights."""
    h, w, grain = world.h, world.w, world.ground.grain
    sx, sy = date.sun
    for t in world.trees:
        if not t.exists[d]:
            continue
        r = t.radius
        r0, r1 = max(int(t.cy - r - 2), 0), min(int(t.cy + r + 3), h)
        c0, c1 = max(int(t.cx - r - 2), 0), min(int(t.cx + r + 3), w)
        ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - t.cy
        xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - t.cx
        dist = np.sqrt(xs ** 2 + ys ** 2)
        g = grain[r0:r1, c0:c1]
        cov = np.clip(r - dist + 0.8 * g + 0.5, 0, 1)
        lit = 1 + 0.3 * (-(xs * sx + ys * sy) / r) + 0.12 * g
        _paint(img, slice(r0, r1), slice(c0, c1), (t.colour * date.foliage)[:, None, None] * lit[None], cov)
        dome = t.height * np.sqrt(np.clip(1 - (dist / r) ** 2, 0, 1)) * (cov > 0.5)
        np.maximum(heights[r0:r1, c0:c1], dome, out=heights[r0:r1, c0:c1])


def _cast_shadows(img: np.ndarray, heights: np.ndarray, date: _Date) -> None:
    """Darken ``img`` in the shadows of ``heights`` under the date's sun (bluish)."""
    shadow = _shadow(heights, date) * date.shadow_strength
    img *= 1 - shadow[None] * np.array([1.0, 0.97, 0.85], np.float32)[:, None, None]


def _misregister(rng: np.random.Generator, img: np.ndarray, misregistration: float) -> np.ndarray:
    """The whole after image shifted by up to ``misregistration`` px along each axis."""
    shift = rng.uniform(-misregistration, misregistration, 2) if misregistration > 0 else (0.0, 0.0)
    return _subpixel_shift(img, float(shift[0]), float(shift[1]))


def _photometric(img: np.ndarray, date: _Date, rng: np.random.Generator) -> np.ndarray:
    """Camera of one date: blur, gain, gamma, haze and sensor noise on (3, H, W) 0..255."""
    out = ndimage.gaussian_filter(img, (0, date.blur, date.blur)) if date.blur > 0.05 else img
    # gain, then gamma and haze through a lookup table on 1/16 grey levels
    levels = np.linspace(0.0, 1.0, 4096, dtype=np.float32)
    lut = 255.0 * levels ** date.gamma * (1 - date.haze / 255) + date.haze
    out *= date.gain[:, None, None] * (4095 / 255)
    np.clip(out, 0, 4095, out=out)
    out = lut[out.astype(np.int16)]
    out += date.noise * rng.standard_normal(out.shape, dtype=np.float32)
    return out


def _subpixel_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Bilinear shift of (C, H, W) by (dy, dx) px (content moves down/right), edges repeated."""
    c, h, w = img.shape
    iy, ix = int(math.floor(dy)), int(math.floor(dx))
    fy, fx = dy - iy, dx - ix
    pad = max(abs(iy), abs(ix)) + 2
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    # separable: along x on the padded rows, then along y
    cols = padded[:, :, pad - ix:pad - ix + w] * (1 - fx)
    cols += padded[:, :, pad - ix - 1:pad - ix - 1 + w] * fx
    out = cols[:, pad - iy:pad - iy + h] * (1 - fy)
    out += cols[:, pad - iy - 1:pad - iy - 1 + h] * fy
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def scene_origin(index: int) -> tuple[float, float]:
    """Top-left map coordinate (UTM metres) of scene ``index``: a distinct 5 km cell each."""
    return 300_000.0 + (index % 100) * 5_000.0, 5_500_000.0 - (index // 100) * 5_000.0


def write_scene_pair(
    out_dir: Union[str, Path],
    name: str,
    size: int,
    seed: int,
    *,
    index: int = 0,
    crs: str = DEFAULT_CRS,
    pixel_size: float = DEFAULT_PIXEL_SIZE,
    origin: Optional[tuple[float, float]] = None,
    scene: Optional[Scene] = None,
    **scene_kwargs,
) -> dict[str, Path]:
    """Write one scene as ``NAME_before.tif``, ``NAME_after.tif``, ``NAME_label.tif``.

    Args:
        out_dir: existing folder.
        name: file name stem.
        size, seed, scene_kwargs: passed to :func:`make_scene` (unless ``scene`` is given).
        index: scene number; sets the default origin (:func:`scene_origin`).
        crs: projected CRS of the files.
        pixel_size: metres per pixel.
        origin: top-left map coordinate; default ``scene_origin(index)``.

    Returns:
        ``{"before": path, "after": path, "label": path}``. Each file is written under a
        temporary name first, so an interrupted run leaves no half-written GeoTIFF.
    """
    import rasterio
    from rasterio.transform import from_origin

    if scene is None:
        scene = make_scene(size, seed, **scene_kwargs)
    x0, y0 = origin if origin is not None else scene_origin(index)
    transform = from_origin(x0, y0, pixel_size, pixel_size)
    out_dir = Path(out_dir)
    paths = {}
    for key, arr, extra in (("before", scene.before, {"photometric": "RGB"}),
                            ("after", scene.after, {"photometric": "RGB"}),
                            ("label", scene.label[None], {})):
        path = out_dir / f"{name}_{key}.tif"
        tmp = path.with_name(path.name + ".part")
        profile = dict(driver="GTiff", count=arr.shape[0], height=arr.shape[1], width=arr.shape[2], dtype="uint8",
                       crs=crs, transform=transform, compress="deflate", tiled=True, blockxsize=256, blockysize=256,
                       **extra)
        if arr.shape[1] < 256 or arr.shape[2] < 256:
            profile.update(tiled=False)
            profile.pop("blockxsize")
            profile.pop("blockysize")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(arr)
            if key == "label":
                dst.update_tags(1, meaning="255 = building appeared or vanished, 0 = no change")
        os.replace(tmp, path)
        paths[key] = path
    return paths
