"""The 8-minute ISBI race (issue #10): unetseg's CPU config against the smp and MONAI peers.

Every entrant is trained by ``unetseg train`` from ``configs/isbi_cpu.yaml``, so the loop, data,
validation and budget are identical, and scored by ``unetseg evaluate`` (fp32 for all); entrants
run one after another in fresh processes.
A peer runs under one of two recipes: with only the ``model`` section swapped (``monai_unet``:
unetseg's own augmentation, loss and schedule) or, with the suffix ``_issue``, under the recipe of
issue #10's reference figures as well (``monai_unet_issue``: random 256x256 crops, batch 4,
flips and 90-degree rotations, AdamW at a constant 1e-3, BCE + Dice, and fp32 as in those
figures, while ``train.amp`` of the config, e.g. bf16, applies to the other entrants). The ISBI split of the config
trains on slices 0-24 and validates on the full 512x512 slices 25-29; the scores are those
of the weights at the end of the budget (no checkpoint picked on the validation slices).

    python benchmarks/isbi_race.py                 # 3 seeds of unetseg and MONAI UNet (both recipes), 1 of the others (~95 min)
    python benchmarks/isbi_race.py --budget 60 --seeds 0 --entrants unetseg,monai_unet   # a quick look

Writes ``race.json`` and ``race.md`` under ``--out``, with the runs themselves in ``runs/``.
Run it alone: on 2 cores any other busy process makes the timings meaningless.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, matmul_peak, step_flops, write_results

from unetseg.config import load_config
from unetseg.models import build_model, count_parameters
from unetseg.runtime import amp_dtype, precision_name
from unetseg.training.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]

# The peers of issue #10, each at its library's defaults.
PEERS: dict[str, dict[str, Any]] = {
    "smp_unet": {"arch": "smp_unet", "encoder": "resnet18"},
    "monai_basicunet": {"arch": "monai_basicunet"},
    "monai_unet": {
        "arch": "monai_unet",
        "channels": [16, 32, 64, 128, 256],
        "strides": [2, 2, 2, 2],
        "num_res_units": 2,
    },
}
PEER_LABELS = {
    "smp_unet": "smp Unet resnet18",
    "monai_basicunet": "MONAI BasicUNet",
    "monai_unet": "MONAI UNet (16..256, 2 res units)",
}
# The training recipe behind issue #10's reference figures, for the ``<peer>_issue`` entrants.
ISSUE_RECIPE: dict[str, dict[str, Any]] = {
    "augment": {
        "crop_size": 256,
        "hflip": 0.5,
        "vflip": 0.5,
        "rot90": 0.5,
        "elastic": {"p": 0.0},
        "brightness_contrast": 0.0,
    },
    "train": {
        "batch_size": 4,
        "optimizer": "adamw",
        "lr": 1e-3,
        "scheduler": "none",
        "warmup_epochs": 0,
        "schedule_by": "steps",
        "loss": {"name": "dice_ce"},
    },
    "inference": {"tta": "none"},
}
ISSUE = "_issue"
# What the issue's recipe keeps of the config's train section: the loop (budget, validation
# interval, threads), not the recipe. Any other key (ema, grad_clip, a border weight) would
# quietly make the peer's recipe the config's; ``amp`` is left out too, since the issue's
# reference figures were measured in fp32.
LOOP_KEYS = (
    "epochs",
    "samples_per_epoch",
    "val_every",
    "monitor",
    "max_time_s",
    "threads",
    "device",
    "num_workers",
    "progress",
)


def label(entrant: str) -> str:
    if entrant == "unetseg":
        return "unetseg (configs/isbi_cpu.yaml)"
    peer = entrant.removesuffix(ISSUE)
    return PEER_LABELS[peer] + (", issue's recipe" if entrant.endswith(ISSUE) else ", unetseg's recipe")


def known(entrant: str) -> bool:
    return entrant == "unetseg" or entrant.removesuffix(ISSUE) in PEERS


METRICS = ("dice", "pixel_error", "rand_error")


def entrant_config(
    base: dict[str, Any], entrant: str, seed: int, budget: float, threads: int, out: Path
) -> dict[str, Any]:
    cfg = yaml.safe_load(yaml.safe_dump(base))
    if entrant != "unetseg":
        cfg["model"] = PEERS[entrant.removesuffix(ISSUE)]
    if entrant.endswith(ISSUE):
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k in LOOP_KEYS}
        recipe = yaml.safe_load(yaml.safe_dump(ISSUE_RECIPE))
        cfg["augment"] = recipe.pop("augment")  # whole: an augmentation the config gains later stays out
        for section, values in recipe.items():
            cfg.setdefault(section, {}).update(values)
    cfg["name"] = f"{entrant}_seed{seed}"
    cfg["seed"] = seed
    cfg["output_dir"] = str(out)
    cfg["train"].update(max_time_s=budget, threads=threads, progress=False)
    return cfg


def compute_dtype(cfg_path: Path) -> torch.dtype:
    """The dtype an entrant's convolutions run in on this CPU (``train.amp: bf16`` is fp32 on a
    CPU without bf16 instructions), so its FLOP/s can also be judged against that dtype's peak."""
    dtype = amp_dtype(load_config(cfg_path).train.amp, torch.device("cpu"))
    return torch.float32 if dtype is None else dtype


def flops_per_image(cfg_path: Path) -> tuple[int, int, int]:
    """(training-step FLOPs per image, parameters, crop size) of the entrant a config builds,
    at that entrant's own crop and batch: the issue's recipe trains on 256x256 crops whatever
    the config's crop, and a crop's FLOPs grow with its area."""
    cfg = load_config(cfg_path)
    crop, batch = cfg.augment.crop_size, cfg.train.batch_size
    model = build_model(cfg.model, cfg.data.channels, cfg.data.out_channels)
    x = torch.randn(batch, cfg.data.channels, crop, crop)
    y = (torch.rand(batch, crop, crop) > 0.5).float()
    return (
        step_flops(model, x, y, build_loss(cfg.train.loss, cfg.data.out_channels)) // batch,
        count_parameters(model),
        crop,
    )


def _cli(args: list[str], log_path: Path) -> None:
    with log_path.open("a") as log:
        proc = subprocess.run([sys.executable, "-m", "unetseg", *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"unetseg {args[0]} failed; see {log_path}")


def score(run_dir: Path, tta: str, log_path: Path) -> dict[str, float]:
    """The final weights' scores from ``unetseg evaluate``: fp32 for every entrant, whatever
    precision it trained and validated in, so the scoring is the same for all."""
    path = run_dir / f"eval_tta_{tta}.json"
    _cli(
        ["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--tta", tta, "--json", str(path)],
        log_path,
    )
    return json.loads(path.read_text())["mean"]


def run_entrant(cfg_path: Path, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Train one entrant with the CLI in a fresh process; its speed, and the scores of its final
    weights without and with test-time augmentation (d4: 8 flips/rotations)."""
    log_path.write_text("")
    start = time.perf_counter()
    _cli(["train", "--config", str(cfg_path)], log_path)
    wall = time.perf_counter() - start
    plain, tta = score(run_dir, "none", log_path), score(run_dir, "d4", log_path)
    rows = _read_csv(run_dir / "metrics.csv")
    last = rows[-1]
    images = sum(int(r["train_images"]) for r in rows)
    train_s = sum(int(r["train_images"]) / float(r["train_img_per_s"]) for r in rows if float(r["train_img_per_s"]) > 0)
    curve = [(float(r["elapsed_s"]), float(r["val_dice"])) for r in rows if r.get("val_dice") not in (None, "")]
    return {
        **{m: float(plain[m]) for m in METRICS},
        **{f"{m}_tta": float(tta[m]) for m in METRICS},
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
    out["precision"] = "/".join(sorted({r["precision"] for r in runs}))
    out["crop"] = "/".join(str(c) for c in sorted({r["crop"] for r in runs}))
    for key in (
        *METRICS,
        *(f"{m}_tta" for m in METRICS),
        "img_per_s",
        "gflops_per_s",
        "peak_fraction",
        "own_peak_fraction",
    ):
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
        f"Measured matmul peak: {', '.join(f'{v:.0f} GFLOP/s in {k}' for k, v in result['matmul_peaks_gflops'].items())}; "
        "% of peak is against the fp32 peak (the issue's measure) and, for an entrant computing in bf16, "
        "also against the bf16 peak. "
        "Train on slices 0-24, score the final weights on the full slices 25-29; "
        "time to Dice: training seconds (validation included) until a periodic validation first reaches it.",
        "",
        f"| model | params | seeds | precision | crop | train img/s | GFLOP/s (% of peak) | s to Dice {result['dice_threshold']} "
        "| Dice | pixel error | adapted Rand error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        lines.append(
            f"| {label(name)} | {result['params'][name] / 1e6:.2f} M | {', '.join(map(str, s['seeds']))} | {s['precision']} "
            f"| {s['crop']}² | {_fmt(s, 'img_per_s', 1)} | {s['gflops_per_s']:.0f} ({_peak_cell(s)}) "
            f"| {'not reached' if s['time_to_dice'] is None else format(s['time_to_dice'], '.0f')} "
            f"| {_fmt(s, 'dice')} | {_fmt(s, 'pixel_error')} | {_fmt(s, 'rand_error')} |"
        )
    lines += [
        "",
        "The same final weights scored with test-time augmentation (`unetseg evaluate --tta d4`, the mean of 8 flips/rotations):",
        "",
        "| model | Dice | pixel error | adapted Rand error |",
        "|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        cells = [_fmt(s, f"{m}_tta") for m in METRICS]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    verdicts = verdict(result["summary"])
    if verdicts:
        lines += [
            "",
            "unetseg against each peer run with several seeds: the gap in means, and whether every unetseg "
            "seed is better than every peer seed (the seed ranges do not overlap):",
            "",
            "| peer | scoring | Dice | pixel error | adapted Rand error |",
            "|---|---|---|---|---|",
        ]
        for v in verdicts:
            cells = [f"{v[m]['gap']:+.4f} ({'separate' if v[m]['separate'] else 'overlap'})" for m in METRICS]
            lines.append(f"| {label(v['peer'])} | {v['scoring']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per run:",
        "",
        "| model | seed | img/s | epochs | Dice | pixel error | Rand error | Dice (TTA) | pixel error (TTA) | Rand error (TTA) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        values = " | ".join(f"{r[m + suffix]:.4f}" for suffix in ("", "_tta") for m in METRICS)
        lines.append(f"| {label(r['entrant'])} | {r['seed']} | {r['img_per_s']:.1f} | {r['epochs']} | {values} |")
    return "\n".join(lines) + "\n"


def _peak_cell(s: dict[str, Any]) -> str:
    """% of the fp32 peak, issue #10's yardstick for every entrant; an entrant computing in bf16
    also against the bf16 peak, which is what its convolutions could reach on this CPU."""
    cell = f"{100 * s['peak_fraction']:.0f}%"
    return (
        cell if s["precision"] == "fp32" else f"{cell} of fp32, {100 * s['own_peak_fraction']:.0f}% of {s['precision']}"
    )


def _fmt(s: dict[str, Any], key: str, digits: int = 3) -> str:
    lo, hi = s[key + "_range"]
    return f"{s[key]:.{digits}f}" if len(s["seeds"]) == 1 else f"{s[key]:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


HIGHER_IS_BETTER = {"dice": True, "pixel_error": False, "rand_error": False}


def verdict(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """unetseg against every peer with two or more seeds, for plain and TTA scoring: per metric the
    gap in means (positive: unetseg better) and whether the seed ranges are separate."""
    ours = summary.get("unetseg")
    if ours is None or len(ours["seeds"]) < 2:
        return []
    out = []
    for peer, theirs in summary.items():
        if peer == "unetseg" or len(theirs["seeds"]) < 2:
            continue
        for scoring, suffix in (("final weights", ""), ("d4 TTA", "_tta")):
            row: dict[str, Any] = {"peer": peer, "scoring": scoring}
            for m in METRICS:
                sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
                (our_lo, our_hi), (their_lo, their_hi) = ours[m + suffix + "_range"], theirs[m + suffix + "_range"]
                separate = our_lo > their_hi if sign > 0 else our_hi < their_lo
                row[m] = {"gap": sign * (ours[m + suffix] - theirs[m + suffix]), "separate": separate}
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "isbi_cpu.yaml")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of unetseg and MONAI UNet (both recipes)")
    parser.add_argument("--peer-seeds", default="0", help="seeds of smp Unet and MONAI BasicUNet")
    parser.add_argument(
        "--entrants",
        default="unetseg,monai_unet_issue,monai_unet,smp_unet_issue,monai_basicunet_issue",
        help="unetseg and peers (smp_unet, monai_basicunet, monai_unet), each peer with '_issue' for the issue's recipe",
    )
    parser.add_argument("--dice-threshold", type=float, default=0.78, help="for the time-to-accuracy column")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "isbi_race")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    base = yaml.safe_load(args.config.read_text())
    entrants = [e.strip() for e in args.entrants.split(",") if e.strip()]
    unknown = [e for e in entrants if not known(e)]
    if unknown:
        parser.error(
            f"unknown entrant(s) {', '.join(unknown)}; choose from unetseg, {', '.join(PEERS)} (each with or without '{ISSUE}')"
        )
    main_entrants = ("unetseg", "monai_unet", "monai_unet" + ISSUE)
    seeds = {e: [int(s) for s in (args.seeds if e in main_entrants else args.peer_seeds).split(",")] for e in entrants}
    peaks = {"fp32": matmul_peak(torch.device("cpu"))}
    print(f"fp32 matmul peak on {args.threads} threads: {peaks['fp32'] / 1e9:.1f} GFLOP/s", flush=True)

    runs: list[dict[str, Any]] = []
    payload: dict[str, Any] = {}
    params: dict[str, int] = {}
    order = [(e, s) for s in sorted({s for v in seeds.values() for s in v}) for e in entrants if s in seeds[e]]
    for entrant, seed in order:  # seed-major: a stopped race still holds every entrant's seed 0
        run_dir = args.out / "runs" / f"{entrant}_seed{seed}"
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise SystemExit(f"{run_dir} already holds a run; remove it or pass another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir.parent / f"{entrant}_seed{seed}.yaml"
        cfg_path.write_text(
            yaml.safe_dump(entrant_config(base, entrant, seed, args.budget, args.threads, run_dir), sort_keys=False)
        )
        per_image, params[entrant], crop = flops_per_image(cfg_path)
        dtype = compute_dtype(cfg_path)
        precision = precision_name(dtype)
        if precision not in peaks:
            peaks[precision] = matmul_peak(torch.device("cpu"), dtype)
            print(f"{precision} matmul peak: {peaks[precision] / 1e9:.1f} GFLOP/s", flush=True)
        print(
            f"{label(entrant)}, seed {seed}: {params[entrant] / 1e6:.2f} M parameters, training {args.budget:.0f} s ...",
            flush=True,
        )
        result = run_entrant(cfg_path, run_dir, run_dir.parent / f"{entrant}_seed{seed}.log")
        result.update(entrant=entrant, seed=seed, flops_per_image=per_image, precision=precision, crop=crop)
        result["time_to_dice"] = time_to_dice(result["dice_curve"], args.dice_threshold)
        result["gflops_per_s"] = per_image * result["img_per_s"] / 1e9
        result["peak_fraction"] = per_image * result["img_per_s"] / peaks["fp32"]
        result["own_peak_fraction"] = per_image * result["img_per_s"] / peaks[precision]
        runs.append(result)
        print(
            f"  Dice {result['dice']:.4f}  pixel error {result['pixel_error']:.4f}  Rand error {result['rand_error']:.4f}  "
            f"{result['img_per_s']:.1f} img/s  {result['gflops_per_s']:.0f} GFLOP/s ({100 * result['peak_fraction']:.0f}% of the fp32 peak)",
            flush=True,
        )
        # Rewritten after every run: a race stopped part-way still leaves its tables so far.
        payload = results(args, entrants, runs, params, peaks)
        write_results(args.out, "race", payload, markdown(payload), echo=len(runs) == len(order))
    return payload


def results(
    args: argparse.Namespace,
    entrants: list[str],
    runs: list[dict[str, Any]],
    params: dict[str, int],
    peaks: dict[str, float],
) -> dict[str, Any]:
    summary = {
        e: summarise([r for r in runs if r["entrant"] == e]) for e in entrants if any(r["entrant"] == e for r in runs)
    }
    return {
        "environment": environment(torch.device("cpu")),
        "verdict": verdict(summary),
        "budget_s": args.budget,
        "dice_threshold": args.dice_threshold,
        "config": str(args.config),
        "matmul_peak_gflops": peaks["fp32"] / 1e9,
        "matmul_peaks_gflops": {dtype: peak / 1e9 for dtype, peak in peaks.items()},
        "params": params,
        "summary": summary,
        "runs": runs,
    }


if __name__ == "__main__":
    main()
