"""Tiny datasets in the authors' layout for training/evaluation tests (PNG or GeoTIFF tiles)."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from tests.rasters import textured, write_geotiff

SPLITS = {"train": 6, "val": 2, "test": 2}


def tile_pair(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Before/after (size, size, 3) uint8 and a 0/255 label: one bright new square."""
    rng = np.random.default_rng(seed)
    a = np.moveaxis(textured(size, size, 3, seed=seed), 0, -1).copy()
    b = a.copy()
    label = np.zeros((size, size), np.uint8)
    s = size // 4
    r, c = (int(v) for v in rng.integers(2, size - s - 2, 2))
    b[r : r + s, c : c + s] = (230, 90, 60)
    label[r : r + s, c : c + s] = 255
    return a, b, label


def make_dataset(root: Path, splits: Optional[dict[str, int]] = None, size: int = 64, fmt: str = "png",
                 with_ext: bool = False) -> Path:
    """Write ``root/{split}/{A,B,label}/tNN.fmt`` and list files; returns ``root``.

    ``fmt``: ``png``, ``jpg`` (labels stay PNG) or ``tif`` (GeoTIFFs in UTM 33N).
    ``with_ext``: list names with their extension (as the LEVIR sample does).
    """
    root = Path(root)
    for split, count in (splits or SPLITS).items():
        for folder in ("A", "B", "label", "list"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        names = []
        for i in range(count):
            seed = zlib.crc32(f"{split}{i}".encode()) % 10_000
            a, b, label = tile_pair(size, seed)
            name = f"t{i:02d}"
            ext = "." + fmt
            if fmt == "tif":
                origin = (500_000.0 + 100 * i, 5_000_000.0)
                write_geotiff(root / split / "A" / f"{name}.tif", np.moveaxis(a, -1, 0), origin=origin)
                write_geotiff(root / split / "B" / f"{name}.tif", np.moveaxis(b, -1, 0), origin=origin)
                write_geotiff(root / split / "label" / f"{name}.tif", label, origin=origin)
            else:
                Image.fromarray(a).save(root / split / "A" / f"{name}{ext}", quality=95)
                Image.fromarray(b).save(root / split / "B" / f"{name}{ext}", quality=95)
                Image.fromarray(label).save(root / split / "label" / f"{name}.png")
            names.append(name + (ext if with_ext else ""))
        (root / split / "list" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root
