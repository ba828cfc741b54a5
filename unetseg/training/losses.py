"""Loss functions: MONAI's Dice family and plain cross-entropy.

Binary tasks have one logit per pixel (sigmoid; the CE term is BCE), multi-class tasks one
per class (softmax; the CE term is categorical CE). Targets arrive as class indices (B, H, W).
"""

from __future__ import annotations

from typing import Callable

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

from unetseg.config import LossConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_loss(cfg: LossConfig, out_channels: int) -> LossFn:
    binary = out_channels == 1
    act = {"sigmoid": True} if binary else {"softmax": True, "to_onehot_y": True}
    if cfg.name == "dice":
        monai_loss: nn.Module | None = DiceLoss(**act)
    elif cfg.name == "dice_ce":
        monai_loss = DiceCELoss(**act, lambda_dice=cfg.lambda_dice, lambda_ce=cfg.lambda_ce)
    elif cfg.name == "dice_focal":
        monai_loss = DiceFocalLoss(**act, lambda_dice=cfg.lambda_dice, lambda_focal=cfg.lambda_ce)
    else:
        monai_loss = None

    if monai_loss is not None:
        def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return monai_loss(logits.float(), target[:, None].to(logits.dtype if binary else torch.long))
        return loss

    if binary:
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, target: bce(logits.float()[:, 0], target.float())
    ce = nn.CrossEntropyLoss()
    return lambda logits, target: ce(logits.float(), target)
