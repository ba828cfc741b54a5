"""Per-level gradient, update and gate statistics."""

from __future__ import annotations

import pytest
import torch

from unetseg.models import UNet
from unetseg.training.probes import LevelProbe


def test_probe_measures_every_level_and_resets():
    torch.manual_seed(0)
    net = UNet(1, 1, depth=3, base_width=4, skips=["gated", "concat"])
    probe = LevelProbe(net)
    assert set(probe.groups) == {"enc0", "enc1", "enc2", "dec0", "dec1"}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    norms = []
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(2, 1, 16, 16)).square().mean().backward()
        probe.before_step()
        norms.append(torch.sqrt(sum((p.grad ** 2).sum() for p in probe.groups["enc0"])).item())
        opt.step()
        probe.after_step()
    stats = probe.epoch_stats()
    assert stats["grad_enc0"] > 0 and stats["update_enc2"] > 0
    assert stats["gate0"] == pytest.approx(float(torch.sigmoid(net.decoder.skips[0].gate).mean()))
    assert "gate1" not in stats
    assert stats["grad_enc0"] == pytest.approx(sum(norms) / 2)
    assert set(probe.epoch_stats()) == {"gate0"}  # sums were reset
