"""``python -m engine synth --out DIR --scenes N --size PX``: synthetic bi-temporal scenes.

Default layout (``--layout scenes``)::

    DIR/scene_000_before.tif  scene_000_after.tif  scene_000_label.tif  ...
    DIR/scenes.csv            name,before,after,labels (relative paths; ``prepare --pairs`` reads it)
    DIR/synth.json            the options, the command line and each scene's seed

``--layout dataset`` writes the authors' layout directly (``train|val|test/{A,B,label}``
tiles of ``--tile-size`` px, whole scenes assigned to splits), through ``prepare``.
Scene ``i`` of seed ``S`` uses its own seed derived from ``(S, i)``, so two runs with
different ``--seed`` never share a scene.
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate synthetic bi-temporal GeoTIFF scenes with change labels")
    p.add_argument("--out", required=True, help="output folder (created; must not exist or be empty)")
    p.add_argument("--scenes", type=int, default=4, help="number of scenes (default 4)")
    p.add_argument("--size", type=int, default=512, help="scene edge in pixels, 0.5 m each (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--layout", choices=["scenes", "dataset"], default="scenes",
                   help="scenes: GeoTIFF triplets + scenes.csv; dataset: the authors' train/val/test tile layout")
    p.add_argument("--tile-size", type=int, default=512, help="tile edge for --layout dataset (default 512)")
    p.add_argument("--split", default="0.6,0.3,0.1", help="train,val,test fractions of the scenes for --layout dataset")
    p.add_argument("--change", default="0.02,0.08", metavar="LO,HI",
                   help="range of the fraction of changed pixels per scene (default 0.02,0.08)")
    p.add_argument("--misregistration", type=float, default=1.0, metavar="PX",
                   help="largest shift of the after image along each axis, px (default 1)")
    p.add_argument("--nuisance", type=float, default=1.0,
                   help="0..1 strength of the unlabelled illumination, colour and season changes (default 1)")
    p.add_argument("--workers", type=int, default=1, help="processes generating scenes in parallel (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar", help="progress display")
    p.set_defaults(func=run)


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene ``index`` of a run with ``--seed seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--change {text}: expected two numbers LO,HI, e.g. 0.02,0.08") from None
    if not 0 <= lo <= hi < 1:
        raise UserError(f"--change {text}: need 0 <= LO <= HI < 1")
    return lo, hi


def _write_one(folder: Path, i: int, size: int, seed: int, options: dict) -> dict:
    from ..train.synth import write_scene_pair

    name = f"scene_{i:03d}"
    paths = write_scene_pair(folder, name, size, scene_seed(seed, i), index=i, **options)
    return {"name": name, "before": paths["before"].name, "after": paths["after"].name, "labels": paths["label"].name}


def generate_scenes(folder: Path, scenes: int, size: int, seed: int, options: dict, events,
                    workers: int = 1) -> Path:
    """Write ``scenes`` scene triplets and ``scenes.csv`` into ``folder``; returns the csv.

    ``options`` go to :func:`engine.train.synth.make_scene` (change_fraction,
    misregistration, nuisance). ``workers`` > 1 generates scenes in that many processes;
    the files are the same.
    """
    rows: list = [None] * scenes
    if workers <= 1 or scenes == 1:
        for i in range(scenes):
            events.check_cancel()
            rows[i] = _write_one(folder, i, size, seed, options)
            events.progress(i + 1, scenes, "scenes")
    else:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(_write_one, folder, i, size, seed, options): i for i in range(scenes)}
            done_count = 0
            try:
                while pending:
                    events.check_cancel()
                    done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        rows[pending.pop(fut)] = fut.result()
                        done_count += 1
                        events.progress(done_count, scenes, "scenes")
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    csv_path = folder / "scenes.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["name", "before", "after", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..events import make_events
    from ..train.prepare import check_output_dir, parse_split, staged_output
    from ..train.synth import DEFAULT_CRS, DEFAULT_PIXEL_SIZE

    if args.scenes < 1:
        raise UserError(f"--scenes {args.scenes}: must be at least 1")
    if args.size < 32:
        raise UserError(f"--size {args.size}: must be at least 32 px")
    if args.layout == "dataset" and (args.tile_size % 32 or not 32 <= args.tile_size <= args.size):
        raise UserError(f"--tile-size {args.tile_size}: must be a multiple of 32 between 32 and --size ({args.size})")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    change = _parse_range(args.change)
    if not 0 <= args.misregistration <= 8:
        raise UserError(f"--misregistration {args.misregistration}: must be between 0 and 8 px")
    if not 0 <= args.nuisance <= 1:
        raise UserError(f"--nuisance {args.nuisance}: must be between 0 and 1")
    options = dict(change_fraction=change, misregistration=args.misregistration, nuisance=args.nuisance)
    split = parse_split(args.split) if args.layout == "dataset" else None
    out = check_output_dir(args.out, args.overwrite)
    events = make_events(args.progress)
    events.start(command="synth", scenes=args.scenes, size=args.size, seed=args.seed, layout=args.layout)
    with staged_output(out, args.overwrite) as stage:
        if args.layout == "scenes":
            csv_path = generate_scenes(stage, args.scenes, args.size, args.seed, options, events, args.workers)
            outputs = {"folder": str(out), "pairs": str(out / csv_path.name)}
            stats = {"scenes": args.scenes}
        else:
            from ..train.prepare import prepare_dataset, read_pairs

            scene_dir = stage / "scenes"
            scene_dir.mkdir()
            csv_path = generate_scenes(scene_dir, args.scenes, args.size, args.seed, options, events, args.workers)
            counts = prepare_dataset(read_pairs(csv_path), stage, tile_size=args.tile_size, stride=args.tile_size,
                                     split=split, seed=args.seed, keep_empty=1.0, events=events)
            outputs = {"folder": str(out)}
            stats = {"scenes": args.scenes, **counts}
        (stage / "synth.json").write_text(json.dumps({
            "created_by": f"hrmnet-engine {__version__} synth",
            "command": "python -m engine synth " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
            "scenes": args.scenes, "size": args.size, "seed": args.seed, "layout": args.layout,
            "tile_size": args.tile_size if args.layout == "dataset" else None,
            "split": args.split if args.layout == "dataset" else None,
            "crs": DEFAULT_CRS, "pixel_size": DEFAULT_PIXEL_SIZE,
            "options": {**options, "change_fraction": list(change)},
            "scene_seeds": [scene_seed(args.seed, i) for i in range(args.scenes)],
        }, indent=2) + "\n")
    events.done(outputs=outputs, stats=stats)
    if args.progress != "jsonl":
        print(f"wrote {args.scenes} scene(s) to {out}")
    return 0
