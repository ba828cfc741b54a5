"""Train and measure every (variant, seed) of an ablation, reusing finished runs.

Each run lives in ``<output_dir>/runs/<variant>/seed<k>/``; ``result.json`` there marks it
finished. Re-running the ablation skips finished runs and resumes interrupted ones from their
``last.pt``, so a killed ablation loses at most one epoch of one run. Runs can be spread
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
from unetseg.ablation.spec import AblationSpec, fold_ids, load_spec, run_dir, variant_config
from unetseg.config import dump_config, normalised_config
from unetseg.report import json_safe
from unetseg.runtime import select_device


@dataclass(frozen=True)
class Job:
    spec_path: str
    quick: bool
    variant: str
    seed: int
    device: str
    threads: int | None
    fold: int | None = None


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
    out = run_dir(spec, variant.name, job.seed, job.fold)
    tag = f"{variant.name} seed {job.seed}" + (f" fold {job.fold}" if job.fold is not None else "")
    result_path = out / "result.json"
    measured_with = json.loads(json.dumps(json_safe(spec.report.model_dump())))  # as stored in result.json
    previous = json.loads(result_path.read_text()) if result_path.is_file() else None
    if previous is not None and normalised_config(previous.get("config")) != identity:
        raise RuntimeError(
            f"{out} holds a finished run with another config; remove it or change the ablation output_dir"
        )
    if previous is not None and previous.get("measured_with") == measured_with:
        log(f"[{tag}] finished before, reused")
        return previous
    if previous is None:
        resume = (out / "checkpoints" / "last.pt").is_file()
        log(f"[{tag}] {'resuming' if resume else 'training'} on {job.device}")
        Trainer(cfg, resume=resume, log=lambda msg: None).fit()
    else:
        log(f"[{tag}] trained before; measuring again with the new report settings")
    result = analyse_run(out / "checkpoints" / "last.pt", spec.report, job.device)
    result["fold"] = job.fold
    result["config"] = identity
    result["measured_with"] = measured_with
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(result)))
    os.replace(tmp, result_path)
    mean = result["mean"]
    log(f"[{tag}] dice {mean['dice']:.4f} bf1@1px {mean.get('bf1_1px', float('nan')):.4f}")
    return result


def run_ablation(
    spec_path: Path, quick: bool = False, workers: int = 1, devices: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[AblationSpec, list[dict[str, Any]]]:
    """Every run of the ablation, in variant, seed, fold order."""
    spec = load_spec(spec_path, quick)
    devices = devices or ["auto"]
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    runs = [(v, s, f) for v in spec.expand() for s in spec.seeds for f in fold_ids(spec)]
    jobs = [
        Job(str(spec_path), quick, variant.name, seed, devices[i % len(devices)], threads, fold)
        for i, (variant, seed, fold) in enumerate(runs)
    ]
    for variant in spec.expand():  # fail on a bad variant or device before hours of training
        variant_config(spec, variant, spec.seeds[0])
    for device in set(devices):
        select_device(device)
    if workers <= 1:
        return spec, [run_job(job, log) for job in jobs]
    results: dict[Job, dict[str, Any]] = {}
    failed: list[str] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                results[job] = future.result()
            except Exception as err:  # keep the other runs going; report every failure at the end
                failed.append(f"{job.variant} seed {job.seed}: {err}")
                continue
            log(f"[{job.variant} seed {job.seed}" + (f" fold {job.fold}" if job.fold is not None else "") + "] done")
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (the others are saved and will be reused):\n  " + "\n  ".join(failed))
    return spec, [results[job] for job in jobs]
