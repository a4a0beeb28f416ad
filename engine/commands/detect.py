"""``python -m engine detect``: two rasters in, change probability, mask and polygons out.

The options are the contract the QGIS plugin relies on; see :func:`engine.detect.detect`
for what each does. Defaults of ``--tile-size``, ``--overlap`` and ``--threshold`` come
from the checkpoint's metadata.
"""
from __future__ import annotations

import argparse

from ..errors import UserError


def band_list(text: str) -> list[int]:
    """argparse type of ``--bands-before``/``--bands-after``: "1,2,3" -> [1, 2, 3] (1 or 3 numbers)."""
    try:
        bands = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1-based band numbers such as 1,2,3")
    if len(bands) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or 3 band numbers")
    return bands


def cancel_on_sigterm() -> None:
    """SIGTERM cancels like Ctrl-C: the pipeline removes its temporary files, exit 130."""
    import signal
    import threading

    from ..errors import Cancelled

    def _raise(signum, frame):  # runs in the main thread
        raise Cancelled("terminated")

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect change between two rasters",
                       description="Detect change between a before and an after raster of any size.")
    p.add_argument("--before", required=True, metavar="PATH", help="raster of the earlier date (any GDAL format)")
    p.add_argument("--after", required=True, metavar="PATH", help="raster of the later date; warped onto the before's grid")
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint (.safetensors or the authors' .pth), or an exported .onnx (runs on onnxruntime; no torch needed), "
                        "or a catalogue name (python -m engine models list)")
    out = p.add_argument_group("outputs (at least one)")
    out.add_argument("--out-vector", metavar="PATH", help="change polygons: .shp, .gpkg, .fgb or .geojson")
    out.add_argument("--out-probability", metavar="PATH.tif", help="change probability GeoTIFF")
    out.add_argument("--out-mask", metavar="PATH.tif", help="change mask GeoTIFF (1 change, 0 none, 255 nodata)")
    out.add_argument("--out-review", metavar="PATH.tif",
                     help="review GeoTIFF: HRMNet's hard-region score, where the model is likely wrong "
                          "(same encoding as the probability)")
    out.add_argument("--out-review-areas", metavar="PATH",
                     help="'look here' polygons: regions of high review score holding no change "
                          "(.gpkg, .shp, .fgb or .geojson)")
    out.add_argument("--probability-dtype", choices=("uint8", "float32"), default="uint8",
                     help="uint8: p*254 with nodata 255 (default); float32: p with nodata -1 "
                          "(the review raster too)")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--bands-before", type=band_list, metavar="1,2,3", help="1-based bands of the before (1 or 3)")
    p.add_argument("--bands-after", type=band_list, metavar="1,2,3", help="1-based bands of the after (1 or 3)")
    p.add_argument("--tile-size", type=int, metavar="PX", help="tile edge, a multiple of 32 (default: checkpoint, 512)")
    p.add_argument("--overlap", type=int, metavar="PX", help="tile overlap, < tile/2 (default: checkpoint, 128)")
    p.add_argument("--batch-size", type=int, metavar="N", help="tiles per forward pass (default: 8 on CUDA, 2 on CPU)")
    p.add_argument("--read-threads", type=int, metavar="N",
                   help="threads reading tiles (default: 1 on CPU, half the cores up to 8 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto); with an .onnx model also tensorrt[:N], directml[:N]")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    p.add_argument("--threshold", type=float, help="change when probability > threshold (default: checkpoint, 0.5)")
    p.add_argument("--review-threshold", type=float, metavar="SCORE",
                   help="review score above which a region without change is a 'look here' area "
                        "(default: checkpoint, 0.3)")
    p.add_argument("--min-area", type=float, default=0.0, metavar="M2", help="drop polygons smaller than this (m²)")
    p.add_argument("--simplify", type=float, default=0.0, metavar="METRES",
                   help="topology-preserving simplification tolerance (metres, 0 = none)")
    p.add_argument("--extent", metavar="XMIN,YMIN,XMAX,YMAX", help="process only this box (before's CRS)")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="bar: tqdm on stderr; jsonl: one JSON event a line on stdout; none")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detect import detect
    from ..events import make_events

    if not (args.out_vector or args.out_probability or args.out_mask or args.out_review or args.out_review_areas):
        raise UserError("detect: give at least one of --out-vector, --out-probability, --out-mask, --out-review, "
                        "--out-review-areas")
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the pipeline warns once, in its own words
    cancel_on_sigterm()
    events = make_events(args.progress)
    from ..catalogue import resolve_model

    detect(
        args.before,
        args.after,
        model=resolve_model(args.model, events),
        out_vector=args.out_vector,
        out_probability=args.out_probability,
        out_mask=args.out_mask,
        out_review=args.out_review,
        out_review_areas=args.out_review_areas,
        review_threshold=args.review_threshold,
        bands_before=args.bands_before,
        bands_after=args.bands_after,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        read_threads=args.read_threads,
        device=args.device,
        precision=args.precision,
        threshold=args.threshold,
        min_area=args.min_area,
        simplify=args.simplify,
        extent=args.extent,
        probability_dtype=args.probability_dtype,
        overwrite=args.overwrite,
        events=events,
    )
    return 0
