"""Loss functions: MONAI's Dice family and plain cross-entropy, optionally plus soft clDice.

Binary tasks have one logit per pixel (sigmoid; the CE term is BCE), multi-class tasks one
per class (softmax; the CE term is categorical CE). Targets arrive as class indices (B, H, W).

Every loss takes an optional per-pixel ``weight`` (B, H, W), the U-Net border weights of
:mod:`unetseg.data.weights` when ``loss.border_weight`` is set. The weights redistribute the CE
term over the pixels (a weighted mean, so its scale against the Dice term is unchanged); the
Dice term stays unweighted, as it already balances the classes.

The clDice term (Shit et al. 2021, MONAI's ``SoftclDiceLoss``) scores the overlap of soft
skeletons rather than of pixels: a one-pixel gap in a membrane costs little Dice but merges two
cells, and clDice charges it the whole skeleton segment it cuts.

With deep supervision the model returns several logit maps, all at full resolution (the
auxiliary ones upsampled inside the model), so each is scored by the same loss against the
same target and border weights; :func:`deep_supervision_loss` weighs them.

MONAI is imported where a loss is built, not with this module: importing it takes seconds (it
loads every one of its submodules), and ``train`` says what a run will cost before that
(:mod:`unetseg.training.forecast`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from unetseg.config import LossConfig


class LossFn(Protocol):
    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def build_loss(cfg: LossConfig, out_channels: int) -> LossFn:
    ce_based = cfg.border_weight is not None or cfg.name in ("bce", "ce")
    base = _weighted_loss(cfg, out_channels) if ce_based else _monai_loss(cfg, out_channels)
    if cfg.lambda_cldice == 0:
        return base
    from monai.losses import SoftclDiceLoss

    binary = out_channels == 1
    # Multi-class: skeletons of the foreground classes only (the background's skeleton is noise).
    cldice = SoftclDiceLoss(iter_=cfg.cldice_iters, sigmoid=binary, softmax=not binary, include_background=binary)

    def with_cldice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return base(logits, target, weight) + cfg.lambda_cldice * cldice(logits.float(), _onehot(target, out_channels))

    return with_cldice


def deep_supervision_weights(outputs: int) -> list[float]:
    """Each coarser output counts half the one above it (nnU-Net's halving; nnU-Net also gives
    its coarsest output no weight, here every head counts), normalised to sum to 1, so the main
    output keeps the largest share and the total stays on the loss's scale."""
    raw = [0.5**i for i in range(outputs)]
    return [w / sum(raw) for w in raw]


def deep_supervision_loss(loss: LossFn, outputs: int) -> Callable[..., torch.Tensor]:
    """``loss`` applied to each of ``outputs`` logit maps (main first), weighted as above."""
    weights = deep_supervision_weights(outputs)

    def supervised(
        logits: list[torch.Tensor], target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not isinstance(logits, (list, tuple)) or len(logits) != outputs:
            got = len(logits) if isinstance(logits, (list, tuple)) else "one tensor"
            raise ValueError(f"deep supervision expects {outputs} logit maps, got {got}")
        return sum(w * loss(out, target, weight) for w, out in zip(weights, logits))  # type: ignore[return-value]

    return supervised


def _onehot(target: torch.Tensor, out_channels: int) -> torch.Tensor:
    if out_channels == 1:
        return target[:, None].float()
    return F.one_hot(target.long(), out_channels).movedim(-1, 1).float()


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel CE (B, H, W): BCE on the single logit of a binary task, softmax CE otherwise."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, target.long(), reduction="none")


def _weighted_loss(cfg: LossConfig, out_channels: int) -> LossFn:
    """CE averaged with the per-pixel weights (a plain mean without them), plus the unweighted
    Dice term for ``dice_ce``."""
    from monai.losses import DiceLoss

    binary = out_channels == 1
    act = {"sigmoid": True} if binary else {"softmax": True}
    dice = DiceLoss(**act, batch=cfg.batch_dice) if cfg.name == "dice_ce" else None
    lambda_ce = cfg.lambda_ce if dice is not None else 1.0

    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        ce = _cross_entropy(logits, target)
        ce = (ce * weight).sum() / weight.sum() if weight is not None else ce.mean()
        if dice is None:
            return ce
        return cfg.lambda_dice * dice(logits, _onehot(target, out_channels)) + lambda_ce * ce

    return loss


def _monai_loss(cfg: LossConfig, out_channels: int) -> LossFn:
    from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss

    binary = out_channels == 1
    act = dict({"sigmoid": True} if binary else {"softmax": True, "to_onehot_y": True}, batch=cfg.batch_dice)
    if cfg.name == "dice":
        monai_loss: torch.nn.Module = DiceLoss(**act)
    elif cfg.name == "dice_ce":
        monai_loss = DiceCELoss(**act, lambda_dice=cfg.lambda_dice, lambda_ce=cfg.lambda_ce)
    else:
        monai_loss = DiceFocalLoss(**act, lambda_dice=cfg.lambda_dice, lambda_focal=cfg.lambda_ce)

    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return monai_loss(logits.float(), target[:, None].to(logits.dtype if binary else torch.long))

    return loss
