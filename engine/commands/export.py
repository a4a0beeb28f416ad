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
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors or the authors' .pth), or a catalogue name")
    p.add_argument("out", metavar="OUT.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or later (default 18)")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the file; fp32 arithmetic)")
    p.add_argument("--fixed-size", type=int, metavar="PX",
                   help="fix H = W to PX (a multiple of 32) instead of dynamic; Deepness needs this")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights (per channel) and uint8 activations, onnxruntime static QDQ quantization: "
                        "a quarter of the file, faster on CPUs; refused below 99.5 %% mask agreement with fp32")
    p.add_argument("--calibrate", nargs="+", metavar="SOURCE",
                   help="--int8's calibration imagery: BEFORE,AFTER (two rasters) or a dataset folder, one or more "
                        "(default: the demo pair); every 4th tile is held back for the check")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.onnx")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="bar/none: steps on stderr; jsonl: JSON events on stdout (the plugin)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..catalogue import resolve_model
    from ..events import make_events
    from ..export import export_onnx

    events = make_events(args.progress)
    log = (lambda line: print(line, file=sys.stderr)) if args.progress != "jsonl" else events.log
    model = resolve_model(args.model, events, formats=("safetensors", "pth"))
    result = export_onnx(model, args.out, opset=args.opset, fp16=args.fp16, fixed_size=args.fixed_size,
                         overwrite=args.overwrite, log=log,
                         int8=args.int8, calibrate=args.calibrate)
    if args.progress == "jsonl":
        events.done({"model": result["path"]}, {k: v for k, v in result.items() if k != "path"})
        return 0
    int8 = result.get("int8")
    kind = ", fp16 weights" if result["fp16_weights"] else ""
    if int8:
        kind = f", int8: mask agreement {100 * int8['mask_agreement']:.2f} % on {int8['held_back_tiles']} held-back tiles"
    print(f"wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB, opset {result['opset']}{kind}; max "
          f"|onnxruntime - torch| {result['parity_max_abs_diff']:.1e} on the parity inputs, fp32)")
    return 0
