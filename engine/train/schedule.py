"""The authors' learning-rate schedule: poly decay with a linear warm-up.

``lr(it) = base · (1 − it/max_it)^0.9 · w(it)``, with ``w`` rising linearly from 0.1
at it = 0 to 1 at it = ``warmup`` (200) and staying 1 after. ``it`` counts optimizer
steps from 0 (the first step uses ``lr(0) = 0.1·base``).
"""
from __future__ import annotations

import functools

import torch

__all__ = ["lr_factor", "lr_at", "make_scheduler", "WARMUP_STEPS", "WARMUP_START", "POWER"]

WARMUP_STEPS = 200
WARMUP_START = 0.1
POWER = 0.9


def lr_factor(it: int, max_it: int, warmup: int = WARMUP_STEPS, start: float = WARMUP_START,
              power: float = POWER) -> float:
    """Multiplier of the base learning rate at optimizer step ``it`` (0-based) of ``max_it``."""
    if max_it <= 0:
        raise ValueError("max_it must be positive")
    it = min(max(it, 0), max_it)
    poly = (1.0 - it / max_it) ** power
    warm = start + (1.0 - start) * min(it / warmup, 1.0) if warmup > 0 else 1.0
    return poly * warm


def lr_at(it: int, base: float, max_it: int, warmup: int = WARMUP_STEPS) -> float:
    """Learning rate at step ``it``: ``base · lr_factor(it, max_it, warmup)``."""
    return base * lr_factor(it, max_it, warmup)


def make_scheduler(optimizer: torch.optim.Optimizer, max_it: int,
                   warmup: int = WARMUP_STEPS) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`lr_factor` to each group's base lr; call ``.step()``
    after each optimizer step. Its ``state_dict`` holds the step count for resuming."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_factor, max_it=max_it, warmup=warmup)
    )
