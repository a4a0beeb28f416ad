"""The authors' training recipe, resumable and multi-process.

One run lives in a folder ``RUN``:

- ``best.safetensors``: the weights of the best validation F1 so far; ``last.safetensors``:
  the latest weights (both our checkpoint format, training summary in the metadata);
- ``state.pt``: everything needed to continue exactly (model, optimizer, scheduler,
  grad scaler, step, best F1, history), written atomically at each validation, at the
  end, and when the run is cancelled (Ctrl-C or the caller's cancel);
- ``metrics.csv``: one row a step (step, loss, lr, val_* at validation steps) and
  ``curves.png`` (loss and validation F1 against steps), refreshed at each validation.

Recipe: loss :func:`engine.model.hrmnet_loss`; AdamW (lr 5e-4, betas 0.9/0.999, weight
decay 1e-2); poly schedule with warm-up (:mod:`.schedule`); the four augmentations
(:mod:`.augment`); model selection by validation F1, and in the same validation pass the
"look here" ``review_threshold`` each saved checkpoint stores (:mod:`.review_threshold`).
Mixed precision on CUDA (bf16, or fp16 with a grad scaler); fp32 on CPU unless bf16 is asked.

Sample order is a pure function of (seed, step): the k-th sample of the run is tile
``perm_e[k mod n]`` of the epoch's seeded permutation, augmented with a generator seeded
by (seed, k), whatever the number of workers. That makes ``--resume`` continue exactly.
Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its slice of every global
batch, gradients are averaged by DistributedDataParallel, and only rank 0 writes.
"""
from __future__ import annotations

import collections
import csv
import io
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ..checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from ..errors import Cancelled, UserError, first_line
from ..events import Events
from ..runtime import Runtime, select_runtime
from .augment import TrainAugment
from .dataset import ChangeDataset, label_warning, scan_split, split_target
from .evaluate import confusion_over, eval_loader
from .metrics import Confusion
from .schedule import lr_factor, make_scheduler

__all__ = [
    "TrainConfig", "DEFAULTS", "RecentRate", "StepSampler", "train", "train_step", "make_optimizer", "training_runtime",
    "RUN_FILES", "CSV_COLUMNS",
]

RUN_FILES = ("state.pt", "best.safetensors", "last.safetensors", "metrics.csv", "curves.png")
CSV_COLUMNS = ("step", "loss", "lr", "val_kappa", "val_iou", "val_f1", "val_precision", "val_recall")
VAL_KEYS = ("kappa", "iou", "f1", "precision", "recall", "oa")

# Recipe values (the authors'); a None field of TrainConfig takes these, or on --resume the run's own.
DEFAULTS: dict[str, Any] = {
    "steps": 20000,
    "batch_size": 8,
    "lr": 5e-4,
    "crop": 512,
    "val_every": 1000,
    "seed": 0,
}
RECIPE = ("data", "steps", "batch_size", "lr", "crop", "val_every", "seed", "init", "backbone")
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-2


@dataclass
class TrainConfig:
    """Options of one training run (None: the recipe default, or the resumed run's value).

    Attributes:
        data: dataset folder in the authors' layout (train split; val for selection).
        out: run folder.
        steps: total optimizer steps (iterations).
        batch_size: global batch (split over processes under torchrun).
        lr: base learning rate.
        crop: training crop edge in pixels.
        val_every: validate (and save) every N steps; 0 = only at the end.
        seed: seed of weights init, sample order and augmentation.
        workers: DataLoader worker processes per training process (None: 0 on CPU, 4 on CUDA).
        device, precision: see :func:`engine.runtime.select_runtime` (CPU: fp32 unless bf16).
        init: checkpoint with initial weights (ours or the authors' .pth).
        backbone: timm-format resnet18d weights (.pth or .safetensors) for the encoder, or
            ``imagenet``: timm's published ImageNet weights (downloaded once, see :mod:`engine.hub`).
        resume: continue the run in ``out`` from its state.pt.
        overwrite: start over in an existing ``out`` (its run files are replaced).
        command: the command line, recorded in the checkpoints' metadata.
    """

    data: Optional[str] = None
    out: str = "run"
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    crop: Optional[int] = None
    val_every: Optional[int] = None
    seed: Optional[int] = None
    workers: Optional[int] = None
    device: str = "auto"
    precision: str = "auto"
    init: Optional[str] = None
    backbone: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    command: str = ""


# --------------------------------------------------------------------------- sampling


class StepSampler(Sampler):
    """Yields ``(tile index, sample seed)`` for steps ``start_step..steps-1``.

    Global sample k (k = step·batch_size + j) is ``perm_e[k mod n]`` with ``e = k div n``
    and ``perm_e`` a permutation seeded by (seed, e); its augmentation seed is derived
    from (seed, k). Process ``rank`` of ``world`` takes the j in
    ``[rank·b, (rank+1)·b)`` with b = batch_size / world.
    """

    def __init__(self, n: int, batch_size: int, steps: int, start_step: int = 0, seed: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        if n < 1:
            raise ValueError("empty dataset")
        self.n, self.batch_size, self.steps, self.start_step = n, batch_size, steps, start_step
        self.seed, self.rank, self.world = seed, rank, world
        self.per_rank = batch_size // world
        self._perm: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def _perm_for(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n))
        return self._perm[1]

    def item_seed(self, k: int) -> int:
        return int(np.random.SeedSequence([self.seed, k, 0xA46]).generate_state(1)[0])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in range(self.start_step, self.steps):
            for j in range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank):
                k = step * self.batch_size + j
                yield int(self._perm_for(k // self.n)[k % self.n]), self.item_seed(k)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.per_rank


# --------------------------------------------------------------------------- helpers


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    return _Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def _resolve(cfg: TrainConfig, saved: Optional[dict], events: Events) -> TrainConfig:
    """Fill None fields from the resumed run (``saved``) or :data:`DEFAULTS`; warn on changes."""
    values = asdict(cfg)
    for key in RECIPE:
        given = values[key]
        if saved is not None and key in saved:
            if given is None:
                values[key] = saved[key]
            elif given != saved[key]:
                events.warn(f"--{key.replace('_', '-')} {given}: differs from the resumed run's {saved[key]}; using {given}")
        elif given is None and key in DEFAULTS:
            values[key] = DEFAULTS[key]
    return TrainConfig(**values)


def _check_config(cfg: TrainConfig, world: int) -> None:
    if not cfg.data:
        raise UserError("--data: the dataset folder is required")
    for key in ("steps", "batch_size", "crop"):
        if getattr(cfg, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} {getattr(cfg, key)}: must be at least 1")
    if cfg.crop < 32:
        raise UserError(f"--crop {cfg.crop}: must be at least 32 pixels")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr {cfg.lr}: must be a positive number")
    if cfg.val_every < 0:
        raise UserError(f"--val-every {cfg.val_every}: must be 0 (only at the end) or more")
    if cfg.workers is not None and cfg.workers < 0:
        raise UserError(f"--workers {cfg.workers}: must be 0 or more")
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size}: must be a multiple of the {world} processes")
    if cfg.init and cfg.backbone:
        raise UserError("--init and --backbone: give one or the other (--init sets all weights)")
    if cfg.resume and cfg.overwrite:
        raise UserError("--resume and --overwrite: give one or the other")


def _check_run_files(out: Path, cfg: TrainConfig) -> None:
    """Refuse a run folder whose files would replace ``--init`` or ``--backbone`` (by real
    path and file identity: ``..`` and symlinks resolved)."""
    from ..outputs import check_output

    for name in RUN_FILES:
        check_output(out / name, "run", [p for p in (cfg.init, cfg.backbone) if p])


def _lock_run_folder(out: Path, cfg: TrainConfig) -> None:
    """Hold ``out`` for this run (another run into it is refused; released by
    :func:`train`); then re-check it: another run may have filled it since the start."""
    from ..outputs import hold_folder, remove_stale

    hold_folder(out)
    remove_stale(out)
    _check_out(out, cfg.resume, cfg.overwrite)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run folder unless resuming or overwriting (nothing is written here)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if resume:
        if not (out / "state.pt").is_file():
            raise UserError(f"{out}: no state.pt to resume from (start a new run without --resume)")
        return
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists (use --resume to continue that run or --overwrite to start over)")


#: Logged when a run starts from random weights (no --backbone, no --init).
NO_PRETRAINED_WARNING = (
    "training from random weights (no --backbone, no --init): results will be well below the paper's, which "
    "starts from ImageNet weights; add --backbone imagenet (downloads timm's resnet18d once, 47 MB) or "
    "--init a trained model"
)


def _backbone_file(backbone: str, events: Events, dist: _Dist) -> Optional[str]:
    """``--backbone``: a file, or ``imagenet`` = timm's published weights (downloaded once, cached).

    Under torchrun only rank 0 reads ImageNet weights: DistributedDataParallel copies rank 0's
    weights to every process when it wraps the model. Returns None where nothing is loaded.
    """
    if backbone.lower() != "imagenet":
        return backbone
    if not dist.main:
        return None
    from ..hub import imagenet_backbone

    return str(imagenet_backbone(events))


def _load_backbone(model: torch.nn.Module, path: Optional[str]) -> None:
    from ..model import load_timm_resnet18d

    if path is None:
        return
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: backbone weights not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{p}: cannot read backbone weights ({first_line(exc)})") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{p}: not a state_dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v.float() if v.is_floating_point() else v
             for k, v in state.items()}
    try:
        load_timm_resnet18d(model.encoder.context_encoder, state)
    except ValueError as exc:
        raise UserError(f"{p}: {exc}") from exc


def _dataset_gsd(data: Path) -> Optional[float]:
    """GSD in metres from ``data/dataset.json`` (written by ``prepare``), if present."""
    import json

    try:
        meta = json.loads((data / "dataset.json").read_text())
        gsd = meta.get("gsd")
        if isinstance(gsd, (list, tuple)):
            gsd = gsd[0]
        gsd = float(gsd) if gsd is not None else None
        return gsd if gsd is not None and math.isfinite(gsd) and gsd > 0 else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` by ``write(tmp)`` in a private staging folder beside it, then rename
    it into place (no predictable temporary name, nothing half-written; disk full is one
    line naming ``path``; see :mod:`engine.outputs`)."""
    from ..outputs import staged_file

    with staged_file(path, overwrite=True) as tmp:
        write(tmp)


def _atomic_write(path: Path, data: bytes) -> None:
    _replace(path, lambda tmp: tmp.write_bytes(data))


def _write_csv(path: Path, history: list[list[float]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in history:
        step, loss, lr, *val = row
        cells = [int(step), f"{loss:.6g}", f"{lr:.6g}"] + ["" if math.isnan(v) else f"{v:.6f}" for v in val[:5]]
        w.writerow(cells)
    _atomic_write(path, buf.getvalue().encode())


def _write_curves(path: Path, history: list[list[float]], best_step: Optional[int]) -> None:
    """Loss (raw and smoothed) and validation F1 against steps, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([r[0] for r in history])
    loss = np.array([r[1] for r in history])
    f1 = np.array([r[5] for r in history])
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(steps, loss, color="0.75", lw=0.8, label="loss")
    if len(loss) >= 10:
        k = max(2, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax1.plot(steps[k - 1:], smooth, color="C0", lw=1.5, label=f"mean of {k}")
    ax1.set_ylabel("training loss")
    ax1.legend(loc="upper right")
    ax1.grid(alpha=0.3)
    val = ~np.isnan(f1)
    ax2.plot(steps[val], f1[val], "o-", color="C1", label="validation F1")
    if best_step is not None and np.any(steps[val] == best_step):
        ax2.plot([best_step], f1[steps == best_step], "*", color="C3", ms=14, label=f"best (step {best_step})")
    ax2.set_ylabel("validation F1")
    ax2.set_xlabel("step")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write(path, buf.getvalue())


class _StopFlag:
    """Ctrl-C, SIGTERM (and Ctrl-Break on Windows) set a flag checked between steps, so
    the run stops after the current step with a resumable state; a second signal acts
    at once (the previous handler is restored)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))

    def __init__(self) -> None:
        self.set = False
        self._old: dict = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():

            def handler(signum: int, frame: Any) -> None:
                self.set = True
                signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


class RecentRate:
    """Seconds per step over the last ``window`` steps, as the training log shows it.

    The first step of a run (or of a resume) also starts the data loader and warms up the
    kernels: it counts only until a second step is timed, so the rate shown is what the
    following steps take, not a running average that starts high."""

    def __init__(self, window: int = 20) -> None:
        self.first: Optional[float] = None
        self.recent: collections.deque = collections.deque(maxlen=window)

    def add(self, seconds: float) -> None:
        if self.first is None:
            self.first = seconds
        else:
            self.recent.append(seconds)

    @property
    def value(self) -> float:
        """The mean of the recent steps (the first step alone while it is the only one; 0 before)."""
        if self.recent:
            return sum(self.recent) / len(self.recent)
        return self.first or 0.0


# --------------------------------------------------------------------------- the run


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
               rt: Runtime) -> tuple[torch.Tensor, float]:
    """One optimizer step on a batch: x float (N, 6, H, W) normalised, y float (N, 1, H, W) in {0, 1}
    (or (N, 2, H, W) with the labelled mask as channel 1: the loss ignores the pixels not labelled).

    Forward under the runtime's autocast, the authors' loss in fp32, backward (scaled
    for fp16), optimizer and schedule step. Returns the loss (a 0-d tensor on the
    device, not synchronised) and the learning rate this step used.
    """
    from ..model import hrmnet_loss

    x = rt.tensor(x)
    y, valid = split_target(y.to(rt.device, non_blocking=True))
    with rt.autocast():
        change, hard = model(x)
    loss = hrmnet_loss(change, hard, y, valid)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    lr_used = optimizer.param_groups[0]["lr"]
    scheduler.step()
    return loss, lr_used


def make_optimizer(model: torch.nn.Module, lr: float, steps: int, rt: Runtime):
    """The authors' AdamW, poly schedule with warm-up, and a grad scaler (enabled for fp16 only)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS, weight_decay=WEIGHT_DECAY)
    scheduler = make_scheduler(optimizer, steps)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    return optimizer, scheduler, scaler


@dataclass
class _RunState:
    step: int = 0
    best_f1: float = -1.0
    best_step: Optional[int] = None
    best_metrics: dict = field(default_factory=dict)
    last_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    step_seconds: float = 0.0
    history: list = field(default_factory=list)


def train(cfg: TrainConfig, events: Optional[Events] = None) -> dict:
    """Train (or resume) one run; returns ``{"outputs": {...}, "stats": {...}}``.

    Raises :class:`UserError` for bad options, data or run folder (before anything is
    written) and :class:`Cancelled` after saving a resumable state when stopped.
    """
    from ..outputs import release_folder

    dist = _dist_from_env()
    events = events or Events()
    if not dist.main:
        events = Events(None)
    if dist.world > 1:
        import torch.distributed as tdist

        use_cuda = torch.cuda.is_available() and cfg.device not in ("cpu",)
        if use_cuda:
            torch.cuda.set_device(dist.local)
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if use_cuda else "gloo")
        try:
            return _train(cfg, events, dist)
        finally:
            tdist.destroy_process_group()
            release_folder(cfg.out)
    try:
        return _train(cfg, events, dist)
    finally:
        release_folder(cfg.out)  # taken by _lock_run_folder


def training_runtime(device: str = "auto", precision: str = "auto", world: int = 1, local_rank: int = 0) -> Runtime:
    """The runtime for training: as :func:`select_runtime`, but fp32 on CPU unless bf16 is
    asked, and process ``local_rank``'s own GPU under torchrun."""
    device = device or "auto"
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    rt = select_runtime(device, precision)
    if rt.device.type == "cpu" and (precision or "auto") == "auto" and rt.precision != "fp32":
        rt = Runtime(rt.device, "fp32", rt.channels_last)
    return rt


def _train(cfg: TrainConfig, events: Events, dist: _Dist) -> dict:
    out = Path(cfg.out)
    cfg, saved = _resolve_run(cfg, out, events, dist)
    rt = _set_up_runtime(cfg, dist)
    data = _scan_data(Path(cfg.data), cfg.crop, events, dist)
    model = _init_model(cfg, saved, rt, events, dist)
    optimizer, scheduler, scaler = make_optimizer(model, cfg.lr, cfg.steps, rt)
    run = _resume_state(saved, model, optimizer, scheduler, scaler, cfg.steps) if saved else _RunState()
    trainer = _Trainer(cfg, out, events, dist, rt, data, model, _wrap_ddp(model, rt, dist), optimizer, scheduler,
                       scaler, run, _make_loaders(cfg, data, run.step, rt, dist))
    trainer.open_run()
    trainer.step_loop()
    return trainer.finish()


# --------------------------------------------------------------------------- _train's steps


def _resolve_run(cfg: TrainConfig, out: Path, events: Events, dist: _Dist) -> tuple[TrainConfig, Optional[dict]]:
    """Check the run folder, read the saved state on ``--resume``, fill and check the options.

    Returns (the resolved config, the saved state or None)."""
    _check_out(out, cfg.resume, cfg.overwrite)
    saved = None
    if cfg.resume:
        try:
            saved = torch.load(str(out / "state.pt"), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{out / 'state.pt'}: cannot read the saved state ({type(exc).__name__})") from exc
    cfg = _resolve(cfg, saved["config"] if saved else None, events)
    _check_config(cfg, dist.world)
    _check_run_files(out, cfg)
    return cfg, saved


def _set_up_runtime(cfg: TrainConfig, dist: _Dist) -> Runtime:
    """The training runtime; CPU threads shared between processes, cuDNN autotuning on CUDA."""
    rt = training_runtime(cfg.device, cfg.precision, dist.world, dist.local)
    if rt.device.type == "cpu" and dist.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    if rt.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: pick the fastest kernels once
    return rt


@dataclass
class _Data:
    """The dataset of a run: its folder, train and val samples, and the crop edge (pixels) used."""

    path: Path
    train: list
    val: list
    crop: int


def _scan_data(data: Path, crop_asked: int, events: Events, dist: _Dist) -> _Data:
    """Scan the splits; warn (rank 0) of odd labels, no validation split, a crop cut to the tiles."""
    train_samples = scan_split(data, "train")
    val_list = data / "val" / "list" / "val.txt"
    empty_val = val_list.is_file() and not val_list.read_text(errors="replace").strip()  # prepare --split x,0,y
    val_samples = scan_split(data, "val") if (data / "val").exists() and not empty_val else []
    if dist.main:
        warning = label_warning(train_samples + val_samples)
        if warning:
            events.warn(warning)
        if not val_samples:
            events.warn(f"{data / 'val'}: no validation split: no model selection (best = last weights)")
    min_side = min(min(s.size) for s in train_samples)
    crop = min(crop_asked, min_side)
    if crop < crop_asked and dist.main:
        events.warn(f"--crop {crop_asked}: larger than the smallest training tile; training on {crop} px crops")
    if len({s.size for s in train_samples}) > 1 and min_side < crop_asked:
        # Tiles smaller than the crop along a side would give batches of mixed sizes.
        crop = min_side
    return _Data(data, train_samples, val_samples, crop)


def _init_model(cfg: TrainConfig, saved: Optional[dict], rt: Runtime, events: Events, dist: _Dist) -> torch.nn.Module:
    """HRMNet seeded by ``cfg.seed``, from ``--init`` or ``--backbone`` on a new run, on the runtime."""
    torch.manual_seed(cfg.seed)
    from ..model import HRMNet

    model = HRMNet()
    if cfg.init and not saved:
        state, _ = load_checkpoint(cfg.init)
        model.load_state_dict(state, strict=True)
    if cfg.backbone and not saved:
        _load_backbone(model, _backbone_file(cfg.backbone, events, dist))
    return rt.prepare(model).train()


def _resume_state(saved: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                  steps: int) -> _RunState:
    """Load a saved state into the model, optimizer, schedule, scaler and torch's RNG; the run's progress."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    for group in optimizer.param_groups:  # --steps may have changed the schedule
        group["lr"] = group["initial_lr"] * lr_factor(saved["run"]["step"], steps)
    torch.set_rng_state(saved["rng_torch"])
    return _RunState(**saved["run"])


def _wrap_ddp(model: torch.nn.Module, rt: Runtime, dist: _Dist) -> torch.nn.Module:
    """``model`` under DistributedDataParallel with more than one process, else itself."""
    if dist.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)


@dataclass
class _Loaders:
    """DataLoader worker processes per training process, the training and the validation loaders."""

    workers: int
    train: DataLoader
    val: Optional[DataLoader]


def _make_loaders(cfg: TrainConfig, data: _Data, start_step: int, rt: Runtime, dist: _Dist) -> _Loaders:
    """This process's slice of every global batch from ``start_step`` (see :class:`StepSampler`)
    and of the validation split."""
    workers = cfg.workers if cfg.workers is not None else (4 if rt.device.type == "cuda" else 0)
    per_rank = cfg.batch_size // dist.world
    sampler = StepSampler(len(data.train), cfg.batch_size, cfg.steps, start_step, cfg.seed, dist.rank, dist.world)
    loader = DataLoader(ChangeDataset(data.train, TrainAugment(data.crop)), batch_size=per_rank, sampler=sampler,
                        num_workers=workers, pin_memory=rt.device.type == "cuda")
    val_loader = eval_loader(data.val[dist.rank::dist.world], per_rank, workers,
                             pin_memory=rt.device.type == "cuda") if data.val else None
    return _Loaders(workers, loader, val_loader)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the processes in place (torch.distributed); returns it."""
    import torch.distributed as tdist

    tdist.all_reduce(t)
    return t


@dataclass
class _Trainer:
    """One run once set up; its methods are the rest of :func:`_train`: take the run folder,
    the step loop, validation with model selection, saving, and the final statistics."""

    cfg: TrainConfig
    out: Path
    events: Events
    dist: _Dist
    rt: Runtime
    data: _Data
    model: torch.nn.Module
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    run: _RunState
    loaders: _Loaders
    gsd: Optional[float] = None
    val_review: Optional[dict] = None  # how well the hard-region score points at the errors (see review_metrics)
    review_threshold: Optional[dict] = None  # the "look here" threshold measured on validation (see review_threshold)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.out_files = {name.split(".")[0]: str(self.out / name) for name in RUN_FILES}
        self.common = {
            "data": str(self.data.path), "steps": cfg.steps, "batch_size": cfg.batch_size, "crop": self.data.crop,
            "lr": cfg.lr, "seed": cfg.seed, "world_size": self.dist.world, **self.rt.describe(),
        }

    # ---- the run folder

    def open_run(self) -> None:
        """Rank 0 takes the run folder (emptied of run files on a new run) and emits ``start``."""
        cfg, out, events = self.cfg, self.out, self.events
        if self.dist.main:
            if not cfg.resume:
                out.mkdir(parents=True, exist_ok=True)
            _lock_run_folder(out, cfg)
            if not cfg.resume:
                for name in RUN_FILES:
                    (out / name).unlink(missing_ok=True)
            events.start(command="train", out=str(out), start_step=self.run.step, train_tiles=len(self.data.train),
                         val_tiles=len(self.data.val), workers=self.loaders.workers, **self.common)
            if cfg.resume:
                events.log(f"resuming {out} at step {self.run.step} of {cfg.steps}")
            elif not cfg.init and not cfg.backbone:
                events.warn(NO_PRETRAINED_WARNING)
        self.gsd = _dataset_gsd(self.data.path)

    # ---- the step loop

    def step_loop(self) -> None:
        """Optimizer steps up to ``cfg.steps``, validating every ``val_every`` and at the end.

        A cancel (signal or the caller's) saves a resumable state and raises :class:`Cancelled`."""
        cfg, run = self.cfg, self.run
        log_every = max(1, min(50, cfg.steps // 20))
        rate = RecentRate()
        t_last = time.perf_counter()
        batches = iter(self.loaders.train)
        with _StopFlag() as stop:
            try:
                while run.step < cfg.steps:
                    self._check_cancel(stop)
                    x, y, _ = next(batches)
                    loss_f, lr_used = self._optimizer_step(x, y)
                    now = time.perf_counter()
                    dt, t_last = now - t_last, now
                    run.seconds += dt
                    run.step_seconds += dt
                    rate.add(dt)
                    self._report_step(loss_f, lr_used, rate.value, log_every)
                    if (cfg.val_every and run.step % cfg.val_every == 0) or run.step == cfg.steps:
                        self.validate()
                        now = time.perf_counter()
                        run.seconds += now - t_last
                        t_last = now
            except (Cancelled, KeyboardInterrupt):
                self._save_stopped()
                raise Cancelled("cancelled") from None

    def _check_cancel(self, stop: _StopFlag) -> None:
        """Raise :class:`Cancelled` when a signal came or the caller cancels (any process, under torchrun)."""
        cancelled = stop.set
        try:
            self.events.check_cancel()
        except Cancelled:
            cancelled = True
        if self.dist.world > 1:
            cancelled = bool(_all_reduce(torch.tensor([float(cancelled)], device=self.rt.device)).item() > 0)
        if cancelled:
            raise Cancelled("cancelled")

    def _optimizer_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One step on a batch; (the loss averaged over the processes, the learning rate used).

        Raises UserError when the loss is not finite."""
        loss, lr_used = train_step(self.ddp, x, y, self.optimizer, self.scheduler, self.scaler, self.rt)
        loss_value = loss.detach()
        if self.dist.world > 1:
            loss_value = _all_reduce(loss_value) / self.dist.world
        loss_f = float(loss_value)
        if not math.isfinite(loss_f):
            raise UserError(f"training diverged at step {self.run.step + 1} (loss {loss_f}); try a lower --lr")
        self.run.step += 1
        return loss_f, lr_used

    def _report_step(self, loss_f: float, lr_used: float, seconds_per_step: float, log_every: int) -> None:
        """A history row, the ``progress`` event and, every ``log_every`` steps, a log line
        (``seconds_per_step``: the recent rate, see :class:`RecentRate`)."""
        run, steps = self.run, self.cfg.steps
        run.history.append([run.step, loss_f, lr_used] + [math.nan] * 5)
        self.events.emit("progress", done=run.step, total=steps, stage="train", loss=round(loss_f, 5),
                         lr=lr_used, seconds_per_step=round(seconds_per_step, 3))
        if run.step % log_every == 0 or run.step == 1:
            self.events.log(f"step {run.step}/{steps} loss {loss_f:.4f} lr {lr_used:.3g} {seconds_per_step:.2f} s/step")

    def _save_stopped(self) -> None:
        """On a cancel, rank 0 writes the metrics and the resumable state."""
        if self.dist.main:
            _write_csv(self.out / "metrics.csv", self.run.history)
            self.save_state()
            self.events.log(f"stopped at step {self.run.step} of {self.cfg.steps}; continue with --resume")

    # ---- validation and model selection

    def validate(self) -> None:
        """Score the validation split; rank 0 selects the best model and saves the run."""
        metrics = self._val_metrics()
        if not self.dist.main:
            return
        run = self.run
        improved = self.loaders.val is None or metrics["f1"] > run.best_f1
        if improved:
            run.best_f1, run.best_step, run.best_metrics = metrics.get("f1", -1.0), run.step, metrics
        run.last_metrics = metrics
        if metrics:
            self.events.emit("log", level="info", step=run.step, val=metrics,
                             message=f"val step {run.step}: " + " ".join(f"{k} {metrics[k]:.4f}" for k in VAL_KEYS)
                             + (" (best)" if improved else f" (best f1 {run.best_f1:.4f} at step {run.best_step})"))
        if improved and self.review_threshold:
            self._log_review_threshold()
        self._save(metrics, improved)

    def _log_review_threshold(self) -> None:
        """Log the measured "look here" threshold of the model just validated."""
        rt = self.review_threshold
        row = next((r for r in rt["table"] if r["threshold"] == rt["value"]), None)
        if rt["measured"] and row is not None:
            detail = (f"{row['hits']} of {row['areas']} areas hold missed change, {row['missed_caught']} of "
                      f"{row['missed_changes']} missed changes caught, F1 {row['f1']}")
        else:
            detail = "the default: no threshold caught a missed change on validation"
        self.events.log(f"review threshold {rt['value']} ({detail})")

    def _val_metrics(self) -> dict:
        """Validation scores over every process (rounded), also put in the last history row;
        {} without a validation split. Sets :attr:`val_review`."""
        from .review_metrics import ReviewStats
        from .review_threshold import Tee, ThresholdStats

        if self.loaders.val is None:
            return {}
        review, thresholds = ReviewStats(), ThresholdStats()
        conf = confusion_over(self.model, self.loaders.val, self.rt, review=Tee(review, thresholds))
        self.val_review = review.result()
        if self.dist.world > 1:
            t = torch.tensor([conf.tp, conf.fp, conf.fn, conf.tn], dtype=torch.float64, device=self.rt.device)
            conf = Confusion(*(int(v) for v in _all_reduce(t).tolist()))
            counts = torch.tensor([thresholds.missed, *thresholds.counts.ravel().tolist()], dtype=torch.float64,
                                  device=self.rt.device)
            counts = [int(v) for v in _all_reduce(counts).tolist()]
            thresholds.missed, thresholds.counts[:] = counts[0], np.reshape(counts[1:], thresholds.counts.shape)
        self.review_threshold = thresholds.result(default=ModelInfo.review_threshold)
        metrics = {k: round(v, 6) for k, v in conf.scores().items()}
        for i, key in enumerate(VAL_KEYS[:5]):
            self.run.history[-1][3 + i] = metrics[key]
        return metrics

    # ---- saving

    def _save(self, metrics: dict, improved: bool) -> None:
        """best (when improved) and last weights, metrics.csv, curves.png and the resumable state."""
        out, run = self.out, self.run
        info = self.info(metrics, run.step)
        if improved:
            _replace(out / "best.safetensors", lambda tmp: save_checkpoint(tmp, self.model, info))
        _replace(out / "last.safetensors", lambda tmp: save_checkpoint(tmp, self.model, info))
        _write_csv(out / "metrics.csv", run.history)
        _write_curves(out / "curves.png", run.history, run.best_step)
        self.save_state()

    def info(self, metrics: dict, step: int) -> ModelInfo:
        """The checkpoint metadata: detection tiling from the crop, GSD, the training summary."""
        run, cfg = self.run, self.cfg
        tile = max(32, self.data.crop // 32 * 32)  # detection tiles are multiples of 32 (check_info)
        rt = self.review_threshold
        return ModelInfo(tile_size=tile, overlap=min(128, tile // 4), gsd=self.gsd,
                         review_threshold=rt["value"] if rt else ModelInfo.review_threshold, training={
            **self.common, "command": cfg.command, "init": cfg.init, "backbone": cfg.backbone,
            "step": step, "seconds": round(run.seconds, 1), "best_step": run.best_step,
            "val": metrics, "best_val": run.best_metrics, "train_tiles": len(self.data.train),
            "val_tiles": len(self.data.val), "val_review": self.val_review, "review_threshold": rt,
        })

    def save_state(self) -> None:
        """``state.pt``: everything :func:`_resume_state` needs to continue exactly."""
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}, "rng_torch": torch.get_rng_state(),
            "config": {k: getattr(self.cfg, k) for k in RECIPE}, "run": asdict(self.run),
        }
        _replace(self.out / "state.pt", lambda tmp: torch.save(state, tmp))

    # ---- done

    def finish(self) -> dict:
        """The run's statistics; rank 0 emits ``done`` with the run files that exist."""
        run, cfg = self.run, self.cfg
        stats = {
            "steps": run.step, "seconds": round(run.seconds, 1),
            "seconds_per_step": round(run.step_seconds / max(1, len(run.history)), 3),
            "samples_per_second": round(cfg.batch_size * len(run.history) / max(run.step_seconds, 1e-9), 3),
            "best_step": run.best_step, "best_val": run.best_metrics, "last_val": run.last_metrics,
            **self.common,
        }
        if self.dist.main:
            self.events.done(outputs={k: v for k, v in self.out_files.items() if Path(v).exists()}, stats=stats)
        return {"outputs": self.out_files, "stats": stats}
