"""The authors' learning-rate schedule: linear warm-up from 0.1·base, then poly 0.9."""
from __future__ import annotations

import pytest
import torch

from engine.train.schedule import lr_at, lr_factor, make_scheduler


def test_known_values():
    base = 5e-4
    assert lr_at(0, base, 20000) == pytest.approx(0.1 * base)
    assert lr_at(100, base, 20000) == pytest.approx(base * 0.55 * (1 - 100 / 20000) ** 0.9)
    assert lr_at(200, base, 20000) == pytest.approx(base * (1 - 200 / 20000) ** 0.9)
    assert lr_at(10000, base, 20000) == pytest.approx(base * 0.5 ** 0.9)
    assert lr_at(20000, base, 20000) == 0.0


def test_warm_up_rises_then_decays():
    values = [lr_factor(i, 2000) for i in range(2000)]
    assert all(a < b for a, b in zip(values[:200], values[1:201]))
    assert all(a > b for a, b in zip(values[200:], values[201:]))


def test_scheduler_drives_the_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=5e-4)
    sched = make_scheduler(opt, 300)
    seen = []
    for _ in range(300):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(i, 5e-4, 300) for i in range(300)])


def test_short_runs_still_work():
    assert lr_factor(0, 1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        lr_factor(0, 0)
