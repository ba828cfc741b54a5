"""The 8-minute ISBI race (issue #10): unetseg's CPU config against the smp and MONAI peers.

Every entrant is trained by ``unetseg train`` from ``configs/isbi_cpu.yaml`` with only the
``model`` section swapped, so the loop, data, augmentation, loss, schedule and budget are
identical; entrants run one after another in fresh processes. The ISBI split of the config
trains on slices 0-24 and validates on the full 512x512 slices 25-29; the scores are those
of the weights at the end of the budget (no checkpoint picked on the validation slices).

    python benchmarks/isbi_race.py                 # 3 seeds of unetseg and MONAI UNet, 1 of the others (~70 min)
    python benchmarks/isbi_race.py --budget 60 --seeds 0 --entrants unetseg,monai_unet   # a quick look

Writes ``race.json`` and ``race.md`` under ``--out``, with the runs themselves in ``runs/``.
Run it alone: on 2 cores any other busy process makes the timings meaningless.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, matmul_peak, step_flops, write_results  # noqa: E402

from unetseg.config import load_config  # noqa: E402
from unetseg.models import build_model, count_parameters  # noqa: E402
from unetseg.training.losses import build_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The peers of issue #10, each at its library's defaults.
PEERS: dict[str, dict[str, Any]] = {
    "smp_unet": {"arch": "smp_unet", "encoder": "resnet18"},
    "monai_basicunet": {"arch": "monai_basicunet"},
    "monai_unet": {"arch": "monai_unet", "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
}
LABELS = {
    "unetseg": "unetseg (configs/isbi_cpu.yaml)",
    "smp_unet": "smp Unet resnet18",
    "monai_basicunet": "MONAI BasicUNet",
    "monai_unet": "MONAI UNet (16..256, 2 res units)",
}
METRICS = ("dice", "pixel_error", "rand_error")


def entrant_config(base: dict[str, Any], entrant: str, seed: int, budget: float, threads: int, out: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(yaml.safe_dump(base))
    if entrant != "unetseg":
        cfg["model"] = PEERS[entrant]
    cfg["name"] = f"{entrant}_seed{seed}"
    cfg["seed"] = seed
    cfg["output_dir"] = str(out)
    cfg["train"].update(max_time_s=budget, threads=threads, progress=False)
    return cfg


def flops_per_image(cfg_path: Path, crop: int, batch: int) -> tuple[int, int]:
    """(training-step FLOPs per image, parameters) of the entrant a config builds."""
    cfg = load_config(cfg_path)
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    x = torch.randn(batch, cfg.data.channels, crop, crop)
    y = (torch.rand(batch, crop, crop) > 0.5).float()
    return step_flops(model, x, y, build_loss(cfg.train.loss, cfg.data.out_channels)) // batch, count_parameters(model)


def run_entrant(cfg_path: Path, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Train one entrant with the CLI in a fresh process; its final-epoch scores and speed."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "unetseg.cli", "train", "--config", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"training failed for {cfg_path}; see {log_path}")
    rows = _read_csv(run_dir / "metrics.csv")
    last = rows[-1]
    images = sum(int(r["train_images"]) for r in rows)
    train_s = sum(int(r["train_images"]) / float(r["train_img_per_s"]) for r in rows if float(r["train_img_per_s"]) > 0)
    curve = [(float(r["elapsed_s"]), float(r["val_dice"])) for r in rows if r.get("val_dice") not in (None, "")]
    return {
        **{m: float(last[f"val_{m}"]) for m in METRICS},
        "images": images,
        "img_per_s": images / train_s,
        "train_s": float(last["elapsed_s"]),
        "process_wall_s": round(wall, 1),
        "epochs": int(last["epoch"]),
        "dice_curve": curve,
    }


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def time_to_dice(curve: list[tuple[float, float]], threshold: float) -> float | None:
    """Training wall time at the first validation whose Dice reaches ``threshold`` (None: never)."""
    return next((t for t, dice in curve if dice >= threshold), None)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    reached = [r["time_to_dice"] for r in runs]
    out["time_to_dice"] = statistics.fmean(reached) if None not in reached else None
    for key in (*METRICS, "img_per_s", "gflops_per_s", "peak_fraction"):
        values = [r[key] for r in runs]
        out[key] = statistics.fmean(values)
        out[key + "_range"] = [min(values), max(values)]
    return out


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# ISBI 2012 race: {result['budget_s']:.0f} s of training on {env['threads']} threads",
        "",
        f"{env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, {env['date']}. "
        f"Measured fp32 matmul peak: {result['matmul_peak_gflops']:.0f} GFLOP/s. "
        "Train on slices 0-24, score the final weights on the full slices 25-29; "
        "time to Dice: training seconds (validation included) until a periodic validation first reaches it.",
        "",
        f"| model | params | seeds | train img/s | GFLOP/s (% of peak) | s to Dice {result['dice_threshold']} "
        "| Dice | pixel error | adapted Rand error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        one = len(s["seeds"]) == 1

        def fmt(key: str, digits: int = 3) -> str:
            lo, hi = s[key + "_range"]
            return f"{s[key]:.{digits}f}" if one else f"{s[key]:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"

        lines.append(
            f"| {LABELS[name]} | {result['params'][name] / 1e6:.2f} M | {', '.join(map(str, s['seeds']))} | {fmt('img_per_s', 1)} "
            f"| {s['gflops_per_s']:.0f} ({100 * s['peak_fraction']:.0f}%) "
            f"| {'not reached' if s['time_to_dice'] is None else format(s['time_to_dice'], '.0f')} "
            f"| {fmt('dice')} | {fmt('pixel_error')} | {fmt('rand_error')} |"
        )
    lines += ["", "Means over seeds, range in brackets. Per run:", "", "| model | seed | img/s | Dice | pixel error | Rand error | epochs |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(
            f"| {LABELS[r['entrant']]} | {r['seed']} | {r['img_per_s']:.1f} | {r['dice']:.4f} | {r['pixel_error']:.4f} | {r['rand_error']:.4f} | {r['epochs']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "isbi_cpu.yaml")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of unetseg and MONAI UNet")
    parser.add_argument("--peer-seeds", default="0", help="seeds of smp Unet and MONAI BasicUNet")
    parser.add_argument("--entrants", default="unetseg,monai_unet,smp_unet,monai_basicunet")
    parser.add_argument("--dice-threshold", type=float, default=0.78, help="for the time-to-accuracy column")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "isbi_race")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = yaml.safe_load(args.config.read_text())
    entrants = [e.strip() for e in args.entrants.split(",") if e.strip()]
    unknown = [e for e in entrants if e != "unetseg" and e not in PEERS]
    if unknown:
        parser.error(f"unknown entrant(s) {', '.join(unknown)}; choose from unetseg, {', '.join(PEERS)}")
    seeds = {e: [int(s) for s in (args.seeds if e in ("unetseg", "monai_unet") else args.peer_seeds).split(",")] for e in entrants}
    crop, batch = base["augment"]["crop_size"], base["train"]["batch_size"]
    peak = matmul_peak(torch.device("cpu"))
    print(f"matmul peak on {args.threads} threads: {peak / 1e9:.1f} GFLOP/s", flush=True)

    runs: list[dict[str, Any]] = []
    params: dict[str, int] = {}
    order = [(e, s) for s in sorted({s for v in seeds.values() for s in v}) for e in entrants if s in seeds[e]]
    for entrant, seed in order:  # seed-major: a stopped race still holds every entrant's seed 0
        run_dir = args.out / "runs" / f"{entrant}_seed{seed}"
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise SystemExit(f"{run_dir} already holds a run; remove it or pass another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir.parent / f"{entrant}_seed{seed}.yaml"
        cfg_path.write_text(yaml.safe_dump(entrant_config(base, entrant, seed, args.budget, args.threads, run_dir), sort_keys=False))
        per_image, params[entrant] = flops_per_image(cfg_path, crop, batch)
        print(f"{LABELS[entrant]}, seed {seed}: {params[entrant] / 1e6:.2f} M parameters, training {args.budget:.0f} s ...", flush=True)
        result = run_entrant(cfg_path, run_dir, run_dir.parent / f"{entrant}_seed{seed}.log")
        result.update(entrant=entrant, seed=seed, flops_per_image=per_image)
        result["time_to_dice"] = time_to_dice(result["dice_curve"], args.dice_threshold)
        result["gflops_per_s"] = per_image * result["img_per_s"] / 1e9
        result["peak_fraction"] = per_image * result["img_per_s"] / peak
        runs.append(result)
        print(
            f"  Dice {result['dice']:.4f}  pixel error {result['pixel_error']:.4f}  Rand error {result['rand_error']:.4f}  "
            f"{result['img_per_s']:.1f} img/s  {result['gflops_per_s']:.0f} GFLOP/s ({100 * result['peak_fraction']:.0f}% of peak)",
            flush=True,
        )
    summary = {e: summarise([r for r in runs if r["entrant"] == e]) for e in entrants}
    payload = {
        "environment": environment(torch.device("cpu")),
        "budget_s": args.budget,
        "dice_threshold": args.dice_threshold,
        "config": str(args.config),
        "matmul_peak_gflops": peak / 1e9,
        "params": params,
        "summary": summary,
        "runs": runs,
    }
    write_results(args.out, "race", payload, markdown(payload))
    return payload


if __name__ == "__main__":
    main()
