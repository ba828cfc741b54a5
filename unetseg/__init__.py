"""unetseg: U-Net segmentation with configurable long skips and residual encoders."""

import os

# albumentations asks PyPI for a newer version when it is imported (a 2 s timeout, then a
# warning on an offline machine). A segmentation tool has no business on the network, so every
# command runs without it; set the variable to 0 before running unetseg to get the check back.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
