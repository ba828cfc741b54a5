"""Studies of one model beside the ablation grid: knocking out a trained model's skips, gradients
at initialisation, deleting residual blocks, and accuracy against depth."""
