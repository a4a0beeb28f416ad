"""The ResNet-18-D backbone: timm's layout, shapes, and timm-format ImageNet weights as initialisation."""
from __future__ import annotations

import pytest
import torch

from engine.model import HRMNet, ResNet18D, load_timm_resnet18d


def timm_resnet18d_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A generated state_dict in the layout of timm's ``resnet18d`` (with its 1000-class head)."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
             for k, v in ResNet18D().state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_feature_shapes():
    feats = ResNet18D().eval()(torch.randn(1, 3, 96, 160))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 48, 80), (64, 24, 40), (128, 12, 20), (256, 6, 10), (512, 3, 5)]


def test_timm_weights_load_as_backbone(tmp_path):
    state = timm_resnet18d_state()
    path = tmp_path / "resnet18d.pth"
    torch.save(state, path)
    model = HRMNet()
    ignored = load_timm_resnet18d(model.encoder.context_encoder, torch.load(path, weights_only=True))
    assert ignored == ["fc.weight", "fc.bias"]
    got = model.state_dict()
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(got[f"encoder.context_encoder.{k}"], v), k


def test_other_backbone_is_refused():
    state = timm_resnet18d_state()
    state.pop("layer4.1.conv2.weight")
    with pytest.raises(ValueError, match="layer4.1.conv2.weight"):
        load_timm_resnet18d(ResNet18D(), state)
    state = timm_resnet18d_state()
    state["conv1.0.weight"] = torch.zeros(64, 3, 7, 7)  # plain resnet18 stem
    with pytest.raises(ValueError, match="conv1.0.weight"):
        load_timm_resnet18d(ResNet18D(), state)
