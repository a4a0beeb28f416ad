"""Device and precision choice, shared by detection, training, evaluation and benchmarks."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import torch

from .errors import UserError

__all__ = ["Runtime", "select_runtime", "cpu_has_bf16"]

DEVICES = "auto|cpu|cuda|cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (avx512_bf16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs.

    Attributes:
        device: the torch device.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast dtype; fp32 = no autocast).
        channels_last: whether model and inputs use the channels_last memory format.
    """

    device: torch.device
    precision: str
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast context for the forward pass (no-op in fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                yield

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device and memory format."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Move an input batch (N, C, H, W) to the device and memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def describe(self) -> dict:
        """What was chosen, for log lines and JSON events."""
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        return {"device": name, "precision": self.precision, "channels_last": self.channels_last}


def _parse_device(device: str) -> torch.device:
    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu or auto)")
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    raise UserError(f"--device {device}: expected {DEVICES}")


def select_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Choose device and precision.

    ``auto`` precision: bf16 autocast + channels_last on CUDA; on CPU bf16 +
    channels_last only when the CPU has avx512_bf16/AMX, else fp32 + channels_last.
    Raises :class:`UserError` for CUDA where none exists or unknown names.
    """
    dev = _parse_device(device)
    precision = (precision or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise UserError("--precision fp16: not supported on CPU (use fp32 or bf16)")
    return Runtime(device=dev, precision=precision, channels_last=True)
