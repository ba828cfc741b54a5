"""k-fold cross-validation from one command: ``unetseg train --config CFG --folds K``.

Fold ``i`` is an ordinary run in ``<output_dir>/fold<i>/`` whose split is contiguous block
``i`` of ``K`` (``data.split.mode=block``), so neighbouring EM slices never sit on both
sides of a split. ``--resume`` reuses finished folds and resumes an interrupted one from its
``last.pt``, like any run. At the end ``<output_dir>/cv_summary.json`` holds each fold's
validation metrics at its best epoch (the checkpoint a user would keep) and, per metric,
the mean and the sample standard deviation over the folds.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unetseg.config import Config, SplitConfig, config_changes
from unetseg.data.layouts import split_data
from unetseg.models.checkpoint import load_checkpoint, training_record
from unetseg.report.table import format_table
from unetseg.training.distributed import is_main
from unetseg.training.trainer import Approve, Trainer, TrainingError

SUMMARY = "cv_summary.json"
# Settings that change how fast a run goes, not what it learns: a finished fold may be reused under others.
RUNTIME_KEYS = frozenset(
    {"train.device", "train.threads", "train.num_workers", "train.progress", "train.compile", "train.channels_last"}
)


def fold_config(cfg: Config, folds: int, fold: int) -> Config:
    """``cfg`` with block split ``fold`` of ``folds``, writing to ``<output_dir>/fold<fold>``
    (blocks of whole cases where the config splits by case, so no volume straddles a fold)."""
    mode = "cases" if cfg.data.split.mode == "cases" else "block"
    return cfg.model_copy(
        update={
            "name": f"{cfg.name}_fold{fold}",
            "output_dir": Path(cfg.output_dir) / f"fold{fold}",
            "data": cfg.data.model_copy(update={"split": SplitConfig(mode=mode, folds=folds, fold=fold)}),
        },
        deep=True,
    )


def is_finished(state: dict[str, Any], cfg: Config) -> bool:
    """Whether a run's ``last.pt`` marks its end: every epoch done, or the time budget spent."""
    if int(state.get("epoch", 0)) >= cfg.train.epochs:
        return True
    history = state.get("history") or []
    budget = cfg.train.max_time_s
    return bool(budget and history and float(history[-1].get("elapsed_s", 0.0)) >= budget)


def _fold_record(fold: int, cfg: Config, history: list[dict[str, Any]], best_epoch: int) -> dict[str, Any]:
    best = next((row for row in history if row.get("epoch") == best_epoch), history[-1] if history else {})
    _, val = split_data(cfg.data)
    return {
        "fold": fold,
        "output_dir": str(cfg.output_dir),
        "best_checkpoint": str(Path(cfg.output_dir) / "checkpoints" / "best.pt"),
        "val_names": [sample.name for sample in val],
        "epochs_run": len(history),
        "best_epoch": best.get("epoch"),
        "val": {key[4:]: value for key, value in best.items() if key.startswith("val_")},
    }


def pool(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric over the folds: mean, sample standard deviation (ddof=1) and how many folds
    had a finite value (HD95 is undefined on an empty prediction)."""
    pooled = {}
    for key in dict.fromkeys(k for record in records for k in record["val"]):
        values = np.array([r["val"].get(key, math.nan) for r in records], dtype=np.float64)
        values = values[np.isfinite(values)]
        pooled[key] = {
            "mean": float(values.mean()) if values.size else math.nan,
            "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
            "n": int(values.size),
        }
    return pooled


def train_folds(
    cfg: Config, folds: int, resume: bool = False, log: Callable[[str], None] = print, approve: Approve | None = None
) -> dict[str, Any]:
    """Train (or reuse, or resume) every fold, then write and return the summary; ``approve``
    (see :class:`Trainer`) is asked about the first fold trained only: the folds are alike."""
    configs = [fold_config(cfg, folds, fold) for fold in range(folds)]
    lasts = [Path(c.output_dir) / "checkpoints" / "last.pt" for c in configs]
    started = [str(path.parents[1]) for path in lasts if path.exists()]
    if started and not resume:
        raise TrainingError(
            f"{', '.join(started)} already hold runs; pass --resume to reuse finished folds and continue the "
            "others, or choose another output directory (--out)"
        )
    records = []
    for fold, (fold_cfg, last) in enumerate(zip(configs, lasts)):
        state = load_checkpoint(last) if resume and last.is_file() else None
        if state is not None and is_finished(state, fold_cfg):
            changed = [key for key in config_changes(state.get("config"), fold_cfg) if key not in RUNTIME_KEYS]
            if changed:
                raise TrainingError(
                    f"fold {fold} in {fold_cfg.output_dir} finished under other settings ({', '.join(changed)}), "
                    "so its scores would not belong to this cross-validation; restore them, or choose another "
                    "output directory (--out)"
                )
            log(f"fold {fold}/{folds}: finished before, reused ({fold_cfg.output_dir})")
            history, best = training_record(state, last)
            records.append(_fold_record(fold, fold_cfg, history, best["epoch"]))
            continue
        log(f"fold {fold}/{folds}: {'resuming' if state is not None else 'training'} -> {fold_cfg.output_dir}")
        summary = Trainer(fold_cfg, resume=state is not None, log=log, approve=approve).fit()
        approve = None
        records.append(_fold_record(fold, fold_cfg, summary["history"], summary["best_epoch"]))
    result = {
        "folds": folds,
        "monitor": cfg.train.monitor,
        "output_dir": str(cfg.output_dir),
        "per_fold": records,
        "pooled": pool(records),
    }
    if is_main():  # under torchrun every rank trains; one writes
        _write_json(Path(cfg.output_dir) / SUMMARY, result)
    return result


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from unetseg.report.document import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2))
    os.replace(tmp, path)


def format_summary(result: dict[str, Any]) -> str:
    """Per-fold validation metrics at the best epoch, then mean ± std over the folds."""
    keys = list(result["pooled"])
    rows: list[list[Any]] = [
        [r["fold"], r["best_epoch"], *(r["val"].get(k, math.nan) for k in keys)] for r in result["per_fold"]
    ]
    pooled = result["pooled"]
    rows.append(["mean ± std", "", *(f"{pooled[k]['mean']:.4g} ± {pooled[k]['std']:.2g}" for k in keys)])
    return format_table(["fold", "best epoch", *keys], rows)
