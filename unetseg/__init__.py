"""unetseg: U-Net segmentation with configurable long skips and residual encoders."""

__version__ = "0.1.0"
