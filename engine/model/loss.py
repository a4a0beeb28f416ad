"""The authors' HRMNet training loss (BCE + Dice on five change maps, BCE on hard regions)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["dice", "hrmnet_loss"]


def dice(p: Tensor, y: Tensor, eps: float = 1e-5) -> Tensor:
    """Soft Dice coefficient over the whole batch: (2·Σp·y + eps) / (Σp + Σy + eps)."""
    return (2 * (p * y).sum() + eps) / (p.sum() + y.sum() + eps)


def hrmnet_loss(change: Tensor, hard: Tensor, label: Tensor) -> Tensor:
    """Training loss of the authors.

    Args:
        change: (N, 5, H, W) change probabilities (final, d2..d5).
        hard: (N, 1, H, W) hard-region probability.
        label: (N, 1, H, W) or (N, H, W) binary change label in {0, 1}.

    Returns:
        Scalar: Σ_k [BCE(change_k, y) + 1 − Dice(change_k, y)] + BCE(hard, h) with the
        hard-region target h = y·(1 − p̂) + p̂·(1 − y), p̂ = change[:, 0] detached.
    """
    y = label.float()
    if y.dim() == 3:
        y = y.unsqueeze(1)
    # BCE on probabilities is not autocast-safe: compute the loss in fp32.
    change, hard = change.float(), hard.float()
    total = change.new_zeros(())
    for k in range(change.shape[1]):
        p = change[:, k : k + 1]
        total = total + F.binary_cross_entropy(p, y) + 1 - dice(p, y)
    p_hat = change[:, 0:1].detach()
    target = y * (1 - p_hat) + p_hat * (1 - y)
    return total + F.binary_cross_entropy(hard, target)
