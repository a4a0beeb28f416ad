"""The HRM loss with partial labels: pixels not labelled add nothing to any term."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model import hrmnet_loss

from ...conftest import PARITY

CASES = sorted(PARITY.glob("case_seed*_*.npz"))


def _outputs(n: int = 2, h: int = 32, w: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    change = torch.rand(n, 5, h, w, generator=g).clamp(0.01, 0.99)
    hard = torch.rand(n, 1, h, w, generator=g).clamp(0.01, 0.99)
    label = (torch.rand(n, 1, h, w, generator=g) > 0.7).float()
    return change, hard, label


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_a_mask_of_ones_gives_the_authors_loss(case):
    data = np.load(case)
    args = [torch.from_numpy(data[k]) for k in ("change", "hard", "label")]
    expected = float(data["loss"])
    assert abs(hrmnet_loss(*args).item() - expected) <= 1e-4 * abs(expected)  # unmasked: unchanged
    ones = torch.ones_like(args[2])
    assert abs(hrmnet_loss(*args, valid=ones).item() - expected) <= 1e-4 * abs(expected)


def test_the_masked_loss_is_the_loss_of_the_labelled_pixels_alone():
    change, hard, label = _outputs()
    valid = torch.zeros_like(label)
    valid[:, :, :12] = 1  # the top 12 rows are labelled
    masked = hrmnet_loss(change, hard, label, valid)
    alone = hrmnet_loss(change[:, :, :12], hard[:, :, :12], label[:, :, :12])
    assert masked.item() == pytest.approx(alone.item(), rel=1e-5)


def test_labels_and_predictions_outside_the_labelled_area_change_nothing():
    change, hard, label = _outputs(seed=1)
    valid = torch.zeros_like(label)
    valid[..., :20] = 1
    other = label.clone()
    other[..., 20:] = 1 - other[..., 20:]  # flip every label that is not labelled
    assert hrmnet_loss(change, hard, label, valid).item() == hrmnet_loss(change, hard, other, valid).item()
    change.requires_grad_(True)
    hard.requires_grad_(True)
    hrmnet_loss(change, hard, label, valid).backward()
    assert torch.all(change.grad[..., 20:] == 0) and torch.all(hard.grad[..., 20:] == 0)  # hard target masked too
    assert torch.any(change.grad[..., :20] != 0) and torch.any(hard.grad[..., :20] != 0)


def test_nothing_labelled_gives_a_zero_loss():
    change, hard, label = _outputs(seed=2)
    loss = hrmnet_loss(change, hard, label, torch.zeros_like(label))
    assert loss.item() == 0.0 and torch.isfinite(loss)
