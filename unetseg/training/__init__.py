"""Training: the loop, losses, optimisers and schedules, metric logging."""

from unetseg.training.trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError"]
