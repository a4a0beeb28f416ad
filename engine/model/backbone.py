"""ResNet-18-D backbone with timm's ``resnet18d`` parameter names.

Written here (no timm/torchvision dependency) so that the authors' HRMNet
checkpoints, and timm-format ``resnet18d`` ImageNet weights, load unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "ResNet18D", "load_timm_resnet18d"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut ("D" variant downsampling).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first convolution (1 or 2).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            pool: nn.Module = (
                nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
                if stride != 1
                else nn.Identity()
            )
            self.downsample = nn.Sequential(
                pool, nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class ResNet18D(nn.Module):
    """ResNet-18-D feature extractor.

    ``forward(x)`` with x (N, 3, H, W) returns five maps c1..c5 at strides
    2, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels.
    """

    channels = (64, 64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        in_ch = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width, 1))
            self.add_module(f"layer{i + 1}", layer)
            in_ch = width

    def forward(self, x: Tensor) -> list[Tensor]:
        c1 = self.act1(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c1, c2, c3, c4, c5]


def load_timm_resnet18d(backbone: ResNet18D, state: dict[str, Tensor]) -> list[str]:
    """Load a timm-format ``resnet18d`` state_dict (e.g. ImageNet weights) into ``backbone``.

    The classifier (``fc.*``) is ignored. Any other missing or unexpected key is an
    error (``ValueError`` naming the first few). Returns the ignored keys.
    """
    ignored = [k for k in state if k.startswith("fc.")]
    kept = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in kept if k not in own]
    if missing or unexpected:
        raise ValueError(
            "not a resnet18d backbone: "
            + (f"missing {missing[:3]} " if missing else "")
            + (f"unexpected {unexpected[:3]}" if unexpected else "")
        )
    for k, v in kept.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"not a resnet18d backbone: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    with torch.no_grad():
        backbone.load_state_dict(kept, strict=False)
    return ignored
