"""What a checkpoint holds, for ``unetseg info``: its config, size, cost and training record.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a copy of the model
on the ``meta`` device, so a 512x512 forward pass of a large U-Net costs no compute and no
memory. The counter sees matrix products and convolutions (a multiply-add counts 2), which
dominate a U-Net; normalisation, activations and pooling are not counted.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unetseg.config import Config, dump_config
from unetseg.models import UNet, count_parameters
from unetseg.models.checkpoint import non_finite_tensors
from unetseg.report.table import format_table


def count_flops(model: nn.Module, channels: int, size: tuple[int, int]) -> int:
    """FLOPs of one forward pass of a (1, channels, H, W) image."""
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, channels, *size, device="meta"))
    return int(counter.get_total_flops())


def level_rows(model: nn.Module) -> list[dict[str, Any]] | None:
    """Per level of a unetseg U-Net: scale, encoder width, skip mode, decoder input and width."""
    if not isinstance(model, UNet):
        return None
    decoder = model.decoder
    rows = []
    for level, width in enumerate(model.encoder.out_channels):
        row: dict[str, Any] = {"level": level, "scale": f"1/{2**level}", "encoder": width}
        if level < len(decoder.blocks):
            row.update(
                skip=decoder.skips[level].mode,
                decoder_in=decoder.skips[level].out_channels,
                decoder=decoder.widths[level],
            )
        else:
            row.update(skip="bottleneck", decoder_in=None, decoder=None)
        rows.append(row)
    return rows


def training_rows(state: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The last epoch's row of the checkpoint's history and the best (monitored) epoch's row."""
    history = list(state.get("history") or [])
    best_epoch = (state.get("best") or {}).get("epoch")
    best = next((row for row in history if row.get("epoch") == best_epoch), None)
    return {"last": history[-1] if history else None, "best": best}


def model_info(model: nn.Module, cfg: Config, state: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Everything ``info`` shows, as JSON-ready data (``best.pt`` holds the record up to its epoch)."""
    flops = count_flops(model, cfg.data.channels, size)
    return {
        "config": dump_config(cfg),
        "arch": cfg.model.arch,
        "epoch": state.get("epoch"),
        "parameters": count_parameters(model),
        "flops": {"input": [1, cfg.data.channels, *size], "total": flops},
        "levels": level_rows(model),
        "monitor": cfg.train.monitor,
        "metrics": training_rows(state),
        "non_finite_tensors": non_finite_tensors(model.state_dict()),
    }


def _metrics_line(row: dict[str, Any] | None) -> str:
    if row is None:
        return "(none recorded)"
    shown = {k: v for k, v in row.items() if k == "train_loss" or k.startswith("val_")}
    return f"epoch {row['epoch']}: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()
    )


def format_info(info: dict[str, Any]) -> str:
    """The human-readable report: config as YAML, then size, cost, levels and metrics."""
    h, w = info["flops"]["input"][2:]
    config = yaml.safe_dump(info["config"], sort_keys=False).rstrip()
    lines = ["config:", "  " + config.replace("\n", "\n  "), ""]
    lines.append(f"parameters: {info['parameters']:,}")
    lines.append(f"forward pass at {h}x{w}: {info['flops']['total'] / 1e9:.3f} GFLOPs (multiply-add = 2)")
    if info["levels"]:
        columns = ["level", "scale", "encoder", "skip", "decoder_in", "decoder"]
        lines += [
            "levels (widths in channels):",
            format_table(columns, [[r[c] for c in columns] for r in info["levels"]]),
        ]
    metrics = info["metrics"]
    lines.append(f"training (checkpoint of epoch {info['epoch']}, monitor {info['monitor']}):")
    lines.append(f"  last {_metrics_line(metrics['last'])}")
    lines.append(f"  best {_metrics_line(metrics['best'])}")
    return "\n".join(lines)
