"""Model name -> builder: unetseg's U-Net and the reference models it is compared with."""

from __future__ import annotations

from torch import nn

from unetseg.config import MonaiBasicUNetConfig, MonaiUNetConfig, SmpUnetConfig, UNetConfig
from unetseg.models.encoder import check_smp_encoder
from unetseg.models.padding import SizeAgnostic
from unetseg.models.unet import UNet

AnyModelConfig = UNetConfig | SmpUnetConfig | MonaiBasicUNetConfig | MonaiUNetConfig


def build_model(cfg: AnyModelConfig, in_channels: int, out_channels: int) -> nn.Module:
    """Build the network a config names; every model accepts any input size."""
    if isinstance(cfg, UNetConfig):
        return UNet(in_channels, out_channels, **cfg.model_dump(exclude={"arch"}))
    if isinstance(cfg, SmpUnetConfig):
        import segmentation_models_pytorch as smp

        check_smp_encoder(cfg.encoder)  # smp itself raises a KeyError listing every encoder
        net = smp.Unet(
            encoder_name=cfg.encoder,
            encoder_depth=cfg.encoder_depth,
            encoder_weights=cfg.encoder_weights,
            decoder_channels=cfg.decoder_channels,
            in_channels=in_channels,
            classes=out_channels,
        )
        return SizeAgnostic(net, 2**cfg.encoder_depth)
    monai_io = {"spatial_dims": 2, "in_channels": in_channels, "out_channels": out_channels}
    if isinstance(cfg, MonaiBasicUNetConfig):
        from monai.networks.nets import BasicUNet

        net = BasicUNet(**monai_io, features=tuple(cfg.features), dropout=cfg.dropout)
        return SizeAgnostic(net, 16)
    if isinstance(cfg, MonaiUNetConfig):
        from monai.networks.nets import UNet as MonaiUNet

        net = MonaiUNet(
            **monai_io,
            channels=tuple(cfg.channels),
            strides=tuple(cfg.strides),
            num_res_units=cfg.num_res_units,
            norm=cfg.norm,
        )
        multiple = 1
        for s in cfg.strides:
            multiple *= s
        return SizeAgnostic(net, multiple)
    raise TypeError(f"no builder for model config {type(cfg).__name__}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
