"""Tiny generated GeoTIFFs for tests (real CRSs, real georeferencing)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import rasterio
from rasterio.transform import from_origin

UTM33N = "EPSG:32633"


def write_geotiff(
    path: str | Path,
    array: np.ndarray,
    crs: Optional[str] = UTM33N,
    origin: tuple[float, float] = (500_000.0, 5_000_000.0),
    pixel_size: float = 0.5,
    nodata: Optional[float] = None,
    transform=None,
) -> Path:
    """Write ``array`` (bands, rows, cols) or (rows, cols) as a GeoTIFF.

    ``origin`` is the map coordinate of the top-left corner; ``pixel_size`` in CRS
    units. ``crs=None`` writes a raster without georeferencing.
    """
    arr = array[None] if array.ndim == 2 else array
    path = Path(path)
    profile = dict(driver="GTiff", count=arr.shape[0], height=arr.shape[1], width=arr.shape[2], dtype=arr.dtype)
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(origin[0], origin[1], pixel_size, pixel_size))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def textured(rows: int, cols: int, bands: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """A smooth random texture (bands, rows, cols) in 0..255 as ``dtype``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(120, 25, (bands, rows // 8 + 2, cols // 8 + 2))
    img = np.kron(base, np.ones((8, 8)))[:, :rows, :cols]
    img = img + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(dtype)


def damaged_geotiff(path: str | Path, array: np.ndarray, how: str = "corrupt", block: int = 64, **geo) -> Path:
    """A tiled, deflate-compressed GeoTIFF of ``array`` whose LAST tile is broken, so
    opening it works and only a late read fails.

    ``how``: ``"corrupt"`` overwrites the last tile's compressed bytes with garbage;
    ``"truncated"`` cuts the file in the middle of that tile.
    """
    path = Path(path)
    arr = array[None] if array.ndim == 2 else array
    write_geotiff(path, arr, **geo)
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    good = path.with_name(f"{path.stem}.good.tif")
    with rasterio.open(good, "w", **profile) as dst:
        dst.write(arr)
    with rasterio.open(good) as src:
        # the tile written last (bottom right) sits at the end of the pixel data
        last = max(((r, c) for r in range(src.height // block + bool(src.height % block))
                    for c in range(src.width // block + bool(src.width % block))),
                   key=lambda rc: int(src.get_tag_item(f"BLOCK_OFFSET_{rc[1]}_{rc[0]}", "TIFF", bidx=arr.shape[0])))
        tag = f"{last[1]}_{last[0]}"
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{tag}", "TIFF", bidx=arr.shape[0]))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{tag}", "TIFF", bidx=arr.shape[0]))
    data = bytearray(good.read_bytes())
    good.unlink()
    if how == "truncated":
        data = data[: offset + size // 2]
    else:
        data[offset:offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path
