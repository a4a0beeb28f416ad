"""``python -m engine info PATH``: a checkpoint's (or an exported ONNX model's) metadata as JSON."""
from __future__ import annotations

import argparse
import dataclasses
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a checkpoint's metadata as JSON")
    p.add_argument("path", help="checkpoint (.safetensors or the authors' .pth), an exported .onnx, or a catalogue name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..catalogue import resolve_model
    from ..events import make_events
    from ..onnx_predictor import is_onnx, read_onnx_metadata

    args.path = resolve_model(args.path, make_events("none"))
    if is_onnx(args.path):  # needs only onnxruntime
        print(json.dumps(read_onnx_metadata(args.path), indent=2))
        return 0
    from ..checkpoint import read_info

    info = read_info(args.path)
    print(json.dumps(dataclasses.asdict(info), indent=2))
    return 0
