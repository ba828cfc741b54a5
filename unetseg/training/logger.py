"""Per-epoch metrics: a CSV rewritten from the run history (so a resumed run never holds a
duplicate or missing row), and TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLogger:
    def __init__(self, out_dir: Path, tensorboard: bool = True) -> None:
        self.csv_path = Path(out_dir) / "metrics.csv"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def write(self, history: list[dict]) -> None:
        """Rewrite the CSV with every epoch so far and send the newest row to TensorBoard."""
        if not history:
            return
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
        os.replace(tmp, self.csv_path)
        if self._tb is not None:
            last = history[-1]
            for key, value in last.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, last["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
