"""int8 ONNX: onnxruntime's static QDQ quantization of an exported HRMNet graph.

``export MODEL OUT.onnx --int8 [--calibrate SOURCE ...]`` (see :func:`engine.export.export_onnx`):

- weights int8 per output channel, activations uint8 (asymmetric), QDQ format (what
  onnxruntime's CPU kernels run fastest, and what other runtimes read);
- calibrated (min/max of every activation) on model-input tiles made exactly as
  ``detect`` makes them (pairing, radiometry, normalisation) from the sources the user
  names: raster pairs ``BEFORE,AFTER`` or datasets in the authors' layout; by default
  the bundled demo pair;
- every :data:`HELD_BACK_EVERY`-th tile is held back from calibration and used to
  compare the int8 graph with the fp32 graph: the fraction of pixels on which both
  masks (probability > the model's threshold) agree. Below :data:`MIN_AGREEMENT` the
  model is refused; the measured agreement goes into the file's metadata.

Needs onnxruntime (its ``quantization`` package) and onnx; the tiles need rasterio
(pairs) or the dataset reader (datasets).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .errors import UserError

__all__ = ["MIN_AGREEMENT", "HELD_BACK_EVERY", "MAX_TILES", "calibration_tiles", "split_tiles", "quantize_int8",
           "mask_agreement", "default_calibration"]

#: Fewest pixels on which the int8 and fp32 masks must agree (fraction of the held-back tiles' pixels).
MIN_AGREEMENT = 0.995
#: Every this-many-th tile is held back for the agreement check, the others calibrate.
HELD_BACK_EVERY = 4
#: At most this many tiles calibrate, and at most this many are checked (evenly spread).
MAX_TILES = 32

Log = Callable[[str], None]


def default_calibration() -> list[str]:
    """The bundled demo pair as one ``BEFORE,AFTER`` source ([] when this installation lacks it)."""
    from .demo import DEMO_DATA

    before, after = DEMO_DATA / "before.tif", DEMO_DATA / "after.tif"
    return [f"{before},{after}"] if before.is_file() and after.is_file() else []


def _evenly(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spread (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def _pair_tiles(before: str, after: str, info) -> list[np.ndarray]:
    """The model-input tiles (1, 6, S, S) float32 of a raster pair, as ``detect`` makes them."""
    from .core.options import validate_options
    from .core.plan import plan_area
    from .core.predictors import load_engine
    from .raster.pair import open_pair
    from .raster.radiometry import model_input
    from .raster.tiles import pad_tile

    options = validate_options()
    with open_pair(before, after) as pair:
        plan = plan_area(pair, load_engine(None, options, predictor=_NoModel(), model_info=info), options)
        tiles = []
        for tile in plan.grid:
            b, a, valid = pair.read(tile.window)
            x = model_input(b, a, valid, plan.rad_before, plan.rad_after)
            tiles.append(np.ascontiguousarray(pad_tile(x, plan.grid.shape)[None], dtype=np.float32))
    return tiles


class _NoModel:
    """The stand-in predictor of :func:`_pair_tiles` (only the plan is made, nothing runs)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("not a model")

    def describe(self) -> dict:
        return {"device": "cpu", "precision": "fp32"}


def _dataset_tiles(folder: Path, info) -> list[np.ndarray]:
    """Model-input tiles (1, 6, S, S) of a dataset in the authors' layout (every split present;
    images larger than the model's tile size are cut into tiles, smaller ones padded)."""
    from .raster.tiles import make_grid, pad_tile
    from .train.dataset import Normalisation, read_rgb, scan_split

    splits = [p.name for p in sorted(folder.iterdir()) if _listed(p / "list" / f"{p.name}.txt")]
    if not splits:
        raise UserError(f"{folder}: not a dataset (no SPLIT/list/SPLIT.txt) and not BEFORE,AFTER rasters")
    samples = _evenly([s for split in splits for s in scan_split(folder, split)], 2 * MAX_TILES)
    norm = Normalisation.from_scaling(info.scaling)
    mean = np.array(norm.mean * 2, np.float32)[:, None, None]
    std = np.array(norm.std * 2, np.float32)[:, None, None]
    size = int(info.tile_size)
    tiles = []
    for sample in samples:
        image = np.concatenate([read_rgb(sample.before), read_rgb(sample.after)], axis=2).transpose(2, 0, 1)
        x = (image.astype(np.float32) * norm.scale - mean) / std
        grid = make_grid(x.shape[2], x.shape[1], min(size, _floor32(max(x.shape[1:]))), 0)
        for tile in grid:
            w = tile.window
            part = x[:, int(w.row_off):int(w.row_off + w.height), int(w.col_off):int(w.col_off + w.width)]
            tiles.append(np.ascontiguousarray(pad_tile(part, grid.shape)[None], dtype=np.float32))
    return tiles


def _listed(list_file: Path) -> bool:
    """Whether a split's list file exists and names at least one tile (a split may be empty)."""
    if not list_file.is_file():
        return False
    lines = (line.strip() for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines())
    return any(line and not line.startswith("#") for line in lines)


def _floor32(n: int) -> int:
    return max(32, n - n % 32)


def calibration_tiles(sources: Sequence[str], info, log: Log = print) -> list[np.ndarray]:
    """Tiles (1, 6, S, S) float32 from each source: ``BEFORE,AFTER`` (two rasters of one place)
    or a dataset folder in the authors' layout.

    Raises:
        UserError: a source that is neither, a raster or dataset that cannot be read, or no tile.
    """
    tiles: list[np.ndarray] = []
    for source in sources:
        parts = [p.strip() for p in str(source).split(",")]
        if len(parts) == 2 and all(parts):
            for p in parts:
                if not Path(p).exists():
                    raise UserError(f"--calibrate {source}: {p} not found")
            got = _pair_tiles(parts[0], parts[1], info)
        elif len(parts) == 1 and Path(parts[0]).is_dir():
            got = _dataset_tiles(Path(parts[0]), info)
        else:
            raise UserError(f"--calibrate {source}: expected BEFORE,AFTER (two rasters) or a dataset folder")
        log(f"calibration source {source}: {len(got)} tiles")
        tiles += got
    if len(tiles) < 2:
        raise UserError(f"--calibrate: {len(tiles)} tile(s); at least 2 are needed (one calibrates, one checks)")
    return tiles


def split_tiles(tiles: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration tiles, held-back tiles): every :data:`HELD_BACK_EVERY`-th tile is held back
    (at least one), each list at most :data:`MAX_TILES`, evenly spread."""
    every = min(HELD_BACK_EVERY, len(tiles))
    held = [t for i, t in enumerate(tiles) if i % every == every - 1]
    calib = [t for i, t in enumerate(tiles) if i % every != every - 1]
    return _evenly(calib, MAX_TILES), _evenly(held, MAX_TILES)


def _session(model: bytes | str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def mask_agreement(fp32: bytes | str, int8: bytes | str, tiles: Sequence[np.ndarray], threshold: float) -> float:
    """Fraction of the pixels of ``tiles`` where both graphs' masks (``change`` > threshold) agree."""
    a, b = _session(fp32), _session(int8)
    same = total = 0
    for x in tiles:
        pa = a.run(["change"], {"input": x})[0] > threshold
        pb = b.run(["change"], {"input": x})[0] > threshold
        same += int((pa == pb).sum())
        total += pa.size
    return same / total


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizer logs advice on the root logger and warns; not the user's business."""
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _reader(tiles: Sequence[np.ndarray]):
    """onnxruntime's CalibrationDataReader over a list of tiles."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._tiles = iter(tiles)

        def get_next(self) -> Optional[dict]:
            x = next(self._tiles, None)
            return None if x is None else {"input": x}

    return Reader()


def quantize_int8(fp32: bytes, calibration: Sequence[np.ndarray]):
    """The int8 QDQ graph (an onnx.ModelProto) of the fp32 graph ``fp32`` (serialised), calibrated
    (min/max) on ``calibration`` tiles: int8 per-channel weights, uint8 activations. The
    calibrator keeps only each tensor's min and max per tile, so memory does not grow with tiles."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    reader = _reader(calibration)
    with tempfile.TemporaryDirectory(prefix="hrmnet-int8-") as tmp, _quiet_quantizer():
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        Path(src).write_bytes(fp32)
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(dst)
