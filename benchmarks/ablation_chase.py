"""The skip ablation on CHASE_DB1 retinal vessels (issue #34, item 2): which long skips the
planned vessel network can lose, and whether a full-resolution level-0 skip carries the 1-2 px
vessels, scored on the 8 test images inside the field of view.

One command, resumable (every step is reused when it was done before):

1. **The base** is the config ``unetseg init`` plans on CHASE's train split, planned exactly as
   the planning panel plans it (its own step: :meth:`planning_panel.Job.plan`, the same
   command, budget and name), once: it is kept as ``<out>/base.yaml`` and reused after, so the
   grid stays one grid when the planner changes later (delete it to plan again).
2. **The spec** is the standard skip ablation of that base as ``unetseg ablate --base`` writes it
   (:func:`unetseg.ablation.standard.base_spec_file`: the reference and its add, none, gated,
   shallow-only, deep-only and plain-encoder variants, 3 seeds, the base's 480 s turned once
   into a fixed crop budget on this machine) in ``<out>/ablation.yaml``, with:

   - ``evaluate``: the test images, masks and field-of-view masks, so every run is measured on
     the 8 test images inside the field of view (vessel Dice, boundary F1, clDice, thin-vessel
     recall) instead of a validation block;
   - no validation block: the planned config trains on all 20 images (``data.split.mode:
     none``), which ``base_spec_file`` would otherwise split for measuring; with a held-out set
     nothing needs holding back;
   - the two full-resolution variants (below);
   - checkpoints under ``--work`` (a cache outside the repository), results and report in
     ``--out``; both rewritten on every invocation, so a grid run from a frozen clone and its
     results copied here go on here.
3. **The runs**: ``unetseg ablate --config <out>/ablation.yaml`` (finished runs reused while
   their config is unchanged, interrupted ones resumed), then its report in ``--out``.

**The full-resolution variants.** The planned network (``init`` on CHASE, 2 CPU cores) has a
space-to-depth stem at 1/4 resolution, depth 5, base width 32 doubling per level: levels of
32, 64, 128, 256, 512 channels at 1/4 ... 1/64, concat skips at 1/4 ... 1/32, a pixel-shuffle
head back to full resolution, deep supervision on decoder levels 1-3. ``fullres`` is the same
network with the stem at full resolution: stem stride 1, depth 7, base width 8, so levels of 8,
16, 32, ..., 512 channels at 1/1 ... 1/64. Every planned level keeps its width at its
resolution; the two levels put in front are the U-Net's own (full and half resolution, the
doubling continued downwards: 8 and 16), with the planned level-0 skip mode, and the head is
then a 1x1 convolution. ``fullres-no-skip0`` is ``fullres`` without its level-0 skip (the
full-resolution one), every other skip kept. The schema counts deep-supervision heads from
decoder level 1 down, so no setting puts exactly the planned three heads at 1/8-1/32 on the
deeper network: both keep three heads (the same loss weights) on the three levels under level 0
(1/2, 1/4, 1/8). Both train under the grid's crop budget, not its seconds: on a CPU they cost
more per crop, which is the question's price, shown in the report's GFLOPs.

    python benchmarks/ablation_chase.py --workers 2                 # the grid (hours of CPU)
    python benchmarks/ablation_chase.py --quick                     # a smoke test of the pipeline
    python benchmarks/ablation_chase.py --seeds 0 --workers 2       # seed 0 of every variant first
    python benchmarks/ablation_chase.py --report-only

CHASE_DB1 is research-use data (``<panel>/chase_db1/SOURCE.md``): it is read in place, never
copied into the repository.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panel_data import ROOT, PanelSet, panel_sets
from planning_panel import Job

from unetseg.ablation.standard import SPEC_FILE, base_spec_file
from unetseg.atomic import replace_by_rename
from unetseg.config import Config, ConfigError, UNetConfig, load_config, read_yaml
from unetseg.models.unet import level_widths

PLAN_BUDGET_S = 480.0  # the planning panel's --budget (and init's default): what the planned config is for
BASE_FILE = "base.yaml"
HEADER = (
    "The CHASE_DB1 vessel ablation (issue #34), written by benchmarks/ablation_chase.py: the standard skip",
    "ablation of the config `unetseg init` plans on CHASE's train split, two full-resolution variants, measured",
    "on the test images inside the field of view. Run the script again to go on (it rewrites the folders below).",
    "The base trains on every training image, as planned: the held-out test images measure the runs.",
)


def plan_base(chase: PanelSet, out: Path, work: Path) -> Path:
    """``<out>/base.yaml``: the config the planning panel's ``init`` step plans on the train
    split, planned the first time and reused after."""
    base = out / BASE_FILE
    if base.is_file():
        return base
    job = Job(chase, "planned", 0, PLAN_BUDGET_S, work / "plan", out, threads=1, clock="cpu")
    job.dir.mkdir(parents=True, exist_ok=True)
    planned, text = job.plan()
    out.mkdir(parents=True, exist_ok=True)
    replace_by_rename(base, lambda tmp: tmp.write_text(text))
    print(f"planned {planned} (init's log: {job.log}); kept as {base}")
    return base


def full_resolution_variants(model: UNetConfig) -> list[dict[str, Any]]:
    """``fullres`` and ``fullres-no-skip0`` of a U-Net whose level 0 is at 1/stem_stride (see
    the module's note): every level kept at its resolution and width, levels in front down to
    full resolution."""
    extra = int(math.log2(model.stem_stride))
    if extra == 0:
        raise ConfigError("the base's level 0 is at full resolution already (model.stem_stride 1)")
    width = model.base_width / model.width_growth**extra
    widths = level_widths(model.depth + extra, round(width), model.width_growth, model.max_width)
    if width != round(width) or widths[extra:] != level_widths(
        model.depth, model.base_width, model.width_growth, model.max_width
    ):
        raise ConfigError(
            f"no full-resolution network keeps the base's widths at their resolutions: base_width {model.base_width} "
            f"/ width_growth {model.width_growth:g}^{extra} is {width:g}"
        )
    shape: dict[str, Any] = {
        "model.stem_stride": 1,
        "model.depth": model.depth + extra,
        "model.base_width": round(width),
    }
    if model.refine_width:
        shape["model.refine_width"] = 0  # a full-resolution stage after the head: the network ends there now
    if model.decoder_widths:
        shape["model.decoder_widths"] = widths[:extra] + list(model.decoder_widths)
    modes = model.skip_modes
    return [
        {"name": "fullres", "set": {**shape, "model.skips": [modes[0]] * extra + modes}},
        {"name": "fullres-no-skip0", "set": {**shape, "model.skips": ["none"] + [modes[0]] * (extra - 1) + modes}},
    ]


def _header(text: str) -> list[str]:
    """The comment lines a spec file opens with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def _rewrite(path: Path, header: list[str], tree: dict[str, Any], base: Path, out: Path, work: Path) -> None:
    """The spec file written whole (it is reused), its folders set to this invocation's: the
    base, the checkpoints under ``work``, the results in ``out``."""
    tree.update(base=str(base.absolute()), output_dir=str(work.absolute() / "runs"), results_dir=str(out.absolute()))
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(tree, sort_keys=False)
    replace_by_rename(path, lambda tmp: tmp.write_text(text))


def _place(spec: Path, base: Path, out: Path, work: Path) -> None:
    """An existing spec's folders set to this invocation's (a grid begun in another clone)."""
    _rewrite(spec, _header(spec.read_text()), read_yaml(spec, "ablation config"), base, out, work)


def _not_split(line: str) -> bool:
    """Whether a line of ``base_spec_file``'s is not the one about the validation block it keeps
    for a base that trains on every image (dropped here: the test images measure the runs)."""
    return "data.split.mode: none" not in line


def write_spec(
    chase: PanelSet, out: Path, work: Path, rate: Callable[[Config], tuple[float, str]] | None = None
) -> Path:
    """``<out>/ablation.yaml`` ready to run: the base planned, the standard spec written by
    ``base_spec_file`` (``rate`` times the crop budget, as there), the held-out test set with
    its field of view and the full-resolution variants added; each step reused when done."""
    if chase.fov is None:
        raise SystemExit(f"{chase.root}: no test/fov folder; the grid is scored inside the field of view")
    base = plan_base(chase, out, work)
    spec = out / SPEC_FILE
    if spec.is_file():
        _place(spec, base, out, work)  # base_spec_file refuses a spec of another base file
    spec, lines = base_spec_file(base, out, rate)
    for line in filter(_not_split, lines):
        print(line)
    tree = read_yaml(spec, "ablation config")
    header = _header(spec.read_text())
    if "evaluate" not in tree:  # written just now by base_spec_file
        header = [*HEADER, *filter(_not_split, header)]
        tree.pop("set", None)
    tree["evaluate"] = {"images": str(chase.test_images), "masks": str(chase.test_masks), "roi": str(chase.fov)}
    tree.setdefault("report", {})["images"] = False  # research licence: its pixels stay out of the committed report
    names = {variant["name"] for variant in tree["variants"]}
    model = load_config(base).model
    assert isinstance(model, UNetConfig)  # base_spec_file refuses any other
    tree["variants"] += [v for v in full_resolution_variants(model) if v["name"] not in names]
    _rewrite(spec, header, tree, base, out, work)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panel", type=Path, default=ROOT.parent / "shared" / "panel", help="holds chase_db1/")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "results" / "ablation_chase", help="results, report"
    )
    parser.add_argument(
        "--work", type=Path, default=Path.home() / ".cache" / "unetseg-ablation-chase", help="checkpoints, the plan"
    )
    parser.add_argument("--seeds", help="comma-separated seeds to run (default: the spec's 0,1,2)")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once")
    parser.add_argument("--quick", action="store_true", help="one seed, a tiny budget: a smoke test (under --work)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the stored results")
    args = parser.parse_args(argv)
    chase = panel_sets(args.panel, args.work / "data", ["chase"])["chase"]
    if not chase.train.is_dir():
        parser.error(f"{chase.root}: no CHASE_DB1 panel set there (pass --panel)")
    spec = args.out / SPEC_FILE
    if args.report_only:
        if not spec.is_file():
            parser.error(f"{spec}: no ablation written yet; run without --report-only first")
        _place(spec, args.out / BASE_FILE, args.out, args.work)
    else:
        spec = write_spec(chase, args.out, args.work)
    command = [sys.executable, "-m", "unetseg", "ablate", "--config", str(spec), "--workers", str(args.workers)]
    if args.seeds:
        command += ["--seeds", args.seeds]
    if args.quick:
        command.append("--quick")
    if args.report_only:
        command.append("--report-only")
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
