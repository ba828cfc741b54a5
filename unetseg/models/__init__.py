"""Networks: blocks, the skip merge, encoders, decoder, U-Net and reference models."""

from unetseg.models.registry import build_model, count_parameters
from unetseg.models.skips import SkipMerge
from unetseg.models.unet import UNet

__all__ = ["SkipMerge", "UNet", "build_model", "count_parameters"]
