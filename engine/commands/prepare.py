"""``python -m engine prepare``: map sheets -> the authors' train/val/test tile layout.

One sheet::

    python -m engine prepare --before A.tif --after B.tif --labels L.gpkg --out DIR

Many sheets (``before,after,labels`` columns, paths relative to the table)::

    python -m engine prepare --pairs sheets.csv --out DIR

Writes ``DIR/{train,val,test}/{A,B,label}/NAME.tif``, ``DIR/SPLIT/list/SPLIT.txt`` and
``DIR/dataset.json`` (see :mod:`engine.train.prepare`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="cut before/after/label sheets into a train/val/test tile dataset")
    p.add_argument("--before", help="before raster (its grid is the tiles' grid)")
    p.add_argument("--after", help="after raster (warped onto the before's grid when it differs)")
    p.add_argument("--labels", help="change labels: a raster (> 0 = change) or a vector file of change polygons")
    p.add_argument("--pairs", metavar="CSV", help="table of sheets with columns before,after,labels (instead of the three above)")
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


def run(args: argparse.Namespace) -> int:
    from ..events import make_events
    from ..train.prepare import Sheet, check_output_dir, parse_split, prepare_dataset, read_pairs, staged_output

    single = [args.before, args.after, args.labels]
    if args.pairs and any(single):
        raise UserError("give either --pairs or --before/--after/--labels, not both")
    if not args.pairs and not all(single):
        missing = [f"--{n}" for n, v in zip(("before", "after", "labels"), single) if not v]
        raise UserError(f"missing {', '.join(missing)} (or give --pairs CSV)")
    if args.tile_size < 32 or args.tile_size % 32:
        raise UserError(f"--tile-size {args.tile_size}: must be a multiple of 32 (the model downsamples by 32)")
    stride = args.stride if args.stride is not None else args.tile_size
    if stride < 1:
        raise UserError(f"--stride {stride}: must be at least 1")
    if not 0 <= args.keep_empty <= 1:
        raise UserError(f"--keep-empty {args.keep_empty}: must be a fraction between 0 and 1")
    split = parse_split(args.split)
    sheets = read_pairs(args.pairs) if args.pairs else [Sheet(Path(args.before), Path(args.after), Path(args.labels))]
    inputs = [p for s in sheets for p in (s.before, s.after, s.labels)] + ([args.pairs] if args.pairs else [])
    out = check_output_dir(args.out, args.overwrite, inputs)  # an input inside it: refused, even with --overwrite
    events = make_events(args.progress)
    with staged_output(out, args.overwrite, inputs) as stage:
        counts = prepare_dataset(sheets, stage, tile_size=args.tile_size, stride=stride, split=split,
                                 seed=args.seed, keep_empty=args.keep_empty, events=events)
    events.done(outputs={"folder": str(out), "dataset": str(out / "dataset.json")}, stats=counts)
    if args.progress != "jsonl":
        summary = ", ".join(f"{sp} {counts[sp]['tiles']}" for sp in ("train", "val", "test"))
        print(f"wrote {out}: tiles {summary}")
    return 0
