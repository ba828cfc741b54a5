"""The U-Net's rules across fields, written once: the config schema validates with them and the
model's constructor applies the same ones, so a network built in code fails with the message a
YAML file gets."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from unetseg.config.base import BLOCK_TYPES, RESIDUAL_BLOCKS, did_you_mean

INITS = ("default", "looks_linear")
STEM_STRIDES = (1, 2, 4)


def per_level_skips(skips: str | Sequence[str], depth: int) -> list[str]:
    """One skip mode per level 0..depth-2 (full resolution first), from one mode or a list."""
    if isinstance(skips, str):
        return [skips] * (depth - 1)
    if len(skips) != depth - 1:
        raise ValueError(
            f"skips lists one mode per level with a skip: expected {depth - 1} entries for depth {depth}, got {len(skips)}"
        )
    return list(skips)


def is_smp(encoder: str) -> bool:
    return encoder.startswith("smp:")


def check_encoder_name(encoder: str) -> None:
    if encoder not in BLOCK_TYPES and not (is_smp(encoder) and len(encoder) > 4):
        raise ValueError(
            f"encoder {encoder!r} is not one of {', '.join(BLOCK_TYPES)} or 'smp:<name>'"
            + did_you_mean(encoder, BLOCK_TYPES)
        )


def check_init(init: str, act: str) -> None:
    """Looks-linear init mirrors weights over CReLU pairs, so it needs ``act='crelu'``."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}" + did_you_mean(init, INITS))
    if init == "looks_linear" and act != "crelu":
        raise ValueError(f"init 'looks_linear' needs act 'crelu' (Balduzzi et al. 2017), got act {act!r}")


def check_unet(
    *,
    depth: int,
    skips: str | Sequence[str],
    decoder_widths: Sequence[int] | None,
    encoder: str,
    init: str,
    act: str,
    stem_stride: int,
    refine_width: int,
    stochastic_depth: float,
    deep_supervision: int,
) -> None:
    """Every rule that ties one U-Net option to another; a ValueError naming the first broken."""
    per_level_skips(skips, depth)
    if decoder_widths is not None and len(decoder_widths) != depth - 1:
        raise ValueError(f"decoder_widths needs {depth - 1} entries for depth {depth}, got {len(decoder_widths)}")
    check_encoder_name(encoder)
    if stem_stride not in STEM_STRIDES:
        raise ValueError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
    own_only = {"init": init != "default", "stochastic_depth": stochastic_depth > 0, "stem_stride": stem_stride > 1}
    for key, used in own_only.items():
        if used and is_smp(encoder):
            raise ValueError(
                f"{key} applies to unetseg's own encoders, not to smp: ones (they bring their own stem and init)"
            )
    check_init(init, act)
    if stochastic_depth > 0 and encoder not in RESIDUAL_BLOCKS:
        raise ValueError(
            f"stochastic_depth needs a residual-type encoder ({', '.join(RESIDUAL_BLOCKS)}), got {encoder!r}"
        )
    if refine_width and stem_stride == 1:
        raise ValueError(
            "refine_width needs stem_stride 2 or 4: with stem_stride 1 the last level is at full resolution"
        )
    if not 0 <= deep_supervision <= depth - 2:
        raise ValueError(
            f"deep_supervision heads sit on decoder levels 1..{depth - 2} for depth {depth}, "
            f"so it can be at most {depth - 2}, got {deep_supervision}"
        )


RULE_KEYS = tuple(inspect.signature(check_unet).parameters)  # the options the rules read
