"""``python -m engine export MODEL OUT.onnx``: the model as an ONNX graph (needs torch).

For onnxruntime (``detect --model OUT.onnx``, also without torch) and other tools such
as the QGIS plugin Deepness (use ``--fixed-size``: it needs a fixed input size).
"""
from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint as ONNX (for onnxruntime and Deepness)",
        description="Export a checkpoint as an ONNX graph: input (N, 6, H, W) normalised before+after RGB, "
        "outputs change and hard (N, 1, H, W) probabilities, all metadata (ours and Deepness's) in "
        "metadata_props. The graph is checked against torch (within 1e-4) before it is written.")
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors or the authors' .pth)")
    p.add_argument("out", metavar="OUT.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or later (default 18)")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the file; fp32 arithmetic)")
    p.add_argument("--fixed-size", type=int, metavar="PX",
                   help="fix H = W to PX (a multiple of 32) instead of dynamic; Deepness needs this")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.onnx")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    result = export_onnx(args.model, args.out, opset=args.opset, fp16=args.fp16, fixed_size=args.fixed_size,
                         overwrite=args.overwrite, log=lambda line: print(line, file=sys.stderr))
    print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB, opset {result['opset']}"
          f"{', fp16 weights' if result['fp16_weights'] else ''}; max |onnxruntime - torch| "
          f"{result['parity_max_abs_diff']:.1e} on the parity inputs)")
    return 0
