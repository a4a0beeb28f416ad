"""Device and precision choice."""
from __future__ import annotations

import pytest
import torch

from engine.errors import UserError
from engine.runtime import cpu_has_bf16, select_runtime


def test_cpu_auto_precision_follows_cpu_features():
    rt = select_runtime("cpu", "auto")
    assert rt.device.type == "cpu"
    assert rt.precision == ("bf16" if cpu_has_bf16() else "fp32")
    assert rt.channels_last
    assert rt.describe()["precision"] == rt.precision


def test_explicit_choices():
    assert select_runtime("cpu", "fp32").autocast_dtype is None
    assert select_runtime("cpu", "bf16").autocast_dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16"):
        select_runtime("cpu", "fp16")
    with pytest.raises(UserError, match="--precision"):
        select_runtime("cpu", "int8")
    with pytest.raises(UserError, match="--device"):
        select_runtime("tpu", "auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_absent_is_a_clear_error(device):
    with pytest.raises(UserError, match="CUDA is not available"):
        select_runtime(device, "auto")
    assert select_runtime("auto", "auto").device.type == "cpu"


def test_autocast_forward_runs():
    from engine.model import HRMNet

    rt = select_runtime("cpu", "bf16")
    model = rt.prepare(HRMNet().eval())
    with torch.no_grad(), rt.autocast():
        change, hard = model(rt.tensor(torch.randn(1, 6, 64, 64)))
    assert change.dtype == torch.float32 and change.shape == (1, 5, 64, 64)
