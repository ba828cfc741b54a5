"""Studies beside the ablation grid, each a command of its own: knocking out a trained model's
long skips (``analyze-skips``), gradients at initialisation (``analyze-gradients``), and
deleting residual blocks of trained models (``analyze-blocks``)."""
