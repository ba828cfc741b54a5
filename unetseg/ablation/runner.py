"""Train and measure every (variant, seed) of an ablation, reusing finished runs.

A finished run is its ``<results_dir>/results/<variant>/seed<k>/result.json`` (with the
validation predictions beside it), which stores the resolved config it was trained under. A
later invocation, on this machine or another, reuses it when the config is still the same,
and trains again when it changed; interrupted runs resume from the ``last.pt`` in their keyed
checkpoint folder, so a killed ablation loses at most one epoch of one run. Runs can be spread
over processes (``workers``) and devices (``devices``, round-robin).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from unetseg.ablation.analysis import analyse_run
from unetseg.ablation.spec import AblationSpec, fold_ids, load_spec, result_dir, training_changes, variant_config
from unetseg.config import dump_config
from unetseg.meter import QUIET, Meter
from unetseg.report import json_safe
from unetseg.runtime import describe_hardware, select_device


@dataclass(frozen=True)
class Job:
    spec_path: str
    quick: bool
    variant: str
    seed: int
    device: str
    threads: int | None
    fold: int | None = None


def _tag(job: Job) -> str:
    return f"{job.variant} seed {job.seed}" + (f" fold {job.fold}" if job.fold is not None else "")


def read_result(path: Path) -> dict[str, Any] | None:
    """A stored result, or None when there is none (or it was cut short while being written)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def run_job(job: Job, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume, or reuse) one run and return its measured result."""
    from unetseg.training import Trainer

    spec = load_spec(Path(job.spec_path), job.quick)
    variant = next(v for v in spec.expand() if v.name == job.variant)
    cfg = variant_config(spec, variant, job.seed, job.fold)
    identity = dump_config(cfg)  # what the run is; device and threads only say where it ran
    cfg.train.device = job.device
    if job.threads:
        cfg.train.threads = job.threads
    store = result_dir(spec, variant.name, job.seed, job.fold)
    result_path = store / "result.json"
    checkpoint = Path(cfg.output_dir) / "checkpoints" / "last.pt"
    measured_with = json.loads(json.dumps(json_safe(spec.report.model_dump())))  # as stored in result.json
    previous = read_result(result_path)
    changed = training_changes(previous.get("config"), cfg) if previous is not None else []
    if previous is not None and not changed and previous.get("measured_with") == measured_with:
        log(f"[{_tag(job)}] finished before, reused")
        return previous
    if previous is not None and not changed and checkpoint.is_file():
        log(f"[{_tag(job)}] trained before; measuring again with the new report settings")
    else:
        if previous is not None:
            why = ", ".join(changed) if changed else "report settings changed and its checkpoint is not here"
            log(f"[{_tag(job)}] stored result is out of date ({why}); training again")
        resume = checkpoint.is_file()
        log(f"[{_tag(job)}] {'resuming' if resume else 'training'} on {job.device} -> {cfg.output_dir}")
        Trainer(cfg, resume=resume, log=lambda msg: None).fit()
    result = analyse_run(checkpoint, spec.report, job.device, pred_dir=store / "pred")
    result.update(fold=job.fold, config=identity, measured_with=measured_with, hardware=describe_hardware())
    store.mkdir(parents=True, exist_ok=True)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(result), indent=1))
    os.replace(tmp, result_path)
    mean = result["mean"]
    log(f"[{_tag(job)}] dice {mean['dice']:.4f} bf1@1px {mean.get('bf1_1px', float('nan')):.4f}")
    return result


def stored_results(spec: AblationSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished runs of the spec's grid from its results folder alone (no checkpoints, no
    training), and the runs that are missing or out of date."""
    results, missing = [], []
    for variant in spec.expand():
        for seed in spec.seeds:
            for fold in fold_ids(spec):
                tag = _tag(Job("", False, variant.name, seed, "", None, fold))
                stored = read_result(result_dir(spec, variant.name, seed, fold) / "result.json")
                if stored is None:
                    missing.append(f"{tag}: not run")
                    continue
                changed = training_changes(stored.get("config"), variant_config(spec, variant, seed, fold))
                if changed:
                    missing.append(f"{tag}: trained under another config ({', '.join(changed[:4])})")
                else:
                    results.append(stored)
    return results, missing


def run_ablation(
    spec_path: Path, quick: bool = False, workers: int = 1, devices: list[str] | None = None,
    log: Callable[[str], None] = print, meter: Meter = QUIET,
) -> tuple[AblationSpec, list[dict[str, Any]]]:
    """Every run of the ablation, in variant, seed, fold order; ``meter`` counts the runs done."""
    spec = load_spec(spec_path, quick)
    devices = devices or ["auto"]
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    # Seed by seed: a grid cut short has every variant at the first seeds, not some variants at all.
    runs = [(v, s, f) for s in spec.seeds for v in spec.expand() for f in fold_ids(spec)]
    jobs = [
        Job(str(spec_path), quick, variant.name, seed, devices[i % len(devices)], threads, fold)
        for i, (variant, seed, fold) in enumerate(runs)
    ]
    for variant in spec.expand():  # fail on a bad variant or device before hours of training
        variant_config(spec, variant, spec.seeds[0])
    for device in set(devices):
        select_device(device)
    order = {name: i for i, name in enumerate(v.name for v in spec.expand())}
    jobs_in_report_order = sorted(jobs, key=lambda j: (order[j.variant], j.seed, j.fold or 0))
    meter.expect(len(jobs))
    if workers <= 1:
        done = {}
        for job in jobs:
            done[job] = run_job(job, log)
            meter.advance()
        return spec, [done[job] for job in jobs_in_report_order]
    results: dict[Job, dict[str, Any]] = {}
    failed: list[str] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            meter.advance()
            try:
                results[job] = future.result()
            except Exception as err:  # keep the other runs going; report every failure at the end
                failed.append(f"{_tag(job)}: {err}")
                continue
            log(f"[{_tag(job)}] done")
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (the others are saved and will be reused):\n  " + "\n  ".join(failed))
    return spec, [results[job] for job in jobs_in_report_order]
