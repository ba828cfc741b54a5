"""``unetseg init`` against the hand-tuned configs (issue #28): does a config planned from the
data alone train as well as the one tuned by hand, in the same time budget?

For ISBI 2012 (``configs/isbi_cpu.yaml``) and the DSB 2018 nuclei (``configs/nuclei_cpu.yaml``):
``unetseg init`` plans a config from the training folder with ``--budget`` set to the
hand-tuned config's ``train.max_time_s``; both configs are trained by ``unetseg train`` one after
the other in fresh processes, and their final weights are scored by ``unetseg evaluate
--config <hand-tuned config>`` (fp32), so both are measured on the hand-tuned config's
validation images. The target is a planned Dice within 0.005 of the hand-tuned one.

    python benchmarks/init_vs_handtuned.py                       # both datasets (~40 min on 2 cores)
    python benchmarks/init_vs_handtuned.py --datasets isbi --budget 60   # a quick look
    python benchmarks/init_vs_handtuned.py --datasets isbi --epochs 8    # the same steps instead of the same time

Writes ``init_vs_handtuned.json`` and ``.md`` under ``--out``, the runs in ``runs/``. On a
shared machine both configs lose steps to the other load alike, but not equally from minute to
minute: the result table records the crops per second each run got.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "isbi": ("data/isbi2012/train", "configs/isbi_cpu.yaml"),
    "nuclei": ("data/dsb2018_nuclei/train", "configs/nuclei_cpu.yaml"),
}
TARGET = 0.005
METRICS = ("dice", "iou", "pixel_error")


def _cli(args: list[str], log_path: Path) -> None:
    with log_path.open("a") as log:
        proc = subprocess.run([sys.executable, "-m", "unetseg", *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"unetseg {args[0]} failed; see {log_path}")


def _train_and_score(
    config: Path, run_dir: Path, handtuned: Path, overrides: list[str], log_path: Path
) -> dict[str, Any]:
    """Train ``config`` into ``run_dir``; score its final weights on ``handtuned``'s validation split."""
    start = time.perf_counter()
    sets = [arg for item in overrides for arg in ("--set", item)]
    _cli(["train", "--config", str(config), "--out", str(run_dir), *sets], log_path)
    wall = time.perf_counter() - start
    scores = run_dir / "eval_final.json"
    _cli(
        [
            "evaluate",
            "--checkpoint",
            str(run_dir / "checkpoints" / "last.pt"),
            "--config",
            str(handtuned),
            "--json",
            str(scores),
        ],
        log_path,
    )
    mean = json.loads(scores.read_text())["mean"]
    for bulky in ("checkpoints", "tensorboard"):  # the results keep scores and curves, not weights
        shutil.rmtree(run_dir / bulky, ignore_errors=True)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    images = sum(int(r["train_images"]) for r in rows)
    seconds = sum(int(r["train_images"]) / float(r["train_img_per_s"]) for r in rows if float(r["train_img_per_s"]) > 0)
    val_dice = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    return {
        **{m: float(mean[m]) for m in METRICS},
        "best_val_dice": max(val_dice) if val_dice else None,
        "epochs": len(rows),
        "crops": images,
        "crops_per_s": round(images / seconds, 2) if seconds else None,
        "process_wall_s": round(wall, 1),
    }


def run_dataset(name: str, out: Path, budget: float | None, seed: int, epochs: int | None = None) -> dict[str, Any]:
    data, handtuned = DATASETS[name]
    handtuned_cfg = ROOT / handtuned
    budget = budget or float(yaml.safe_load(handtuned_cfg.read_text())["train"]["max_time_s"])
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    planned_cfg = runs / f"{name}_planned.yaml"
    log = runs / f"{name}.log"
    log.write_text("")
    _cli(
        [
            "init",
            data,
            "--out",
            str(planned_cfg),
            "--budget",
            f"{budget:g}",
            "--name",
            f"{name}_planned",
            "--output-dir",
            str(runs / f"{name}_planned"),
            "--overwrite",
        ],
        log,
    )
    overrides = [f"seed={seed}", f"train.max_time_s={budget}"]
    if epochs:  # a budget in steps: the same crops for both, whatever else loads the machine
        overrides = [f"seed={seed}", f"train.epochs={epochs}", "train.schedule_by=steps", "train.max_time_s=null"]
    result = {
        "data": data,
        "handtuned_config": handtuned,
        "budget_s": budget,
        "epochs": epochs,
        "seed": seed,
        "handtuned": _train_and_score(handtuned_cfg, runs / f"{name}_handtuned", handtuned_cfg, overrides, log),
        "planned": _train_and_score(planned_cfg, runs / f"{name}_planned", handtuned_cfg, overrides, log),
    }
    result["dice_gap"] = round(result["planned"]["dice"] - result["handtuned"]["dice"], 4)
    result["within_target"] = result["dice_gap"] >= -TARGET
    return result


def markdown(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    lines = [
        "# `unetseg init` against the hand-tuned configs",
        "",
        f"{env['date']}, {env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}; "
        f"load average at the start {payload['load_average']}.",
        "Final weights scored by `unetseg evaluate` (fp32) on the hand-tuned config's validation images; "
        f"target: planned Dice at most {TARGET} below the hand-tuned one.",
        "",
        "| dataset | budget | config | Dice | IoU | pixel error | best val Dice | epochs | crops/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in payload["datasets"].items():
        for which in ("handtuned", "planned"):
            r = result[which]
            label = result["handtuned_config"] if which == "handtuned" else "`unetseg init`"
            best = f"{r['best_val_dice']:.4f}" if r["best_val_dice"] is not None else "-"
            budget = f"{result['epochs']} epochs" if result.get("epochs") else f"{result['budget_s']:g} s"
            lines.append(
                f"| {name} | {budget} | {label} | {r['dice']:.4f} | {r['iou']:.4f} | "
                f"{r['pixel_error']:.4f} | {best} | {r['epochs']} | {r['crops_per_s']} |"
            )
    lines.append("")
    for name, result in payload["datasets"].items():
        verdict = "within" if result["within_target"] else "outside"
        lines.append(f"- {name}: planned minus hand-tuned Dice {result['dice_gap']:+.4f} ({verdict} the target).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="isbi,nuclei", help="comma-separated: isbi, nuclei")
    parser.add_argument(
        "--budget", type=float, help="seconds for every run (default: each hand-tuned config's max_time_s)"
    )
    parser.add_argument(
        "--epochs", type=int, help="train both for this many epochs (cosine over the steps) instead of --budget"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "init_vs_handtuned")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    payload: dict[str, Any] = {
        "environment": environment(torch.device("cpu")),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "datasets": {name: run_dataset(name, args.out, args.budget, args.seed, args.epochs) for name in names},
    }
    write_results(args.out, "init_vs_handtuned", payload, markdown(payload))
    return payload


if __name__ == "__main__":
    main()
