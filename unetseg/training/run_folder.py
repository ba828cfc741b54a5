"""The folder a run writes: a new run never overwrites one, a resume needs one, and rank 0
holds the folder's lock from set-up to the end of training, so two trainings never write
into one folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from unetseg.config import Config, dump_config
from unetseg.training.distributed import Distributed
from unetseg.training.errors import TrainingError
from unetseg.training.runlock import RunLock


class RunFolder:
    """``out_dir`` with ``checkpoints/last.pt`` and ``checkpoints/best.pt``."""

    def __init__(self, out_dir: Path, resume: bool, log: Callable[[str], None]) -> None:
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.log = log
        self.last_path = self.out_dir / "checkpoints" / "last.pt"
        self.best_path = self.out_dir / "checkpoints" / "best.pt"
        self.lock: RunLock | None = None

    def check(self) -> None:
        """A ``--resume`` needs a run to continue; a new run must not overwrite one."""
        if self.resume and not self.last_path.is_file():
            raise TrainingError(f"--resume: no checkpoint to resume at {self.last_path}")
        if not self.resume and self.last_path.exists():
            raise TrainingError(
                f"{self.out_dir} already holds a run; pass --resume to continue it or choose another "
                "output directory (--out) so nothing is overwritten"
            )

    def prepare(self, dist: Distributed) -> None:
        """Check and lock the folder. Rank 0 alone writes the run, so it alone locks it; every
        rank hears the outcome, so a refused run stops all of them instead of leaving the others
        waiting."""
        self.check()
        refusal = None
        if dist.main:
            try:
                self._lock()
            except TrainingError as err:
                refusal = str(err)
        refusal = dist.broadcast(refusal)
        if refusal is not None:
            raise TrainingError(refusal)

    def _lock(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrainingError(f"cannot write to output directory {self.out_dir}: {err.strerror}") from None
        self.lock = RunLock(self.out_dir, self.log).acquire()
        try:
            self.check()  # again under the lock: a run that ended meanwhile may have written one
        except TrainingError:
            self.release()
            raise
        for stale in self.last_path.parent.glob(".*.tmp"):  # a save cut short by a kill
            stale.unlink()

    def write_config(self, cfg: Config, dist: Distributed) -> None:
        """``config.yaml`` as run; written only once a resume has been accepted, so that a refused
        ``--resume`` leaves the run's config as it was."""
        if not dist.main:
            return
        for folder in (cfg.data.images, cfg.data.masks, cfg.data.root):
            if (
                folder is not None
                and Path(folder).is_dir()
                and Path(folder).resolve() in self.out_dir.resolve().parents
            ):
                self.log(
                    f"note: output_dir {self.out_dir} lies inside the data folder {folder}: the run's files are not "
                    "read as data (sub-folders are skipped), but keeping runs apart from data is safer"
                )
                break
        try:
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
        except OSError as err:
            raise TrainingError(f"cannot write to output directory {self.out_dir}: {err.strerror}") from None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
