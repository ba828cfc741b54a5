"""Do short skips keep gradients informative? Measured on ISBI crops at initialisation and in
the first iterations.

- Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem"): move the
  input along a line ``x(t) = x0 + t d`` (``x0`` a real EM crop, ``d`` a random direction) and
  record the derivative of a fixed random read-out of the encoder's deepest feature with
  respect to ``t``. In a deep plain network that derivative looks like white noise (its
  autocorrelation falls to zero after one step of ``t``); residual blocks keep it correlated
  (brown noise); a looks-linear network is a linear map at init, so the derivative is
  constant. Measured for every block type at 1, 2, 4 and 8 blocks per level.
- Early gradient norms (the vanishing-gradient argument): train deep encoders for a few
  iterations on real crops and record the gradient norm of every encoder block, shallowest
  first. A plain stack should hand its shallow blocks much smaller gradients than a residual
  one.

Batch norm is calibrated on real crops and then frozen (evaluation mode) for the line
study, so that every point of the line sees the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from unetseg.config import LossConfig
from unetseg.data import find_pairs, read_image, read_mask
from unetseg.meter import QUIET, Meter
from unetseg.models import UNet
from unetseg.report.document import FigureBlock, Report, Table, write_report
from unetseg.training.losses import build_loss

# Each variant is one block type of the same builder; residual-type branches are not
# zero-initialised here, so that the measurement is of the architecture, not of that trick.
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"encoder": "plain"},
    "residual": {"encoder": "residual", "zero_init_residual": False},
    "preact": {"encoder": "preact", "zero_init_residual": False},
    "highway": {"encoder": "highway"},
    "dense": {"encoder": "dense"},
    "looks_linear": {"encoder": "plain", "act": "crelu", "init": "looks_linear"},
}


@dataclass(frozen=True)
class GradientStudy:
    """What to measure; the defaults are the README's run (about 6 minutes on 2 cores)."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    blocks: tuple[int, ...] = (1, 2, 4, 8)
    seeds: tuple[int, ...] = (0, 1, 2)
    depth: int = 4
    base_width: int = 8
    line_points: int = 256
    line_crop: int = 64
    norm_variants: tuple[str, ...] = ("plain", "residual")
    norm_blocks: int = 8
    norm_iterations: int = 20
    norm_crop: int = 128
    max_lag: int = 20


def build_encoder_net(variant: str, blocks: int, depth: int, base_width: int, seed: int) -> UNet:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    return UNet(
        1, 1, depth=depth, base_width=base_width, blocks_per_level=blocks, downsample="conv", **VARIANTS[variant]
    )


def load_crops(
    images: Path, masks: Path, label_map: dict[int, int] | None, size: int, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random ``size`` x ``size`` crops of the image/mask pairs in two folders:
    images (N, 1, H, W) and foreground masks (N, H, W)."""
    pairs = find_pairs(images, masks)
    if not pairs:
        raise ValueError(f"no image/mask pairs in {images} and {masks}")
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(count):
        sample = pairs[i % len(pairs)]
        image = read_image(sample.image, 1, "dtype", sample.page, sample.axis)[..., 0]
        mask = read_mask(sample.mask, label_map, sample.page, sample.axis)
        if min(image.shape) < size:
            raise ValueError(f"{sample.image} is smaller than the {size} px crop")
        r, c = rng.integers(0, image.shape[0] - size + 1), rng.integers(0, image.shape[1] - size + 1)
        xs.append(torch.from_numpy(np.ascontiguousarray(image[r : r + size, c : c + size])))
        ys.append(torch.from_numpy((mask[r : r + size, c : c + size] > 0).astype(np.float32)))
    return torch.stack(xs)[:, None], torch.stack(ys)


@torch.no_grad()
def calibrate_norms(model: torch.nn.Module, crops: torch.Tensor) -> None:
    """Set batch-norm running statistics to their exact average over ``crops``, then freeze."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    model.encoder(model.stem(crops))
    model.eval()


def line_gradients(model: UNet, x0: torch.Tensor, points: int, seed: int) -> np.ndarray:
    """d/dt of ``<r, encoder(x0 + t d)[-1]>`` at ``points`` values of ``t`` in [-1, 1]; ``r`` is
    random, mirrored over a CReLU feature's two halves like any layer that reads one."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(x0.shape, generator=gen)
    direction /= direction.std()
    t = torch.linspace(-1.0, 1.0, points, requires_grad=True)
    inputs = x0[None] + t[:, None, None, None] * direction[None]
    deepest = model.encoder(model.stem(inputs))[-1]
    readout = torch.randn(deepest.shape[1:], generator=gen)
    crelu = model.encoder.crelu_features[-1]
    if crelu is not None:  # a CReLU pair is read as w relu(z) - w relu(-z) = w z, as a looks-linear layer would
        first, count = crelu
        readout[first + count // 2 : first + count] = -readout[first : first + count // 2]
    (deepest * readout).sum().backward()  # samples are independent in eval mode: grad[i] = df(x(t_i))/dt
    return t.grad.detach().numpy().astype(np.float64)


def autocorrelation(g: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised autocorrelation of a signal at lags 0..max_lag; a constant signal (a linear
    network's gradient) is perfectly correlated: all ones."""
    centred = g - g.mean()
    var = float((centred**2).mean())
    if var <= 1e-12 * max(float((g**2).mean()), 1e-30):
        return np.ones(max_lag + 1)
    return np.array([float((centred[: len(g) - k] * centred[k:]).mean()) / var for k in range(max_lag + 1)])


def shattering(
    study: GradientStudy, images: Path, masks: Path, label_map: dict[int, int] | None, meter: Meter = QUIET
) -> list[dict[str, Any]]:
    crops, _ = load_crops(images, masks, label_map, study.line_crop, 17, seed=0)
    x0, calibration = crops[0], crops[1:]
    rows = []
    for variant in study.variants:
        for blocks in study.blocks:
            for seed in study.seeds:
                model = build_encoder_net(variant, blocks, study.depth, study.base_width, seed)
                calibrate_norms(model, calibration)
                g = line_gradients(model, x0, study.line_points, seed)
                ac = autocorrelation(g, study.max_lag)
                below = np.flatnonzero(ac < 0.5)
                rows.append(
                    {
                        "variant": variant,
                        "blocks": blocks,
                        "seed": seed,
                        "conv_layers": conv_layers(model.encoder),
                        "lag1": float(ac[1]),
                        "corr_length": int(below[0]) if below.size else study.max_lag + 1,
                        "autocorrelation": ac.tolist(),
                        "gradient": g.tolist(),
                    }
                )
                meter.advance()
    return rows


def conv_layers(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) for m in module.modules())


def encoder_blocks(model: UNet) -> list[torch.nn.Module]:
    return [block for stage in model.encoder.stages for block in stage.blocks]


def early_gradient_norms(
    study: GradientStudy, images: Path, masks: Path, label_map: dict[int, int] | None, meter: Meter = QUIET
) -> list[dict[str, Any]]:
    """Per encoder block (shallowest first), the gradient norm at each of the first iterations."""
    loss_fn = build_loss(LossConfig(), 1)
    rows = []
    for variant in study.norm_variants:
        for seed in study.seeds:
            model = build_encoder_net(variant, study.norm_blocks, study.depth, study.base_width, seed).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            data, targets = load_crops(
                images, masks, label_map, study.norm_crop, 4 * study.norm_iterations, seed=seed + 1
            )
            norms = []
            for it in range(study.norm_iterations):
                x, y = data[4 * it : 4 * it + 4], targets[4 * it : 4 * it + 4]
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                norms.append(
                    [
                        float(torch.sqrt(sum((p.grad**2).sum() for p in block.parameters() if p.grad is not None)))
                        for block in encoder_blocks(model)
                    ]
                )
                optimizer.step()
            rows.append({"variant": variant, "seed": seed, "norms": norms})
            meter.advance()
    return rows


# --------------------------------------------------------------------------- report


def _mean_by(rows: list[dict[str, Any]], key: str, variant: str, blocks: int) -> tuple[float, float]:
    values = [r[key] for r in rows if r["variant"] == variant and r["blocks"] == blocks]
    return float(np.mean(values)), float(np.std(values))


def _line_figure(rows: list[dict[str, Any]], study: GradientStudy) -> Figure:
    deepest = max(study.blocks)
    fig = Figure(figsize=(3.0 * len(study.variants), 2.6))
    axes = fig.subplots(1, len(study.variants), squeeze=False)[0]
    t = np.linspace(-1, 1, study.line_points)
    for ax, variant in zip(axes, study.variants):
        row = next(
            r for r in rows if r["variant"] == variant and r["blocks"] == deepest and r["seed"] == study.seeds[0]
        )
        g = np.asarray(row["gradient"])
        ax.plot(t, g / (np.abs(g).max() or 1.0), lw=0.8)
        ax.set_title(f"{variant}, {row['conv_layers']} conv", fontsize=9)
        ax.set_xlabel("t")
    axes[0].set_ylabel("df/dt (scaled)")
    fig.tight_layout()
    return fig


def _autocorr_figure(rows: list[dict[str, Any]], study: GradientStudy) -> Figure:
    fig = Figure(figsize=(3.0 * len(study.blocks), 2.8))
    axes = fig.subplots(1, len(study.blocks), squeeze=False)[0]
    for ax, blocks in zip(axes, study.blocks):
        for variant in study.variants:
            acs = np.array([r["autocorrelation"] for r in rows if r["variant"] == variant and r["blocks"] == blocks])
            ax.plot(acs.mean(0), label=variant)
        ax.set_title(f"{blocks} block(s) per level", fontsize=9)
        ax.set_xlabel("lag (steps of t)")
        ax.set_ylim(-0.3, 1.05)
    axes[0].set_ylabel("autocorrelation of df/dt")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _norm_figure(rows: list[dict[str, Any]], study: GradientStudy) -> Figure:
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.subplots()
    for variant in study.norm_variants:
        per_seed = np.array([np.mean(r["norms"], axis=0) for r in rows if r["variant"] == variant])
        mean = per_seed.mean(0)
        ax.semilogy(np.arange(len(mean)), mean, marker=".", label=variant)
        ax.fill_between(np.arange(len(mean)), per_seed.min(0), per_seed.max(0), alpha=0.2)
    ax.set_xlabel(f"encoder block (shallowest first, {study.norm_blocks} per level)")
    ax.set_ylabel(f"gradient norm, mean of first {study.norm_iterations} iterations")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def norm_ratios(rows: list[dict[str, Any]], study: GradientStudy) -> list[dict[str, Any]]:
    """Per variant: gradient norm of the shallowest block over the deepest, seed mean and range."""
    out = []
    for variant in study.norm_variants:
        ratios = []
        for r in rows:
            if r["variant"] == variant:
                mean = np.mean(r["norms"], axis=0)
                ratios.append(float(mean[0] / max(mean[-1], 1e-30)))
        out.append(
            {"variant": variant, "shallow_over_deep": float(np.mean(ratios)), "min": min(ratios), "max": max(ratios)}
        )
    return out


def analyze_gradients(
    images: Path,
    masks: Path,
    label_map: dict[int, int] | None,
    out_dir: Path,
    study: GradientStudy | None = None,
    meter: Meter = QUIET,
) -> dict[str, Path]:
    """Run both studies and write ``gradients.html/.md/.json`` under ``out_dir``; ``meter``
    counts the networks measured."""
    study = study or GradientStudy()
    images = Path(images)
    meter.expect(len(study.seeds) * (len(study.variants) * len(study.blocks) + len(study.norm_variants)))
    shattered = shattering(study, images, masks, label_map, meter)
    early = early_gradient_norms(study, images, masks, label_map, meter)
    ratios = norm_ratios(early, study)

    report = Report(
        "Short skips at initialisation: shattered gradients and early gradient norms",
        intro=f"Encoders of unetseg's U-Net builder (depth {study.depth}, width {study.base_width} doubling, strided "
        f"down-sampling), {len(study.seeds)} seeds each, on crops of {images}. Residual-type branches are not "
        "zero-initialised here, so the measurements are of the architectures, not of that initialisation.",
    )
    _shattering_section(report, shattered, study)
    _norm_section(report, early, ratios, study)
    data = {
        "study": study.__dict__,
        "shattering": [{k: v for k, v in r.items() if k != "gradient"} for r in shattered],
        "early_gradient_norms": early,
        "norm_ratios": ratios,
    }
    return write_report(report, out_dir, data, stem="gradients")


def _shattering_section(report: Report, shattered: list[dict[str, Any]], study: GradientStudy) -> None:
    sec = report.section("Shattered gradients (Balduzzi et al. 2017)")
    sec.blocks += [
        f"The input moves along a line x(t) = x0 + t d through a real {study.line_crop}x{study.line_crop} crop x0 "
        f"({study.line_points} points, t in [-1, 1]); df/dt is the derivative of a fixed random read-out of the deepest "
        "encoder feature. White noise (autocorrelation 0 at lag 1) means shattered gradients; a linear network gives "
        "a constant (autocorrelation 1).",
        Table(
            ["variant"]
            + [f"{b} blk/level: lag-1 autocorr." for b in study.blocks]
            + [f"{b} blk/level: corr. length" for b in study.blocks],
            [
                [v]
                + [_pm_str(*_mean_by(shattered, "lag1", v, b)) for b in study.blocks]
                + [_pm_str(*_mean_by(shattered, "corr_length", v, b), digits=1) for b in study.blocks]
                for v in study.variants
            ],
            "Mean +- std over seeds. Correlation length: first lag (in steps of t) where the autocorrelation drops below 0.5.",
        ),
        FigureBlock(
            "line_gradients",
            _line_figure(shattered, study),
            f"df/dt along the line, {max(study.blocks)} blocks per level, seed {study.seeds[0]}.",
        ),
        FigureBlock(
            "autocorrelation", _autocorr_figure(shattered, study), "Autocorrelation of df/dt, mean over seeds."
        ),
    ]


def _norm_section(
    report: Report, early: list[dict[str, Any]], ratios: list[dict[str, Any]], study: GradientStudy
) -> None:
    sec = report.section("Gradient norms in the first iterations")
    sec.blocks += [
        f"U-Nets with {study.norm_blocks} blocks per level trained for {study.norm_iterations} iterations on "
        f"{study.norm_crop}x{study.norm_crop} crops (batch 4, AdamW 1e-3, Dice + BCE); gradient norm of each encoder block.",
        Table(
            ["variant", "shallowest / deepest block gradient norm", "range over seeds"],
            [[r["variant"], r["shallow_over_deep"], f"{r['min']:.3g} - {r['max']:.3g}"] for r in ratios],
        ),
        FigureBlock(
            "early_gradient_norms",
            _norm_figure(early, study),
            "Gradient norm per encoder block (log scale), mean over the first iterations; band: range over seeds.",
        ),
    ]


def _pm_str(mean: float, std: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} +- {std:.{digits}f}"
