"""The authors' HRMNet training loss (BCE + Dice on five change maps, BCE on hard regions).

With a ``valid`` mask (partial labels, see ``prepare --labelled-area``), every term is
taken over the labelled pixels only: the BCE terms are means over them, the Dice sums
run over them, and the hard-region target only exists there. Without it, the loss is the
authors' to the bit (checked against ``../shared/parity``).
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

__all__ = ["dice", "hrmnet_loss"]


def dice(p: Tensor, y: Tensor, eps: float = 1e-5, valid: Optional[Tensor] = None) -> Tensor:
    """Soft Dice coefficient over the whole batch: (2·Σp·y + eps) / (Σp + Σy + eps).

    With ``valid`` (same shape, 0/1), the sums run over the valid pixels only."""
    if valid is None:
        return (2 * (p * y).sum() + eps) / (p.sum() + y.sum() + eps)
    p, y = p * valid, y * valid
    return (2 * (p * y).sum() + eps) / (p.sum() + y.sum() + eps)


def _masked_bce(p: Tensor, y: Tensor, valid: Tensor, n_valid: Tensor) -> Tensor:
    """Mean binary cross-entropy over the valid pixels (0 when there are none)."""
    return (F.binary_cross_entropy(p, y, reduction="none") * valid).sum() / n_valid


def hrmnet_loss(change: Tensor, hard: Tensor, label: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """Training loss of the authors.

    Args:
        change: (N, 5, H, W) change probabilities (final, d2..d5).
        hard: (N, 1, H, W) hard-region probability.
        label: (N, 1, H, W) or (N, H, W) binary change label in {0, 1}.
        valid: None (every pixel labelled), or the same shape as ``label``: 1 where the
            pixel is labelled, 0 where it is not (it then adds nothing to any term).

    Returns:
        Scalar: Σ_k [BCE(change_k, y) + 1 − Dice(change_k, y)] + BCE(hard, h) with the
        hard-region target h = y·(1 − p̂) + p̂·(1 − y), p̂ = change[:, 0] detached. With
        ``valid``, each term over the valid pixels; 0 when no pixel is valid.
    """
    y = label.float()
    if y.dim() == 3:
        y = y.unsqueeze(1)
    # BCE on probabilities is not autocast-safe: compute the loss in fp32.
    change, hard = change.float(), hard.float()
    if valid is not None:
        return _masked_loss(change, hard, y, valid)
    total = change.new_zeros(())
    for k in range(change.shape[1]):
        p = change[:, k : k + 1]
        total = total + F.binary_cross_entropy(p, y) + 1 - dice(p, y)
    p_hat = change[:, 0:1].detach()
    target = y * (1 - p_hat) + p_hat * (1 - y)
    return total + F.binary_cross_entropy(hard, target)


def _masked_loss(change: Tensor, hard: Tensor, y: Tensor, valid: Tensor) -> Tensor:
    """:func:`hrmnet_loss` over the pixels where ``valid`` is 1 (shapes as there, fp32)."""
    v = valid.float()
    if v.dim() == 3:
        v = v.unsqueeze(1)
    v = v.to(y.device).expand_as(y)
    n_valid = v.sum().clamp(min=1.0)
    y = y * v  # unlabelled pixels: any value, never used
    total = change.new_zeros(())
    for k in range(change.shape[1]):
        p = change[:, k : k + 1]
        total = total + _masked_bce(p, y, v, n_valid) + 1 - dice(p, y, valid=v)
    p_hat = change[:, 0:1].detach()
    target = y * (1 - p_hat) + p_hat * (1 - y)
    return total + _masked_bce(hard, target, v, n_valid)
