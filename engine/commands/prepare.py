"""``python -m engine prepare``: map sheets -> the authors' train/val/test tile layout.

One sheet::

    python -m engine prepare --before A.tif --after B.tif --labels L.gpkg --out DIR

Many sheets (``before,after,labels`` columns, paths relative to the table; an optional
``split`` column chooses a sheet's split)::

    python -m engine prepare --pairs sheets.csv --out DIR --val sheet3

Partial labels and footprints::

    python -m engine prepare --before A.tif --after B.tif --labels L.gpkg --labelled-area checked.gpkg --out DIR
    python -m engine prepare --before A.tif --after B.tif --footprints-before b2019.gpkg \\
        --footprints-after b2023.gpkg --out DIR

Writes ``DIR/{train,val,test}/{A,B,label}/NAME.tif``, ``DIR/SPLIT/labelled/NAME.tif`` with a
labelled area, ``DIR/SPLIT/list/SPLIT.txt`` and ``DIR/dataset.json`` (see
:mod:`engine.train.prepare`).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="cut before/after/label sheets into a train/val/test tile dataset")
    p.add_argument("--before", help="before raster (its grid is the tiles' grid)")
    p.add_argument("--after", help="after raster (warped onto the before's grid when it differs)")
    p.add_argument("--labels", help="change labels: a raster (> 0 = change) or a vector file of change polygons")
    p.add_argument("--pairs", metavar="CSV", help="table of sheets with columns before,after,labels (optional name, "
                   "split = train|val|test) instead of the three above")
    p.add_argument("--footprints-before", metavar="VECTOR",
                   help="building footprints at the before date (any vector file GDAL reads); with "
                        "--footprints-after, the change labels are the buildings that appeared or vanished "
                        "(instead of --labels)")
    p.add_argument("--footprints-after", metavar="VECTOR", help="building footprints at the after date")
    p.add_argument("--footprint-tolerance", type=float, default=1.0, metavar="METRES",
                   help="outlines redrawn within this distance are the same building, no change (default 1)")
    p.add_argument("--labelled-area", metavar="AREA",
                   help="where the labels are complete: a vector file of polygons, or an extent "
                        "xmin,ymin,xmax,ymax[,CRS] (default CRS: the before's; pixels for rasters without "
                        "georeference). Tiles are cut only where they meet it; pixels outside are 'not labelled' "
                        "(SPLIT/labelled masks) and ignored by train and evaluate. With footprints, defaults to "
                        "the two layers' common extent")
    p.add_argument("--gsd", type=float, metavar="METRES",
                   help="metres per pixel of rasters without georeference (PNG tiles); required for them")
    p.add_argument("--val", metavar="SHEET,...", help="sheets (names as in dataset.json: the before's file stem, or "
                   "the name column) that make the validation split; the others go to train unless in --test")
    p.add_argument("--test", metavar="SHEET,...", help="sheets that make the test split")
    p.add_argument("--out", required=True, help="output dataset folder (must not exist or be empty)")
    p.add_argument("--tile-size", type=int, default=512, help="tile edge in px, a multiple of 32 (default 512)")
    p.add_argument("--stride", type=int, default=None, help="px between tile starts (default: the tile size)")
    p.add_argument("--split", default="0.6,0.3,0.1", help="train,val,test fractions (default 0.6,0.3,0.1)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and --keep-empty draws (default 42)")
    p.add_argument("--keep-empty", type=float, default=1.0, metavar="FRACTION",
                   help="fraction of tiles without change to keep (default 1: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar", help="progress display")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    """One line for options that do not go together (nothing read yet)."""
    footprints = [args.footprints_before, args.footprints_after]
    if any(footprints) and not all(footprints):
        raise UserError("give both --footprints-before and --footprints-after")
    if all(footprints) and args.labels:
        raise UserError("give either --labels or --footprints-before/--footprints-after, not both")
    single = [args.before, args.after] + ([] if all(footprints) else [args.labels])
    names = ("before", "after", "labels")
    if args.pairs and any(single + [args.labels]):
        raise UserError("give either --pairs or --before/--after/--labels, not both")
    if not args.pairs and not all(single):
        missing = [f"--{n}" for n, v in zip(names, single) if not v]
        raise UserError(f"missing {', '.join(missing)} (or give --pairs CSV)")
    if args.tile_size < 32 or args.tile_size % 32:
        raise UserError(f"--tile-size {args.tile_size}: must be a multiple of 32 (the model downsamples by 32)")
    if args.stride is not None and args.stride < 1:
        raise UserError(f"--stride {args.stride}: must be at least 1")
    if not 0 <= args.keep_empty <= 1:
        raise UserError(f"--keep-empty {args.keep_empty}: must be a fraction between 0 and 1")
    if args.gsd is not None and not (math.isfinite(args.gsd) and args.gsd > 0):
        raise UserError(f"--gsd {args.gsd}: must be a positive number of metres per pixel")
    if not (math.isfinite(args.footprint_tolerance) and args.footprint_tolerance >= 0):
        raise UserError(f"--footprint-tolerance {args.footprint_tolerance}: must be 0 or more metres")


def _choose_splits(sheets: list, val: str, test: str) -> None:
    """Set the split of the sheets named by ``--val``/``--test`` (names as prepare makes them)."""
    from ..train.prepare import sheet_names

    chosen = {"val": [n.strip() for n in (val or "").split(",") if n.strip()],
              "test": [n.strip() for n in (test or "").split(",") if n.strip()]}
    if not any(chosen.values()):
        return
    names = sheet_names(sheets)
    for split, wanted in chosen.items():
        for name in wanted:
            if name not in names:
                raise UserError(f"--{split} {name}: no such sheet (sheets: {', '.join(names)})")
            sheets[names.index(name)].split = split


def run(args: argparse.Namespace) -> int:
    from ..events import make_events
    from ..train.areas import parse_area
    from ..train.prepare import (LabelSource, Sheet, check_output_dir, parse_split, prepare_dataset, read_pairs,
                                 staged_output)

    _check_options(args)
    footprints = (Path(args.footprints_before), Path(args.footprints_after)) if args.footprints_before else None
    labels = LabelSource(parse_area(args.labelled_area) if args.labelled_area else None, footprints,
                         args.footprint_tolerance, args.gsd)
    stride = args.stride if args.stride is not None else args.tile_size
    split = parse_split(args.split)
    if args.pairs:
        sheets = read_pairs(args.pairs, labels=footprints is None)
    else:
        sheets = [Sheet(Path(args.before), Path(args.after), Path(args.labels) if args.labels else None)]
    _choose_splits(sheets, args.val, args.test)
    inputs = [p for s in sheets for p in (s.before, s.after, s.labels) if p] + list(footprints or ())
    inputs += [p for p in (args.pairs, labels.labelled_area and labels.labelled_area.path) if p]
    out = check_output_dir(args.out, args.overwrite, inputs)  # an input inside it: refused, even with --overwrite
    events = make_events(args.progress)
    with staged_output(out, args.overwrite, inputs) as stage:
        counts = prepare_dataset(sheets, stage, tile_size=args.tile_size, stride=stride, split=split,
                                 seed=args.seed, keep_empty=args.keep_empty, events=events, labels=labels)
    events.done(outputs={"folder": str(out), "dataset": str(out / "dataset.json")}, stats=counts)
    if args.progress != "jsonl":
        summary = ", ".join(f"{sp} {counts[sp]['tiles']}" for sp in ("train", "val", "test"))
        print(f"wrote {out}: tiles {summary}")
    return 0
