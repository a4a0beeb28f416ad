"""``python -m engine demo``: the product working end to end on a bundled synthetic pair."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="detect changes on the bundled synthetic demo pair with the demo model")
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    p.add_argument("--model", default=None, help="another checkpoint instead of the demo model")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar", help="progress display")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo
    from ..events import make_events

    events = make_events(args.progress)
    summary = run_demo(Path(args.out), device=args.device, precision=args.precision, events=events,
                       model=args.model)
    if args.progress == "jsonl":
        print(json.dumps({"event": "summary", **summary}))
        return 0
    print()
    print("HRMNet demo (demonstration model trained on synthetic scenes only; not for real imagery)")
    print(f"  polygons found : {summary['polygons']}")
    print(f"  F1 vs truth    : {summary['f1']:.3f} (IoU {summary['iou']:.3f}, precision {summary['precision']:.3f},"
          f" recall {summary['recall']:.3f})")
    print(f"  time           : {summary['seconds']:.1f} s on {summary['device']} ({summary['precision_mode']})")
    print(f"  outputs        : {Path(args.out)}/ (changes.gpkg, changes.shp, probability.tif, mask.tif, preview.png)")
    return 0
