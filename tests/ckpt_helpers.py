"""Checkpoints without training: a tiny config's model with random weights (and BatchNorm
statistics that are not the identity), saved the way the trainer saves them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from unetseg.config import config_from_dict, dump_config
from unetseg.models import build_model
from unetseg.models.checkpoint import save_checkpoint


def write_checkpoint(
    path: Path,
    cfg_dict: dict,
    seed: int = 0,
    history: list[dict[str, Any]] | None = None,
    model_changes: dict[str, Any] | None = None,
    data_changes: dict[str, Any] | None = None,
) -> Path:
    tree = copy.deepcopy(cfg_dict)
    tree["model"].update(model_changes or {})
    tree["data"].update(data_changes or {})
    cfg = config_from_dict(tree)
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics away from (0, 1)
        for _ in range(3):
            model(torch.rand(2, cfg.data.channels, 32, 32) * 2 + 0.5)
    history = history or []
    best = max(history, key=lambda row: row.get("val_dice", 0.0)) if history else None
    save_checkpoint(
        path,
        {
            "config": dump_config(cfg),
            "model": model.eval().state_dict(),
            "epoch": history[-1]["epoch"] if history else 0,
            "history": history,
            "best": {"value": best.get("val_dice") if best else None, "epoch": best["epoch"] if best else 0},
        },
    )
    return path
