"""The authors' augmentations: each keeps image and label aligned, each happens half the time."""
from __future__ import annotations

import numpy as np
import torch

from engine.train.augment import TrainAugment, border_crop_resize, hflip, random_crop, swap_dates, vflip


def scene(size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Before/after uint8 (6,H,W) whose label (1,H,W) is exactly where band 0 is bright."""
    rng = np.random.default_rng(seed)
    blocks = rng.random((size // 8, size // 8)) < 0.3
    bright = np.kron(blocks, np.ones((8, 8), bool))
    img = rng.integers(0, 100, (6, size, size)).astype(np.uint8)
    img[0][bright] = 250
    img[3] = 7  # the after date is recognisable
    return torch.from_numpy(img), torch.from_numpy(bright[None].astype(np.uint8))


def test_random_crop_takes_an_aligned_window():
    img, lab = scene()
    ci, cl = random_crop(img, lab, 32, np.random.default_rng(3))
    assert ci.shape == (6, 32, 32) and cl.shape == (1, 32, 32)
    assert torch.equal(cl[0].bool(), ci[0] == 250)
    # A crop larger than the tile keeps the tile.
    ci, cl = random_crop(img, lab, 512, np.random.default_rng(3))
    assert torch.equal(ci, img) and torch.equal(cl, lab)


def test_flips_and_swap():
    img, lab = scene()
    vi, vl = vflip(img, lab)
    assert torch.equal(vi[:, 0], img[:, -1]) and torch.equal(vl[:, 0], lab[:, -1])
    hi, hl = hflip(img, lab)
    assert torch.equal(hi[:, :, 0], img[:, :, -1]) and torch.equal(hl[:, :, 0], lab[:, :, -1])
    si, sl = swap_dates(img, lab)
    assert torch.equal(si[:3], img[3:]) and torch.equal(si[3:], img[:3]) and torch.equal(sl, lab)


def test_border_crop_resize_keeps_size_binary_labels_and_alignment():
    img, lab = scene()
    for seed in range(10):
        bi, bl = border_crop_resize(img, lab, 60, np.random.default_rng(seed))
        assert bi.shape == img.shape and bi.dtype == torch.uint8
        assert bl.shape == lab.shape and set(torch.unique(bl).tolist()) <= {0, 1}
        # Nearest labels and bilinear images still agree away from block edges.
        agree = (bl[0].bool() == (bi[0] > 175)).float().mean().item()
        assert agree > 0.9
    flat = torch.full((6, 64, 64), 77, dtype=torch.uint8)
    bi, _ = border_crop_resize(flat, lab, 60, np.random.default_rng(1))
    assert torch.all(bi == 77)  # resizing does not shift the radiometry
    same = border_crop_resize(img, lab, 0, np.random.default_rng(1))
    assert torch.equal(same[0], img) and torch.equal(same[1], lab)


def test_border_crop_really_zooms():
    img, lab = scene()
    changed = sum(not torch.equal(border_crop_resize(img, lab, 60, np.random.default_rng(s))[1], lab) for s in range(10))
    assert changed >= 8


def test_each_augmentation_about_half_the_time_and_deterministic():
    img, lab = scene(64)
    aug = TrainAugment(crop=64, max_border=0)  # flips and swap only: exact bookkeeping
    swaps = vflips = 0
    n = 400
    for seed in range(n):
        ai, al = aug(img, lab, np.random.default_rng(seed))
        bi, bl = aug(img, lab, np.random.default_rng(seed))
        assert torch.equal(ai, bi) and torch.equal(al, bl)
        swapped = bool(torch.all(ai[0] == 7))
        swaps += swapped
        first = ai[3] if swapped else ai[0]
        assert torch.equal(al[0].bool(), first == 250)  # the label follows the image
        if not swapped:
            vflips += torch.equal(first, img[0].flip(0)) or torch.equal(first, img[0].flip(0).flip(1))
    assert 0.4 < swaps / n < 0.6
    assert 0.4 < vflips / (n - swaps) < 0.6


def test_train_augment_crops_to_the_training_size():
    img, lab = scene(64)
    ai, al = TrainAugment(crop=32)(img, lab, np.random.default_rng(0))
    assert ai.shape == (6, 32, 32) and al.shape == (1, 32, 32) and ai.is_contiguous()
