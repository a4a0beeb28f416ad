"""``python -m engine sheets``: change detection over map sheets, one merged layer.

Exit status: 0 all sheets done, 2 a user mistake (nothing computed), 3 some sheets
failed (the merged layer holds the others; status.gpkg says why), 130 cancelled (the run
folder resumes). See :func:`engine.sheets.run.run_sheets`.

``--print-slurm-script`` computes nothing: it prints a SLURM batch script
(:func:`engine.sheets.execute.slurm_script`) that runs this same command on a Dask cluster
of ``--slurm-workers`` GPU workers.
"""
from __future__ import annotations

import argparse

from .detect import band_list, cancel_on_sigterm


def _gpus(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CUDA device numbers such as 0,1")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sheets", help="detect change over map sheets (one merged layer, resumable, Dask)",
                       description="Detect change over many before/after sheet pairs as one mosaic: exact sheet "
                                   "edges, one merged layer, a resumable run folder, local or Dask workers.")
    p.add_argument("--sheets", required=True, metavar="PATH",
                   help="CSV with header id,before,after (paths relative to the CSV), or a vector sheet index")
    p.add_argument("--run", required=True, metavar="FOLDER", help="run folder (created; re-running resumes)")
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint (.safetensors or the authors' .pth), or an exported .onnx (runs on onnxruntime; no torch needed)")
    p.add_argument("--id-field", metavar="F", help="attribute with the sheet id (default id)")
    p.add_argument("--before", metavar="TEMPLATE", help="before path template, e.g. /ortho/2019/{id}.tif")
    p.add_argument("--after", metavar="TEMPLATE", help="after path template, e.g. /ortho/2023/{id}.tif")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip sheets without a partner or with missing files (reported in the status)")
    out = p.add_argument_group("outputs")
    out.add_argument("--out-vector", metavar="PATH", help="merged polygons: .gpkg, .shp, .fgb or .geojson")
    out.add_argument("--out-probability", metavar="PATH.vrt", help="VRT mosaic of the per-sheet probability GeoTIFFs")
    out.add_argument("--out-mask", metavar="PATH.vrt", help="VRT mosaic of the per-sheet mask GeoTIFFs")
    out.add_argument("--out-review", metavar="PATH.vrt",
                     help="VRT mosaic of the per-sheet review GeoTIFFs (HRMNet's hard-region score)")
    out.add_argument("--out-review-areas", metavar="PATH",
                     help="'look here' polygons over all sheets: regions of high review score holding no change")
    out.add_argument("--probability-dtype", choices=("uint8", "float32"), default="uint8",
                     help="uint8: p*254 with nodata 255 (default); float32: p with nodata -1")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing merged outputs (finished sheets are never discarded)")
    ex = p.add_argument_group("execution")
    ex.add_argument("--workers", type=int, metavar="N",
                    help="local worker processes (default: one per GPU, one on CPU); 1 may run in-process")
    ex.add_argument("--gpus", type=_gpus, metavar="0,1", help="CUDA devices to use, one worker each")
    ex.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://host:8786)")
    ex.add_argument("--scheduler-file", metavar="FILE", help="an existing Dask cluster's scheduler file")
    ex.add_argument("--shard", metavar="I/N", help="compute every N-th sheet from the I-th in this process, no merge")
    ex.add_argument("--merge-only", action="store_true", help="compute nothing; merge what the shards finished")
    ex.add_argument("--restart", action="store_true", help="discard the run folder's sheets and start over")
    d = p.add_argument_group("detection (as detect)")
    d.add_argument("--bands-before", type=band_list, metavar="1,2,3", help="1-based bands of the before (1 or 3)")
    d.add_argument("--bands-after", type=band_list, metavar="1,2,3", help="1-based bands of the after (1 or 3)")
    d.add_argument("--tile-size", type=int, metavar="PX", help="tile edge, a multiple of 32 (default: checkpoint)")
    d.add_argument("--overlap", type=int, metavar="PX", help="tile overlap, < tile/2 (default: checkpoint)")
    d.add_argument("--batch-size", type=int, metavar="N", help="tiles per forward pass (default: 8 on CUDA, 2 on CPU)")
    d.add_argument("--read-threads", type=int, metavar="N", help="threads reading tiles in each worker")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto); with an .onnx model also tensorrt[:N], directml[:N]")
    d.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    d.add_argument("--threshold", type=float, help="change when probability > threshold (default: checkpoint)")
    d.add_argument("--review-threshold", type=float, metavar="SCORE",
                   help="review score above which a region without change is a 'look here' area (default: checkpoint)")
    d.add_argument("--min-area", type=float, default=0.0, metavar="M2", help="drop polygons smaller than this (m²)")
    d.add_argument("--simplify", type=float, default=0.0, metavar="METRES",
                   help="topology-preserving simplification tolerance (metres, 0 = none)")
    d.add_argument("--extent", metavar="XMIN,YMIN,XMAX,YMAX", help="process only this box (before's CRS)")
    p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                   help="bar: tqdm bars over sheets and tiles on stderr (tiles live with --workers 1, else "
                        "per finished sheet); jsonl: one JSON event a line on stdout ('progress' with stage "
                        "'sheets' and 'tiles', a 'sheet' event per sheet); none")
    _add_slurm(p)
    p.set_defaults(func=run, sheets_parser=p)


#: Options of the SLURM script itself, left out of the command it runs.
_SLURM = ("print_slurm_script", "slurm_workers", "slurm_python", "slurm_partition", "slurm_account", "slurm_time",
          "slurm_cpus", "slurm_mem")
#: Options the script sets itself (it connects the run to its own cluster).
_NOT_IN_SCRIPT = ("workers", "gpus", "scheduler", "scheduler_file", "shard", "merge_only")


def _add_slurm(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("SLURM batch script (print it, compute nothing)")
    s.add_argument("--print-slurm-script", action="store_true",
                   help="print a SLURM script running this command on a Dask cluster of GPU workers; "
                        "submit it with sbatch (submitting it again resumes)")
    s.add_argument("--slurm-workers", type=int, default=1, metavar="N", help="GPU workers = SLURM tasks (default 1)")
    s.add_argument("--slurm-python", metavar="PATH",
                   help="the engine's Python on the compute nodes (default: this one)")
    s.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    s.add_argument("--slurm-account", metavar="NAME", help="SLURM account")
    s.add_argument("--slurm-time", default="12:00:00", metavar="HH:MM:SS", help="time limit (default 12:00:00)")
    s.add_argument("--slurm-cpus", type=int, default=8, metavar="N", help="CPUs per worker (default 8)")
    s.add_argument("--slurm-mem", default="32G", metavar="SIZE", help="memory per worker (default 32G)")


def _command_line(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The sheets options given (those differing from their defaults), as a command line."""
    argv: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if dest in _SLURM or dest in ("help", "func") or not action.option_strings:
            continue
        value = getattr(args, dest, None)
        if value is None or value is False or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


def print_slurm_script(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Print the SLURM script of this command (``--print-slurm-script``)."""
    import sys

    from ..errors import UserError
    from ..sheets.execute import slurm_script

    given = [f"--{d.replace('_', '-')}" for d in _NOT_IN_SCRIPT if getattr(args, d, None) not in (None, False)]
    if given:
        raise UserError(f"{given[0]}: not with --print-slurm-script (the script starts its own Dask cluster)")
    for flag, value in (("--slurm-workers", args.slurm_workers), ("--slurm-cpus", args.slurm_cpus)):
        if value < 1:
            raise UserError(f"{flag} {value}: expected 1 or more")
    sys.stdout.write(slurm_script(
        _command_line(args, parser), workers=args.slurm_workers, run_folder=args.run,
        python=args.slurm_python or sys.executable, cpus_per_worker=args.slurm_cpus, mem_per_worker=args.slurm_mem,
        time_limit=args.slurm_time, partition=args.slurm_partition, account=args.slurm_account))
    return 0


def run(args: argparse.Namespace) -> int:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    from ..events import make_events
    from ..sheets.execute import parse_shard
    from ..sheets.run import run_sheets

    if args.print_slurm_script:
        return print_slurm_script(args, args.sheets_parser)
    shard = parse_shard(args.shard) if args.shard else None
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    cancel_on_sigterm()
    events = make_events(args.progress, bars=("sheets", "tiles"))
    from ..catalogue import resolve_model

    result = run_sheets(
        args.sheets, args.run, model=resolve_model(args.model, events), out_vector=args.out_vector, out_probability=args.out_probability,
        out_mask=args.out_mask, out_review=args.out_review, out_review_areas=args.out_review_areas,
        review_threshold=args.review_threshold, id_field=args.id_field, before=args.before, after=args.after,
        skip_missing=args.skip_missing, workers=args.workers, gpus=args.gpus, scheduler=args.scheduler,
        scheduler_file=args.scheduler_file, shard=shard, merge_only=args.merge_only, restart=args.restart,
        overwrite=args.overwrite, events=events, bands_before=args.bands_before, bands_after=args.bands_after,
        tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, read_threads=args.read_threads,
        device=args.device, precision=args.precision, threshold=args.threshold, min_area=args.min_area,
        simplify=args.simplify, extent=args.extent, probability_dtype=args.probability_dtype)
    return result.exit_code
