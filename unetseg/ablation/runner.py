"""Train and measure every (variant, seed) of an ablation, reusing finished runs.

A finished run is its ``<results_dir>/results/<variant>/seed<k>/result.json`` (with the
validation predictions beside it), which stores the resolved config it was trained under. A
later invocation, on this machine or another, reuses it when the config is still the same,
and trains again when it changed; interrupted runs resume from the ``last.pt`` in their keyed
checkpoint folder, so a killed ablation loses at most one epoch of one run.

Where runs execute: in this process or a pool of ``workers`` processes (``executor="pool"``,
``devices`` assigned round-robin), or through submitit (``"local"``: subprocesses on this
machine, at most ``workers`` at once; ``"slurm"``: one array job on a SLURM cluster, at most
``workers`` tasks at once). Every executor calls the same :func:`run_job`, so a grid can be
begun on a laptop and finished on a cluster that shares the results folder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from unetseg.ablation.measure import analyse_run, scored_set
from unetseg.ablation.results import read_result
from unetseg.ablation.spec import (
    AblationSpec,
    fold_ids,
    load_spec,
    narrowed,
    result_dir,
    training_changes,
    variant_config,
)
from unetseg.config import ConfigError, dump_config
from unetseg.meter import QUIET, Meter
from unetseg.report.document import json_safe
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


def measured_with(spec: AblationSpec) -> dict[str, Any]:
    """How a run's result was measured, as stored in its ``result.json``: the report settings,
    and the held-out set where there is one (absent otherwise, so the results of grids measured
    on their validation images before held-out sets existed stay valid)."""
    settings = json.loads(json.dumps(json_safe(spec.report.model_dump())))
    if spec.evaluate is not None:
        settings["evaluate"] = spec.evaluate.model_dump(mode="json")
    return settings


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
    measured = measured_with(spec)
    previous, damaged = read_result(result_path, variant.name, job.seed)
    if damaged:
        log(f"[{_tag(job)}] {damaged}; training again")
    changed = training_changes(previous.get("config"), cfg) if previous is not None else []
    if previous is not None and not changed and previous.get("measured_with") == measured:
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
    result = analyse_run(checkpoint, spec.report, job.device, store / "pred", spec.evaluate)
    result.update(fold=job.fold, config=identity, measured_with=measured, hardware=describe_hardware())
    store.mkdir(parents=True, exist_ok=True)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(json_safe(result), indent=1))
    os.replace(tmp, result_path)
    mean = result["mean"]
    log(f"[{_tag(job)}] dice {mean['dice']:.4f} bf1@1px {mean.get('bf1_1px', float('nan')):.4f}")
    return result


def exit_with(launcher: int, every_s: float = 1.0) -> threading.Thread:
    """End this process once ``launcher`` is gone. submitit's local executor starts each run as
    a grandchild of ``unetseg ablate`` under a controller meant to outlive it, so a launcher
    killed with ``kill -9`` left its runs training, holding their locks, beside the next
    ``ablate``; torchrun's workers die with their launcher, and these now do too."""
    from unetseg.training.runlock import pid_alive

    def watch() -> None:
        while pid_alive(launcher):
            time.sleep(every_s)
        os._exit(1)  # its run lock is then stale (its PID is gone) and the next ablate takes it over

    thread = threading.Thread(target=watch, name="unetseg-exit-with-launcher", daemon=True)
    thread.start()
    return thread


def run_job_beside(launcher: int, job: Job) -> dict[str, Any]:
    """:func:`run_job` in a process that must not outlive ``launcher`` (see :func:`exit_with`)."""
    exit_with(launcher)
    return run_job(job)


def stored_results(spec: AblationSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """The finished runs of the spec's grid from its results folder alone (no checkpoints, no
    training), and the runs that are missing or out of date (trained under another config, or
    measured on other images than the spec's held-out set)."""
    results, missing = [], []
    images = measured_with(spec).get("evaluate")
    for variant in spec.expand():
        for seed in spec.seeds:
            for fold in fold_ids(spec):
                tag = _tag(Job("", False, variant.name, seed, "", None, fold))
                stored, damaged = read_result(
                    result_dir(spec, variant.name, seed, fold) / "result.json", variant.name, seed
                )
                if stored is None:
                    missing.append(f"{tag}: {damaged or 'not run'}")
                    continue
                changed = training_changes(stored.get("config"), variant_config(spec, variant, seed, fold))
                if changed:
                    missing.append(f"{tag}: trained under another config ({', '.join(changed[:4])})")
                elif (stored.get("measured_with") or {}).get("evaluate") != images:
                    missing.append(f"{tag}: measured on other images than {spec.scored_on}")
                else:
                    results.append(stored)
    return results, missing


EXECUTORS = ("pool", "local", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    """What each run asks of a SLURM cluster (submitit's parameters of the same meaning)."""

    partition: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    extra: dict[str, Any] = field(default_factory=dict)  # further slurm_* parameters, e.g. {"account": "lab"}


def _submitit_executor(kind: str, folder: Path, workers: int, slurm: SlurmOptions | None):
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"executor {kind!r} needs submitit: pip install 'unetseg[cluster]'") from None
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    options = slurm or SlurmOptions()
    executor.update_parameters(timeout_min=options.time_min, name="unetseg-ablate")
    if kind == "slurm":
        executor.update_parameters(
            slurm_partition=options.partition,
            slurm_array_parallelism=workers,
            gpus_per_node=options.gpus_per_task,
            cpus_per_task=options.cpus_per_task,
            **{f"slurm_{k}": v for k, v in options.extra.items()},
        )
    return executor


def _run_submitit(
    kind: str,
    jobs: list[Job],
    workers: int,
    folder: Path,
    slurm: SlurmOptions | None,
    log: Callable[[str], None],
    meter: Meter,
) -> tuple[dict[Job, dict[str, Any]], list[str]]:
    """Each job through submitit; local jobs are started ``workers`` at a time (submitit's local
    executor would start them all at once), SLURM ones as one array that the scheduler throttles."""
    executor = _submitit_executor(kind, folder, workers, slurm)
    results: dict[Job, dict[str, Any]] = {}
    failed: list[str] = []
    pending, running = list(jobs), []

    def collect(job: Job, handle) -> None:
        meter.advance()
        try:
            results[job] = handle.result()
            log(f"[{_tag(job)}] done ({kind} job {handle.job_id})")
        except Exception as err:  # keep the other runs going; report every failure at the end
            failed.append(
                f"{_tag(job)}: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r} "
                f"(log: {folder / f'{handle.job_id}_0_log.err'})"
            )

    if kind == "slurm":
        with executor.batch():
            handles = [executor.submit(run_job, job) for job in jobs]
        log(f"submitted {len(handles)} run(s) to SLURM as array {handles[0].job_id.split('_')[0] if handles else '-'}")
        for job, handle in zip(jobs, handles):
            collect(job, handle)
        return results, failed
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            running.append((job, executor.submit(run_job_beside, os.getpid(), job)))
        finished = [(job, handle) for job, handle in running if handle.done()]
        for job, handle in finished:
            running.remove((job, handle))
            collect(job, handle)
        if not finished:
            time.sleep(0.5)
    return results, failed


def run_ablation(
    spec_path: Path,
    quick: bool = False,
    workers: int = 1,
    devices: list[str] | None = None,
    log: Callable[[str], None] = print,
    meter: Meter = QUIET,
    executor: str = "pool",
    slurm: SlurmOptions | None = None,
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
) -> tuple[AblationSpec, list[dict[str, Any]]]:
    """Every run of the ablation (or of the ``variants`` and ``seeds`` asked for, see
    :func:`~unetseg.ablation.spec.narrowed`), in variant, seed, fold order; ``meter`` counts
    the runs done."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    spec = narrowed(load_spec(spec_path, quick), variants, seeds)
    devices = devices or ["auto"]
    parallel = workers > 1 or executor == "local"
    threads = max(1, (os.cpu_count() or 1) // workers) if parallel and executor != "slurm" else None
    # Seed by seed: a grid cut short has every variant at the first seeds, not some variants at all.
    runs = [(v, s, f) for s in spec.seeds for v in spec.expand() for f in fold_ids(spec)]
    jobs = [
        Job(str(spec_path), quick, variant.name, seed, devices[i % len(devices)], threads, fold)
        for i, (variant, seed, fold) in enumerate(runs)
    ]
    for variant in spec.expand():  # fail on a bad variant, device or held-out set before hours of training
        variant_config(spec, variant, spec.seeds[0])
    if spec.evaluate is not None:
        scored_set(variant_config(spec, spec.expand()[0], spec.seeds[0]), spec.evaluate)
    for device in set(devices) if executor != "slurm" else ():  # a cluster's nodes have their own devices
        select_device(device)
    order = {name: i for i, name in enumerate(v.name for v in spec.expand())}
    jobs_in_report_order = sorted(jobs, key=lambda j: (order[j.variant], j.seed, j.fold or 0))
    meter.expect(len(jobs))
    if executor != "pool":
        results, failed = _run_submitit(executor, jobs, workers, Path(spec.output_dir) / "submitit", slurm, log, meter)
    elif workers <= 1:
        done = {}
        for job in jobs:
            done[job] = run_job(job, log)
            meter.advance()
        return spec, [done[job] for job in jobs_in_report_order]
    else:
        results, failed = _run_pool(jobs, workers, log, meter)
    if failed:
        raise RuntimeError(
            f"{len(failed)} run(s) failed (the others are saved and will be reused):\n  " + "\n  ".join(failed)
        )
    return spec, [results[job] for job in jobs_in_report_order]


def _run_pool(
    jobs: list[Job], workers: int, log: Callable[[str], None], meter: Meter
) -> tuple[dict[Job, dict[str, Any]], list[str]]:
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
    return results, failed
