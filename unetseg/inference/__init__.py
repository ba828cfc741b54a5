"""From a trained model to masks: whole-image or sliding-window prediction with test-time
augmentation and ensembles, tiling for large images, overlays, scoring a labelled set, export."""
