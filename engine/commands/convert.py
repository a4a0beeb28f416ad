"""``python -m engine convert IN OUT.safetensors [--set key=value ...]``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint (e.g. the authors' .pth) to our .safetensors")
    p.add_argument("input", help="checkpoint to read (.pth or .safetensors)")
    p.add_argument("output", help="our .safetensors file to write")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a metadata field, e.g. gsd=0.5 or training.data=LEVIR-CD+ (value parsed as JSON when it can be)")
    p.add_argument("--fp16", action="store_true", help="store weights as fp16 (half the size)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run)


def apply_sets(info, items: list[str]) -> None:
    """Apply ``--set KEY=VALUE`` items to a :class:`~engine.checkpoint.ModelInfo`, then check
    the result as a reader would: a bad value is refused naming its ``--set`` (the last
    one when fields disagree with each other, e.g. bands and scaling lengths)."""
    from ..checkpoint import MetadataError, check_info

    by_field: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        info.set(key.strip(), value)
        by_field[key.strip().split(".")[0]] = item
    try:
        check_info(info)
    except MetadataError as exc:
        blamed = by_field.get(exc.field, items[-1] if items else None)
        if blamed is None:
            raise
        raise UserError(f"--set {blamed}: {exc.problem}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..checkpoint import load_checkpoint, save_checkpoint

    from ..outputs import check_output, staged_file

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output must end in .safetensors")
    check_output(out, "converted", [args.input])
    if os.path.lexists(out) and not args.overwrite:
        raise UserError(f"{out}: exists (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: output folder does not exist")
    state, info = load_checkpoint(args.input)
    apply_sets(info, args.set)
    with staged_file(out, args.overwrite, inputs=[args.input]) as tmp:  # nothing half-written, ever
        save_checkpoint(tmp, state, info, dtype=torch.float16 if args.fp16 else torch.float32)
    print(f"wrote {out}")
    return 0
