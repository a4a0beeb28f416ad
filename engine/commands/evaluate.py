"""``python -m engine evaluate --data DIR --split test --model CKPT [--out DIR] [--json]``."""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a checkpoint on one split (one confusion matrix over all its tiles)",
        description="Kappa, IoU, F1, precision, recall and overall accuracy of the change class over one "
        "confusion matrix of the whole split. With --out, a colour PNG per tile: "
        "TP white, FP red, FN cyan, TN black.",
    )
    p.add_argument("--data", required=True, help="dataset folder in the authors' layout")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--model", required=True, help="checkpoint: our .safetensors or the authors' .pth, or an exported .onnx (onnxruntime), or a catalogue name")
    p.add_argument("--out", help="folder for the colour maps (one NAME.png per tile)")
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
    return "\n".join(lines)


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
                      args.batch_size, args.workers, events)
    if args.json:
        print(json.dumps({**result["metrics"], "confusion": result["confusion"], "tiles": result["tiles"],
                          "split": result["split"], "model": result["model"], "runtime": result["runtime"],
                          "review": result.get("review")},
                         indent=2))
    elif args.progress != "jsonl":
        print(format_table(result))
    return 0
