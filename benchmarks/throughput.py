"""Speed of unetseg's U-Nets against smp and MONAI U-Nets of similar size (issue #4).

For each model: training throughput (forward, backward and an AdamW step, the config's
loss) on 256x256 and 512x512 crops, inference throughput on whole 512x512 slices
(``torch.inference_mode``), peak memory, and the achieved FLOP/s of a training step
against the machine's measured matmul peak. Each model is measured in a fresh process
so that its peak memory is its own.

    python benchmarks/throughput.py                       # CPU, the threads torch picks
    python benchmarks/throughput.py --threads 2 --group small
    python benchmarks/throughput.py --device cuda --amp bf16 --channels-last --batch 32
    python benchmarks/throughput.py --threads 2 --amp bf16 --models unetseg_cpu   # a CPU with native bf16

Prints a table and writes ``throughput.json`` / ``throughput.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, matmul_peak, step_flops, sync, time_steps, write_results

from unetseg.config import LossConfig, load_config
from unetseg.config.model import MonaiBasicUNetConfig, MonaiUNetConfig, SmpUnetConfig, UNetConfig
from unetseg.models import build_model, count_parameters
from unetseg.runtime import amp_dtype, autocast, precision_name
from unetseg.training.losses import build_loss

ROOT = Path(__file__).resolve().parents[1]


def _cpu_config_model() -> UNetConfig:
    return load_config(ROOT / "configs" / "isbi_cpu.yaml").model


# Two size classes: the ~2 M-parameter networks a CPU user trains, and the ~25-35 M ones of
# the papers (unetseg's default is the U-Net paper's). Every peer is at its library's defaults
# except for width.
MODELS: dict[str, tuple[str, Any]] = {
    "unetseg_cpu": ("small", _cpu_config_model),
    "monai_unet": ("small", lambda: MonaiUNetConfig(arch="monai_unet")),
    "monai_basicunet": ("small", lambda: MonaiBasicUNetConfig(arch="monai_basicunet")),
    "smp_unet_resnet18": ("small", lambda: SmpUnetConfig(arch="smp_unet", encoder="resnet18")),
    "unetseg_default": ("large", lambda: UNetConfig()),
    "smp_unet_resnet34": ("large", lambda: SmpUnetConfig(arch="smp_unet", encoder="resnet34")),
    "monai_basicunet_wide": (
        "large",
        lambda: MonaiBasicUNetConfig(arch="monai_basicunet", features=[64, 64, 128, 256, 512, 64]),
    ),
    "monai_unet_wide": ("large", lambda: MonaiUNetConfig(arch="monai_unet", channels=[32, 64, 128, 256, 512])),
}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(
    name: str, device: torch.device, amp: str, channels_last: bool, compile_: bool, min_s: float, batch: int = 4
) -> dict[str, Any]:
    """Every number of one model, in this process."""
    model = build_model(MODELS[name][1](), 1, 1).to(device)
    dtype = amp_dtype(amp, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    run = torch.compile(model) if compile_ else model
    loss_fn = build_loss(LossConfig(), 1)
    # PyTorch's default AdamW for every model alike (unetseg train uses the fused one: see isbi_race.py).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = rss_mib()
    out: dict[str, Any] = {"model": name, "group": MODELS[name][0], "params": count_parameters(model)}
    for size, n in ((256, batch), (512, max(batch // 2, 1))):
        x = torch.randn(n, 1, size, size, device=device).contiguous(memory_format=fmt)
        y = (torch.rand(n, size, size, device=device) > 0.5).float()

        def train_step(x: torch.Tensor = x, y: torch.Tensor = y) -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                loss = loss_fn(run(x), y)
            loss.backward()
            optimizer.step()

        seconds = time_steps(train_step, device, min_s=min_s)
        out[f"train_img_s_{size}"] = n / seconds
        if size == 256:
            flops = step_flops(model, x, y, loss_fn)
            out["train_flops_per_image_256"] = flops / n
            out["train_gflops_s_256"] = flops / seconds / 1e9
    model.eval()
    slice_ = torch.randn(1, 1, 512, 512, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode():

        def infer() -> None:
            with autocast(device, dtype):
                run(slice_)

        out["infer_img_s_512"] = 1 / time_steps(infer, device, min_s=min_s)
    if device.type == "cuda":
        out["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_mem_mib"] = rss_mib() - base_rss  # growth of the process's peak resident set
    sync(device)
    return out


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    peak = result["matmul_peak_gflops"]
    lines = [
        "# Throughput: unetseg against smp and MONAI U-Nets",
        "",
        f"{env.get('gpu') or env['cpu']}, {env['threads']} threads, torch {env['torch']}, {env['date']}; "
        f"amp {result['amp']} (computing in {result.get('peak_dtype', 'fp32')}), channels_last {result['channels_last']}, compile {result['compile']}. "
        f"Measured {result.get('peak_dtype', 'fp32')} matmul peak {peak:.0f} GFLOP/s. "
        f"Training: batch {result.get('batch', 4)} at 256x256, {max(result.get('batch', 4) // 2, 1)} at 512x512, "
        "Dice+CE loss, AdamW (PyTorch default, foreach). Inference: one whole 512x512 slice.",
        "",
        "| model | size class | params | train img/s 256 | train img/s 512 | infer img/s 512 | step GFLOP/s (% of peak) | peak memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["models"]:
        lines.append(
            f"| {r['model']} | {r['group']} | {r['params'] / 1e6:.2f} M | {r['train_img_s_256']:.2f} | {r['train_img_s_512']:.2f} "
            f"| {r['infer_img_s_512']:.2f} | {r['train_gflops_s_256']:.0f} ({100 * r['train_gflops_s_256'] / peak:.0f}%) | {r['peak_mem_mib']:.0f} |"
        )
    lines += ["", "Ratios (unetseg / peer, training img/s at 256 | at 512 | inference):", ""]
    for ours, group in (("unetseg_cpu", "small"), ("unetseg_default", "large")):
        mine = next((r for r in result["models"] if r["model"] == ours), None)
        if mine is None:
            continue
        for r in result["models"]:
            if r["group"] == group and r["model"] != ours:
                lines.append(
                    f"- {ours} / {r['model']}: {mine['train_img_s_256'] / r['train_img_s_256']:.2f} | "
                    f"{mine['train_img_s_512'] / r['train_img_s_512']:.2f} | {mine['infer_img_s_512'] / r['infer_img_s_512']:.2f}"
                )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--group", choices=["small", "large", "all"], default="all")
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ", ".join(MODELS))
    parser.add_argument("--batch", type=int, default=4, help="crops per step at 256x256 (half as many at 512x512)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing window per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: measure one model
    return parser


def child_args(args: argparse.Namespace) -> list[str]:
    """The settings a model's own process measures under (the model list stays here)."""
    child = [
        "--device",
        args.device,
        "--amp",
        args.amp,
        "--batch",
        str(args.batch),
        "--min-seconds",
        str(args.min_seconds),
    ]
    child += (["--threads", str(args.threads)] if args.threads else []) + (
        ["--channels-last"] if args.channels_last else []
    )
    return child + (["--compile"] if args.compile else [])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.one:
        print(
            json.dumps(
                measure(args.one, device, args.amp, args.channels_last, args.compile, args.min_seconds, args.batch)
            )
        )
        return {}
    names = args.models.split(",") if args.models else [n for n, (g, _) in MODELS.items() if args.group in ("all", g)]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    # A step under autocast runs its convolutions in the autocast dtype: judge it against that dtype's peak.
    # (On a CPU, bf16 only where it is native, as in training; fp16 never.)
    peak_dtype = amp_dtype(args.amp, device)
    peak_dtype = torch.float32 if peak_dtype is None else peak_dtype
    # cuDNN runs fp32 convolutions in TF32 by default: so does the peak's matmul (this process only measures the peak).
    tf32 = device.type == "cuda" and peak_dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak(device, peak_dtype)
    results = []
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, *child_args(args), "--one", name], capture_output=True, text=True, cwd=ROOT
        )
        if proc.returncode != 0:
            raise SystemExit(f"measuring {name} failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{name:22s} {r['params'] / 1e6:6.2f} M  train {r['train_img_s_256']:6.2f} img/s @256  {r['train_img_s_512']:6.2f} @512  "
            f"infer {r['infer_img_s_512']:6.2f} img/s  {r['train_gflops_s_256']:.0f} GFLOP/s",
            flush=True,
        )
    payload = {
        "environment": environment(device),
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "batch": args.batch,
        "peak_dtype": "tf32" if tf32 else precision_name(peak_dtype),
        "matmul_peak_gflops": peak / 1e9,
        "models": results,
    }
    write_results(args.out, "throughput", payload, markdown(payload))
    return payload


if __name__ == "__main__":
    main()
