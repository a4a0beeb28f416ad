"""``python -m engine evaluate --data DIR --split test --model CKPT [--out DIR] [--json]``."""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a checkpoint on one split (one confusion matrix over all its tiles)",
        description="Kappa, IoU, F1, precision, recall and overall accuracy of the change class over one "
        "confusion matrix of the whole split (only the labelled pixels when the split has a labelled/ "
        "folder of masks). With --out, a colour PNG per tile: TP white, FP red, FN cyan, TN black, not "
        "labelled grey. Each dataset tile is scored whole, in one forward pass, as in training; detect "
        "instead overlaps and blends its tiles, so figures near tile edges differ from detect's.",
    )
    p.add_argument("--data", required=True, help="dataset folder in the authors' layout")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--model", required=True, help="checkpoint: our .safetensors or the authors' .pth, or an exported .onnx (onnxruntime), or a catalogue name")
    p.add_argument("--out", help="folder for the colour maps (one NAME.png per tile)")
    p.add_argument("--overwrite", action="store_true", help="replace colour maps that exist in --out")
    p.add_argument("--per-pair", action="store_true",
                   help="also the figures of each before/after pair (each sheet of a prepared dataset, else each "
                        "tile): a table, or 'pairs' in the JSON")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles a batch (default 4)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="progress display: bar (stderr), jsonl (JSON lines on stdout) or none")
    p.set_defaults(func=run)


def format_table(result: dict) -> str:
    """The metrics as an aligned two-column table, then the confusion counts."""
    from ..train.metrics import METRIC_KEYS  # imports torch: not at CLI start-up

    m, c = result["metrics"], result["confusion"]
    lines = [f"{result['split']} split of {result['data']}: {result['tiles']} tiles, model {result['model']}"]
    lines += [f"  {k:<10} {m[k]:.4f}" for k in METRIC_KEYS]
    lines.append(f"  pixels     TP {c['tp']}  FP {c['fp']}  FN {c['fn']}  TN {c['tn']}")
    from ..train.review_metrics import format_review

    lines += format_review(result.get("review"))
    lines.append(f"  tiling: {result['tiling']}")
    if result.get("pairs") is not None:
        lines += format_pairs(result["pairs"])
    return "\n".join(lines)


def format_pairs(pairs: list) -> list[str]:
    """One aligned row per pair: tiles, labelled pixels and the six metrics."""
    from ..train.metrics import METRIC_KEYS

    width = max([4] + [len(p["pair"]) for p in pairs])
    lines = ["", f"  {'pair':<{width}} {'tiles':>5} {'pixels':>10} " + " ".join(f"{k:>9}" for k in METRIC_KEYS)]
    for p in pairs:
        lines.append(f"  {p['pair']:<{width}} {p['tiles']:>5} {p['pixels']:>10} "
                     + " ".join(f"{p[k]:>9.4f}" for k in METRIC_KEYS))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..events import make_events
    from ..train.evaluate import evaluate

    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be 0 or more")
    from ..catalogue import resolve_model

    progress = "none" if args.json and args.progress == "jsonl" else args.progress
    events = make_events(progress)
    result = evaluate(args.data, args.split, resolve_model(args.model, events), args.out, args.device, args.precision,
                      args.batch_size, args.workers, events, overwrite=args.overwrite,
                      per_pair=args.per_pair)
    if args.json:
        keys = ("confusion", "tiles", "labelled_pixels", "split", "model", "runtime", "tiling", "review", "pairs")
        print(json.dumps({**result["metrics"], **{k: result.get(k) for k in keys if k in result}}, indent=2))
    elif args.progress != "jsonl":
        print(format_table(result))
    return 0
