"""The authors' training augmentation, on uint8 tensors before normalisation.

Each of the four augmentations happens with probability 0.5 (as in the authors' code):
a random crop of a border of up to 60 px on each side resized back to the tile size
(bilinear for images, nearest for labels), a vertical flip, a horizontal flip, and
swapping the two dates. Before them, a random square crop to the training crop size
when the tile is larger.

All functions take ``image`` uint8 (6, H, W) (before = channels 0-2, after = 3-5),
``label`` uint8 (1, H, W) and a :class:`numpy.random.Generator`, and return new
tensors; they are deterministic for a given generator state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TrainAugment", "random_crop", "border_crop_resize", "vflip", "hflip", "swap_dates"]

Pair = tuple[torch.Tensor, torch.Tensor]


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int, rng: np.random.Generator) -> Pair:
    """A random ``size`` x ``size`` window (or the whole tile along a side not larger than ``size``)."""
    h, w = image.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    r = int(rng.integers(0, h - ch + 1))
    c = int(rng.integers(0, w - cw + 1))
    return image[:, r : r + ch, c : c + cw], label[:, r : r + ch, c : c + cw]


def border_crop_resize(image: torch.Tensor, label: torch.Tensor, max_border: int, rng: np.random.Generator) -> Pair:
    """Cut a random border of 0..``max_border`` px off each side, resize back to (H, W).

    Images: bilinear (half-pixel centres, rounded back to uint8); labels: nearest.
    ``max_border`` is capped at a quarter of the side so at least half the tile stays.
    """
    h, w = image.shape[-2:]
    bh, bw = min(max_border, h // 4), min(max_border, w // 4)
    top, bottom = (int(v) for v in rng.integers(0, bh + 1, size=2))
    left, right = (int(v) for v in rng.integers(0, bw + 1, size=2))
    if top == bottom == left == right == 0:
        return image, label
    img = image[None, :, top : h - bottom, left : w - right].float()
    lab = label[None, :, top : h - bottom, left : w - right].float()
    img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
    lab = F.interpolate(lab, size=(h, w), mode="nearest-exact")
    return img[0].round_().clamp_(0, 255).to(torch.uint8), lab[0].to(label.dtype)


def vflip(image: torch.Tensor, label: torch.Tensor) -> Pair:
    """Flip upside down (rows reversed)."""
    return image.flip(-2), label.flip(-2)


def hflip(image: torch.Tensor, label: torch.Tensor) -> Pair:
    """Flip left-right (columns reversed)."""
    return image.flip(-1), label.flip(-1)


def swap_dates(image: torch.Tensor, label: torch.Tensor) -> Pair:
    """Before and after exchanged (channels 3-5 first)."""
    return torch.cat([image[3:6], image[0:3]], dim=0), label


@dataclass(frozen=True)
class TrainAugment:
    """Training transform: random crop to ``crop`` then the four augmentations.

    Attributes:
        crop: training crop edge in pixels (no crop along a side not larger than it).
        max_border: largest border cut per side in pixels (authors: 60).
        p: probability of each augmentation (authors: 0.5).
    """

    crop: int = 512
    max_border: int = 60
    p: float = 0.5

    def __call__(self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator) -> Pair:
        image, label = random_crop(image, label, self.crop, rng)
        # One draw per augmentation, always made, so the stream does not depend on outcomes.
        coins = rng.random(4) < self.p
        if coins[0]:
            image, label = border_crop_resize(image, label, self.max_border, rng)
        if coins[1]:
            image, label = vflip(image, label)
        if coins[2]:
            image, label = hflip(image, label)
        if coins[3]:
            image, label = swap_dates(image, label)
        return image.contiguous(), label.contiguous()
