"""How long a run will take, read off its own first steps, and the "epoch k of N, ETA" it reports.

A config bounds a run twice: ``train.epochs`` and the wall-clock budget ``train.max_time_s``,
whichever ends first. The configured epoch count alone misleads: the CPU config says 1000
epochs and its 480 s budget ends it after about 130. So the trainer times its first real
training steps (no extra work) and from then on reports the epoch count the run will actually
reach and the time left. The first step is left out of the rate: it carries one-off costs
(allocations, oneDNN primitive creation, ``torch.compile``) that later steps do not pay.
Later estimates use the mean time per step since then, which includes validation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

MEASURED_STEPS = 3  # the estimate is announced after this many steps: two timed after the first


def duration(seconds: float) -> str:
    """A duration as a person reads it: ``42 s``, ``8 min``, ``3.5 h``, ``1.2 days``."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class RunProgress:
    """Counts the steps of one invocation of a run and estimates what is left of it.

    ``start_epoch`` epochs and ``spent_s`` seconds were done before (a resumed run); the
    budget counts them, as the trainer's deadline does.
    """

    def __init__(
        self,
        epochs: int,
        start_epoch: int,
        steps_per_epoch: int,
        budget_s: float | None,
        spent_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.epochs, self.start_epoch, self.steps_per_epoch = epochs, start_epoch, steps_per_epoch
        self.budget_s, self.spent_s = budget_s, spent_s
        self.clock = clock
        self.started = clock()
        self.steps = 0
        self.first_step_done: float | None = None

    @property
    def measured(self) -> bool:
        return self.steps >= min(MEASURED_STEPS, self.total_steps)

    @property
    def total_steps(self) -> int:
        """Steps this invocation runs if the budget does not end it first."""
        return max(self.epochs - self.start_epoch, 0) * self.steps_per_epoch

    def step(self) -> bool:
        """Count a finished training step; True exactly once: when the estimate becomes available."""
        self.steps += 1
        if self.steps == 1:
            self.first_step_done = self.clock()
        return self.steps == min(MEASURED_STEPS, self.total_steps)

    def seconds_per_step(self) -> float:
        if self.steps > 1 and self.first_step_done is not None:
            return (self.clock() - self.first_step_done) / (self.steps - 1)
        return (self.clock() - self.started) / max(self.steps, 1)

    def elapsed(self) -> float:
        """Seconds of the whole run so far, earlier invocations included."""
        return self.spent_s + self.clock() - self.started

    def _budget_left(self) -> float:
        return math.inf if self.budget_s is None else max(self.budget_s - self.elapsed(), 0.0)

    def budget_bound(self) -> bool:
        """Whether the time budget, not the epoch count, ends the run (as far as can be told)."""
        return (self.total_steps - self.steps) * self.seconds_per_step() > self._budget_left()

    def seconds_left(self) -> float:
        return min((self.total_steps - self.steps) * self.seconds_per_step(), self._budget_left())

    def expected_epochs(self) -> int:
        """The epoch the run will end at: ``epochs``, or the one the budget cuts short."""
        if not self.budget_bound():
            return self.epochs
        reachable = self.steps + self._budget_left() / self.seconds_per_step()
        current = self.start_epoch + math.ceil(max(self.steps, 1) / self.steps_per_epoch)
        return max(min(self.start_epoch + math.ceil(reachable / self.steps_per_epoch), self.epochs), current)

    def epoch_label(self, epoch: int) -> str:
        """``epoch 3 of 50``; ``epoch 3 of ~130`` where the budget ends the run; ``of up to`` before
        the first steps have been timed."""
        if self.budget_s is not None and not self.measured:
            return f"epoch {epoch} of up to {self.epochs}"
        return (
            f"epoch {epoch} of ~{self.expected_epochs()}" if self.budget_bound() else f"epoch {epoch} of {self.epochs}"
        )

    def status(self) -> str:
        """What an epoch's log line ends with: the time left, and the budget where it decides."""
        left = f"ETA {duration(self.seconds_left())}"
        return (
            f"{duration(self.elapsed())} of the {duration(self.budget_s)} budget, {left}"
            if self.budget_bound()
            else left
        )

    def estimate(self) -> str:
        """The line announced after the first steps, before the run commits to the rest."""
        pace = f"{self.steps_per_epoch} steps an epoch at {self.seconds_per_step():.2g} s a step"
        total = self.seconds_left() + self.clock() - self.started
        if self.budget_bound():
            return (
                f"expected duration: about {duration(total)}; the time budget (train.max_time_s = {self.budget_s:g} s) "
                f"ends the run after about {self.expected_epochs()} of {self.epochs} epochs ({pace})"
            )
        return f"expected duration: about {duration(total)} for epochs {self.start_epoch + 1}..{self.epochs} ({pace})"

    def describe(self, row: dict[str, Any]) -> str:
        """The log line of a finished epoch: its label, loss, speed, validation metrics and the status."""
        parts = [self.epoch_label(row["epoch"]), f"loss {row['train_loss']:.4f}", f"{row['train_img_per_s']:.1f} img/s"]
        parts += [
            f"{k[4:]} {v:.4f}"
            for k, v in row.items()
            if k.startswith("val_") and isinstance(v, float) and math.isfinite(v)
        ]
        return " | ".join(parts + [self.status()])
