"""``python -m engine train --data DIR --out RUN [...]``: the authors' training recipe."""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train HRMNet on a dataset in the authors' layout (resumable; torchrun for several GPUs)",
        description="Train HRMNet with the authors' recipe. Writes RUN/best.safetensors (best validation F1), "
        "RUN/last.safetensors, RUN/state.pt (for --resume), RUN/metrics.csv and RUN/curves.png. "
        "Several GPUs or processes: torchrun --nproc_per_node N -m engine train ... "
        "(--batch-size is the global batch). With --resume, the recipe options left out keep the run's own values.",
    )
    p.add_argument("--data", help="dataset folder: {train,val}/{A,B,label}/NAME + {split}/list/{split}.txt")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--steps", type=int, help="optimizer steps (default 20000)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 8)")
    p.add_argument("--lr", type=float, help="base learning rate (default 5e-4)")
    p.add_argument("--crop", type=int, help="training crop edge in pixels (default 512)")
    p.add_argument("--val-every", type=int, help="validate and save every N steps, 0 = at the end only (default 1000)")
    p.add_argument("--seed", type=int, help="seed of initial weights, sample order and augmentation (default 0)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0 on CPU, 4 on CUDA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto",
                   help="auto, fp32, bf16 or fp16 (auto: bf16/fp16 mixed precision on CUDA, fp32 on CPU)")
    p.add_argument("--init", metavar="CKPT", help="initial weights: our .safetensors or the authors' .pth, or a catalogue name")
    p.add_argument("--backbone", metavar="PATH|imagenet",
                   help="initial weights of the encoder's backbone: 'imagenet' (the authors' start: timm's "
                   "resnet18d ImageNet weights, downloaded once into $HRMNET_CACHE or the user cache folder; "
                   "HRMNET_BACKBONE_URL sets another address) or a timm-format resnet18d file (.pth or .safetensors)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing --out (its run files are replaced)")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="progress display: bar (stderr), jsonl (JSON lines on stdout) or none")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..events import make_events
    from ..train.loop import TrainConfig, train

    from ..catalogue import resolve_model

    command = shlex.join(["python", "-m", "engine", *sys.argv[1:]])
    events = make_events(args.progress)
    args.init = resolve_model(args.init, events, formats=("safetensors", "pth"))
    cfg = TrainConfig(
        data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, crop=args.crop,
        val_every=args.val_every, seed=args.seed, workers=args.workers, device=args.device,
        precision=args.precision, init=args.init, backbone=args.backbone, resume=args.resume,
        overwrite=args.overwrite, command=command,
    )
    result = train(cfg, events)
    if args.progress != "jsonl" and int(os.environ.get("RANK", 0)) == 0:
        s = result["stats"]
        best = s.get("best_val") or {}
        print(f"trained {s['steps']} steps in {s['seconds']:.0f} s ({s['seconds_per_step']:.2f} s/step, "
              f"{s['samples_per_second']:.2f} samples/s) on {s['device']} {s['precision']}"
              + (f"; best val f1 {best['f1']:.4f} at step {s['best_step']}" if best else "")
              + f"; wrote {args.out}", file=sys.stderr)
    return 0
