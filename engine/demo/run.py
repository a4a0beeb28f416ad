"""``python -m engine demo``: detection on the bundled synthetic pair with the demo model.

Writes polygons (GeoPackage and shapefile), the probability GeoTIFF, the mask and a PNG
preview (before | after | detected changes) into the output folder, scores the mask
against the bundled truth and returns a summary.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from ..events import Events
from . import DEMO_DATA, DEMO_MODEL

__all__ = ["run_demo", "score_mask", "preview"]

PREVIEW_EDGE = 640  # pixels per panel


def score_mask(mask_path: Path, truth_path: Path, window_rows: int = 512) -> dict:
    """Pixel scores (f1, iou, precision, recall, kappa, oa) of a 0/1 mask against a truth raster.

    Read in strips of ``window_rows`` rows; mask nodata (255) counts as "no change".
    """
    import rasterio
    from rasterio.windows import Window

    from ..train.metrics import Confusion

    conf = Confusion()
    with rasterio.open(mask_path) as m, rasterio.open(truth_path) as t:
        if (m.width, m.height) != (t.width, t.height):
            raise UserError(f"{mask_path}: size differs from the truth {truth_path}")
        for row in range(0, m.height, window_rows):
            win = Window(0, row, m.width, min(window_rows, m.height - row))
            conf.update(m.read(1, window=win) == 1, t.read(1, window=win) > 0)
    return conf.scores()


def _decimated(path: Path, edge: int, bands: int) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        scale = edge / max(src.width, src.height)
        shape = (bands, max(1, round(src.height * scale)), max(1, round(src.width * scale)))
        return src.read(list(range(1, bands + 1)), out_shape=shape, resampling=Resampling.average)


def preview(before: Path, after: Path, mask: Path, truth: Optional[Path], out_png: Path,
            edge: int = PREVIEW_EDGE) -> None:
    """Side-by-side PNG: before | after | after with detections (red) and truth outlines (cyan).

    Each panel is at most ``edge`` pixels, read decimated (never the full scene in memory).
    """
    from PIL import Image, ImageDraw, ImageFilter

    b = _decimated(before, edge, 3).transpose(1, 2, 0)
    a = _decimated(after, edge, 3).transpose(1, 2, 0)
    m = _decimated(mask, edge, 1)[0]
    det = a.astype(np.float32) * 0.6
    # Average-decimated mask: a pixel a quarter covered by change is shown, so that small
    # buildings stay visible at preview scale (255 = nodata, never shown).
    hit = (m >= 0.25) & (m <= 1)
    det[hit] = det[hit] * 0.15 + np.array([255, 30, 30]) * 0.85
    panel = Image.fromarray(det.clip(0, 255).astype(np.uint8))
    if truth is not None:
        t = Image.fromarray(((_decimated(truth, edge, 1)[0] > 0.5) * 255).astype(np.uint8))
        edges = np.asarray(t.filter(ImageFilter.FIND_EDGES)) > 0
        arr = np.asarray(panel).copy()
        arr[edges & ~hit] = (0, 255, 255)  # truth outlines where nothing was detected
        panel = Image.fromarray(arr)
    h, w = b.shape[:2]
    gap, top = 8, 28
    canvas = Image.new("RGB", (3 * w + 4 * gap, h + top + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    titles = ("before", "after", "detected (red), truth outline (cyan)")
    for i, img in enumerate((Image.fromarray(b), Image.fromarray(a), panel)):
        x = gap + i * (w + gap)
        canvas.paste(img, (x, top))
        draw.text((x, 8), titles[i], fill=(0, 0, 0))
    canvas.save(out_png)


def run_demo(out_dir: Path, device: str = "auto", precision: str = "auto", overwrite: bool = True,
             events: Optional[Events] = None, model: Optional[Path] = None) -> dict:
    """Run the demonstration into ``out_dir``; returns the summary dict."""
    from ..detect import detect
    from ..outputs import check_output, staged_file

    events = events or Events()
    model = Path(model) if model else DEMO_MODEL
    before, after, truth = DEMO_DATA / "before.tif", DEMO_DATA / "after.tif", DEMO_DATA / "truth.tif"
    for path in (model, before, after, truth):
        if not path.is_file():
            raise UserError(f"{path}: demo file missing (is this a complete checkout?)")
    out_dir = Path(out_dir)
    outputs = {
        "gpkg": out_dir / "changes.gpkg",
        "shp": out_dir / "changes.shp",
        "probability": out_dir / "probability.tif",
        "mask": out_dir / "mask.tif",
        "preview": out_dir / "preview.png",
    }
    for role, path in outputs.items():  # before anything is written
        check_output(path, role, [model, before, after, truth])
    out_dir.mkdir(parents=True, exist_ok=True)
    started: dict = {}
    events = events.tapped(lambda ev: started.update(ev) if ev["event"] == "start" else None)
    t0 = time.perf_counter()
    result = detect(before, after, model=model, out_vector=outputs["gpkg"], out_probability=outputs["probability"],
                    out_mask=outputs["mask"], device=device, precision=precision, overwrite=overwrite, events=events)
    seconds = time.perf_counter() - t0
    # The same polygons as a shapefile, for GIS tools that want one.
    import geopandas as gpd

    with staged_file(outputs["shp"], overwrite, inputs=[model, before, after, truth]) as tmp_shp:
        gpd.read_file(outputs["gpkg"]).to_file(tmp_shp, driver="ESRI Shapefile")
    scores = score_mask(outputs["mask"], truth)
    with staged_file(outputs["preview"], overwrite, inputs=[model, before, after, truth]) as tmp_png:
        preview(before, after, outputs["mask"], truth, tmp_png)
    return {
        "polygons": int(result.stats.get("polygons", 0)),
        "f1": scores["f1"],
        "iou": scores["iou"],
        "precision": scores["precision"],
        "recall": scores["recall"],
        "seconds": round(seconds, 1),
        "device": started.get("device", "?"),
        "precision_mode": started.get("precision", "?"),
        "outputs": {k: str(v) for k, v in outputs.items()},
    }
