"""Regenerate the bundled demo scene (engine/demo/data): a synthetic 2048x2048 pair + truth.

Run once by maintainers; `make demo` only reads the files. The scene's seed is outside the
seeds the demo model was trained on (synth --seed 2026), so it is held out.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from engine.train.synth import make_scene

SIZE = 2048
SEED = 990001
OUT = Path(__file__).resolve().parents[1] / "engine" / "demo" / "data"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    before, after, label = make_scene(SIZE, seed=SEED)
    common = dict(driver="GTiff", width=SIZE, height=SIZE, crs="EPSG:32633",
                  transform=from_origin(640_000.0, 5_800_000.0, 0.5, 0.5), tiled=True,
                  blockxsize=256, blockysize=256)
    rgb = dict(count=3, dtype="uint8", compress="JPEG", photometric="YCBCR", jpeg_quality=90)
    for name, arr in (("before", before), ("after", after)):
        with rasterio.open(OUT / f"{name}.tif", "w", **common, **rgb) as dst:
            dst.write(arr)
            dst.set_band_description(1, "red")
            dst.set_band_description(2, "green")
            dst.set_band_description(3, "blue")
    with rasterio.open(OUT / "truth.tif", "w", **common, count=1, dtype="uint8", compress="DEFLATE", nbits=1) as dst:
        dst.write((label > 0).astype(np.uint8)[None])
    (OUT / "scene.json").write_text(json.dumps({
        "generator": "engine.train.synth.make_scene", "size": SIZE, "seed": SEED,
        "crs": "EPSG:32633", "pixel_size_m": 0.5, "changed_fraction": float((label > 0).mean()),
        "note": "synthetic scene for the demonstration; truth = buildings that appeared or vanished",
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
