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
        norms.append(torch.sqrt(sum((p.grad**2).sum() for p in probe.groups["enc0"])).item())
        opt.step()
        probe.after_step()
    stats = probe.epoch_stats()
    assert stats["grad_enc0"] > 0 and stats["update_enc2"] > 0
    assert stats["gate0"] == pytest.approx(float(net.decoder.skips[0].gate_values().mean()))
    assert stats["gate_min0"] == pytest.approx(float(net.decoder.skips[0].gate_values().min()))
    assert "gate1" not in stats and "gate_min1" not in stats
    assert stats["grad_enc0"] == pytest.approx(sum(norms) / 2)
    assert set(probe.epoch_stats()) == {"gate0", "gate_min0"}  # sums were reset


def test_trainer_logs_level_stats_and_gates(tiny_cfg_dict):
    import csv

    from unetseg.config import config_from_dict
    from unetseg.training import Trainer

    tiny_cfg_dict["model"]["skips"] = ["gated", "concat"]
    tiny_cfg_dict["train"]["level_stats"] = True
    cfg = config_from_dict(tiny_cfg_dict)
    Trainer(cfg, log=lambda m: None).fit()
    rows = list(csv.DictReader((cfg.output_dir / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 2
    for row in rows:
        assert float(row["grad_enc0"]) > 0 and float(row["update_dec0"]) > 0
        assert 0 < float(row["gate0"]) < 2 and "gate1" not in row
    # Gates move with training: the logged value follows the model's gate.
    assert rows[0]["gate0"] != rows[1]["gate0"]


def test_gates_are_logged_even_without_level_stats(tiny_cfg_dict):
    import csv

    from unetseg.config import config_from_dict
    from unetseg.training import Trainer

    tiny_cfg_dict["model"]["skips"] = ["concat", "gated"]
    cfg = config_from_dict(tiny_cfg_dict)
    Trainer(cfg, log=lambda m: None).fit()
    header = next(csv.reader((cfg.output_dir / "metrics.csv").read_text().splitlines()))
    assert "gate1" in header and not any(h.startswith("grad_") for h in header)
