"""The training layer's one user-facing error, apart from the loop so that helpers (the run
lock) can raise it without importing the trainer."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, an existing run in the way, ...)."""
