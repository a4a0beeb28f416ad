"""HRMNet: change detection by hard region mining (arXiv 2305.19513).

Module and parameter names follow the authors' code exactly (see
``shared/docs/hrmnet.md``), so their ``state_dict`` loads with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ResNet18D

__all__ = ["HRMNet"]

C = 64


def up(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to ``like``'s height and width (align_corners=True)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def cbr(cin: int, cout: int, k: int, s: int = 1) -> nn.Sequential:
    """Conv(k, stride s, padding k//2, bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """Pyramid pooling on c5 (``context_p5``): scales 1, 2, 3, 5, then a 3x3 fusion."""

    def __init__(self, cin: int = 512, scales: tuple[int, ...] = (1, 2, 3, 5)) -> None:
        super().__init__()
        for i, s in enumerate(scales):
            branch = nn.Sequential(
                nn.AdaptiveAvgPool2d(s), nn.Conv2d(cin, C, 1), nn.BatchNorm2d(C), nn.ReLU(inplace=True)
            )
            self.add_module(f"pool_scale_{i + 1}", branch)
        self.n_scales = len(scales)
        self.fusion_conv = cbr(cin + len(scales) * C, C, 3)

    def forward(self, x: Tensor) -> Tensor:
        branches = [up(getattr(self, f"pool_scale_{i + 1}")(x), x) for i in range(self.n_scales)]
        return self.fusion_conv(torch.cat([x, *branches], dim=1))


class FFM(nn.Module):
    """Feature fusion: ``fusion_conv(cat[up(high, low), low_level_context(low)])``."""

    def __init__(self) -> None:
        super().__init__()
        self.low_level_context = nn.Sequential(nn.Conv2d(C, C, 3, 1, 1), nn.BatchNorm2d(C))
        self.fusion_conv = cbr(2 * C, C, 3)

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        return self.fusion_conv(torch.cat([up(high, low), self.low_level_context(low)], dim=1))


class PredictionHead(nn.Module):
    """Conv3x3 -> BN -> ReLU -> Conv1x1 to one logit channel (key ``mask_generation``)."""

    def __init__(self) -> None:
        super().__init__()
        self.mask_generation = nn.Sequential(
            nn.Conv2d(C, C, 3, 1, 1), nn.BatchNorm2d(C), nn.ReLU(inplace=True), nn.Conv2d(C, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_generation(x)


class Encoder(nn.Module):
    """ResNet-18-D + channel reduction + PPM + top-down FFMs -> (p2, p3, p4, p5), C channels."""

    def __init__(self) -> None:
        super().__init__()
        self.context_encoder = ResNet18D()
        self.channel_reduction_c4 = cbr(256, C, 1)
        self.channel_reduction_c3 = cbr(128, C, 1)
        self.channel_reduction_c2 = cbr(64, C, 1)
        self.context_p5 = PyramidPooling(512)
        self.context_p4 = FFM()
        self.context_p3 = FFM()
        self.context_p2 = FFM()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _, c2, c3, c4, c5 = self.context_encoder(x)
        p5 = self.context_p5(c5)
        p4 = self.context_p4(p5, self.channel_reduction_c4(c4))
        p3 = self.context_p3(p4, self.channel_reduction_c3(c3))
        p2 = self.context_p2(p3, self.channel_reduction_c2(c2))
        return p2, p3, p4, p5


class FEU(nn.Module):
    """Feature enhancement unit: transition, optional mask emphasis, channel attention, 3x3 context."""

    def __init__(self, cin: int = 2 * C, cout: int = C) -> None:
        super().__init__()
        hidden = max(8, C // 8)
        self.feature_transition = cbr(cin, cin, 1)
        self.channel_attention = nn.Sequential(
            nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cin), nn.Sigmoid()
        )
        self.feature_context = cbr(cin, cout, 3)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.feature_transition(x)
        if mask is not None:
            x = x * mask + x
        att = self.channel_attention(x.mean(dim=(2, 3))).unsqueeze(-1).unsqueeze(-1)
        return self.feature_context(x * att)


class KRM(nn.Module):
    """Knowledge-review module: plain, reverse-attention and uncertainty-attention contexts."""

    def __init__(self) -> None:
        super().__init__()
        self.feu_1 = FEU()
        self.feu_2 = FEU()
        self.feu_3 = FEU()
        self.fusion_conv = cbr(C + 1, C, 3)

    def forward(self, feature: Tensor, fine: Tensor, coarse: Tensor) -> Tensor:
        s_fine, s_coarse = torch.sigmoid(fine), torch.sigmoid(coarse)
        ctx1 = self.feu_1(feature)
        ctx2 = self.feu_2(feature, 1 - s_coarse)
        uncertainty = (1 - s_coarse) * s_fine + (1 - s_fine) * s_coarse
        ctx3 = self.feu_3(feature, uncertainty)
        return self.fusion_conv(torch.cat([ctx1 + ctx2 + ctx3, fine], dim=1))


class KRDecoder(nn.Module):
    """Knowledge-review decoder: side heads m2..m5, KRMs on d3..d5, fusion with the hard-region feature."""

    def __init__(self) -> None:
        super().__init__()
        self.mask_generation_d2 = PredictionHead()
        self.mask_generation_d3 = PredictionHead()
        self.mask_generation_d4 = PredictionHead()
        self.mask_generation_d5 = PredictionHead()
        self.krm_d3 = KRM()
        self.krm_d4 = KRM()
        self.krm_d5 = KRM()
        self.fusion_conv = cbr(5 * C, C, 1)
        self.mask_generation = PredictionHead()

    def forward(self, d: tuple[Tensor, Tensor, Tensor, Tensor], b: Tensor) -> tuple[Tensor, list[Tensor]]:
        d2 = d[0]
        d3, d4, d5 = (up(x, d2) for x in d[1:])
        m2 = self.mask_generation_d2(d2)
        m3 = self.mask_generation_d3(d3)
        m4 = self.mask_generation_d4(d4)
        m5 = self.mask_generation_d5(d5)
        k3 = self.krm_d3(torch.cat([d2, d3], 1), m2, m3)
        k4 = self.krm_d4(torch.cat([d2, d4], 1), m2, m4)
        k5 = self.krm_d5(torch.cat([d2, d5], 1), m2, m5)
        fused = self.fusion_conv(torch.cat([d2, k3, k4, k5, b], dim=1))
        return self.mask_generation(fused), [m2, m3, m4, m5]


class HardRegionDecoder(nn.Module):
    """Hard-region ("boundary") branch on the raw images' texture difference and d2."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_texture = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, 2, 1),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, 2, 1),
            nn.BatchNorm2d(C),
            nn.ReLU(inplace=True),
        )
        self.fam = FFM()
        self.boundary_generation = PredictionHead()

    def forward(self, x1: Tensor, x2: Tensor, d2: Tensor) -> tuple[Tensor, Tensor]:
        texture = torch.abs(self.feature_texture(x1) - self.feature_texture(x2))
        b = self.fam(d2, texture)
        return b, self.boundary_generation(b)


class HRMNet(nn.Module):
    """HRMNet change detector.

    ``forward(x)``: x float (N, 6, H, W), channels 0-2 one date and 3-5 the other,
    ImageNet-normalised RGB; any H, W >= 32. Returns ``(change, hard)``, probabilities
    at input resolution: change (N, 5, H, W) = [final, d2, d3, d4, d5] and
    hard (N, 1, H, W). The change mask is ``change[:, 0] > 0.5``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.kr_decoder = KRDecoder()
        self.b_decoder = HardRegionDecoder()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, :3], x[:, 3:6]
        n = x.shape[0]
        # Both dates share the encoder: run them as one batch.
        feats = self.encoder(torch.cat([x1, x2], dim=0))
        d = tuple(torch.abs(f[:n] - f[n:]) for f in feats)
        b, hard = self.b_decoder(x1, x2, d[0])
        final, sides = self.kr_decoder(d, b)
        # Logits leave autocast here: up-sampling and sigmoid in fp32 keep the
        # probabilities free of bf16/fp16 rounding (a no-op in fp32).
        change = torch.cat([up(m.float(), x) for m in (final, *sides)], dim=1)
        return torch.sigmoid(change), torch.sigmoid(up(hard.float(), x))
