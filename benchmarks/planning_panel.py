"""The planning panel (issue #33): does ``unetseg init`` beat what a careful user would do
instead, on every kind of 2D dataset, in the same budget on the same machine?

For each dataset of :mod:`panel_data` and each seed, every method trains for ``--budget``
seconds of wall clock on this machine and segments the dataset's test images, which are then
scored here, outside the project (per-image Dice, inside the field of view where there is one):

- ``planned``: ``unetseg init DATA/train --budget B``, ``unetseg train --config it --yes``,
  ``unetseg predict DATA/test/images`` with the run's ``best.pt``: what a user types;
- screens (``planned:<name>``): the planned config with a few keys set otherwise
  (:data:`SCREENS`), the measurements behind the planner's rules;
- ``monai`` and ``smp``: the plain loops of ``panel_peers.py``;
- ``hand_tuned``: the shipped config tuned on that data, where there is one (ISBI: its final
  weights, since its validation slices are the panel's test slices).

Runs are resumable like the ablation: a finished run's ``result.json`` is reused while its key
(the written config, or the peer's settings, with the seed and budget) is unchanged, so a
killed or extended grid picks up where it stopped. Checkpoints and predictions stay under
``--work`` (outside the repository); results and the report go to ``--out``.

    python benchmarks/planning_panel.py --panel ../shared/panel --seeds 0          # screen
    python benchmarks/planning_panel.py --panel ../shared/panel --seeds 0,1,2      # the table
    python benchmarks/planning_panel.py --report-only
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panel_data import ROOT, PanelSet, panel_sets, score_folder

from unetseg.config import set_dotted
from unetseg.config.loading import normalised_config
from unetseg.metrics.stats import difference_ci
from unetseg.runtime import cpu_model

PEERS = ("monai", "smp")
METHODS = ("planned", *PEERS, "hand_tuned")
# Named variants of the planned config: each measures one rule of the planner (docs/your_data.md).
SCREENS: dict[str, list[str]] = {
    "scale1": ["data.scale=1.0"],
    "nophoto": ["augment.hue_saturation=0.0", "augment.gamma=0.0", "augment.stain=0.0"],
    # lines: the full-resolution network of configs/nuclei_cpu.yaml instead of the 1/4-resolution stem
    "fullres": ["model.stem_stride=1", "model.base_width=8", "model.depth=6", "model.deep_supervision=0"],
    # blobs: level 0 at 1/2 resolution with a sub-pixel head (MONAI's UNet strides its first convolution)
    "stem2": ["model.stem_stride=2", "model.head=shuffle"],
    # blobs: the anchor's full-resolution network (the planned one before the stem2 rule)
    "stem1": ["model.stem_stride=1", "model.head=transpose"],
    # the same, twice as wide and one level shallower: MONAI's 16..256 widths at 1/2..1/32
    "stem2w": ["model.stem_stride=2", "model.head=shuffle", "model.base_width=16", "model.depth=5"],
    # every image trains (no validation block), the final weights predict
    "all": ["data.split.mode=none"],
    # stem2, every image trains (no validation block), the final weights predict
    "stem2all": ["model.stem_stride=2", "model.head=shuffle", "data.split.mode=none"],
    # instance norm (nnU-Net's and MONAI UNet's default): statistics of each image, not of the batch
    "inorm": ["model.norm=instance"],
    # batch norm: the planned network before the instance-norm rule
    "bnorm": ["model.norm=batch"],
    # lines: no weight average (isbi_cpu's EMA 0.998 spans ~500 steps; a short run has ~900)
    "noema": ["train.ema=null"],
    # lines: no affine augmentation (rotation and scaling resample 1-2 px vessels), flips and rot90 only
    "noaffine": ["augment.affine.p=0"],
    # lines: no auxiliary deep-supervision heads (the MONAI loop has none)
    "nods": ["model.deep_supervision=0"],
    # lines: the MONAI loop's optimiser (AdamW 1e-3, torch's default decay 0.01) instead of isbi_cpu's 3e-3, 0.05
    "lr1e3": ["train.lr=0.001", "train.weight_decay=0.01"],
    # lines: MONAI's soft clDice term beside Dice + CE (topology: penalises breaks in thin vessels)
    "cldice": ["train.loss.lambda_cldice=0.5"],
    # test-time augmentation: the image and its three flips, averaged (prediction only: no training)
    "tta": ["inference.tta=flips"],
    # the planned config before rule 17: one prediction per image (its results are the earlier planned runs)
    "notta": ["inference.tta=none"],
    # framed objects (lesions) with the rule off: one factor for every image, the value the planner
    # wrote on the lesion photographs before the rule (256 / their smallest shorter side, 424 px)
    "uniform": ["data.short_side=null", "data.scale=0.604"],
    # framed objects at about the MONAI loop's size (256 px on the long side of a 4:3 frame), the
    # crop the whole shorter side
    "short192": ["data.short_side=192", "augment.crop_size=192"],
    # the MONAI loop's batch and rate (8 at AdamW 1e-3) instead of nuclei_cpu.yaml's 4 at 2e-3
    "b8": ["train.batch_size=8", "train.lr=0.001"],
    # blobs: isbi_cpu.yaml's weight average (0.998, about the last 500 steps) validated and saved
    "ema": ["train.ema=0.998"],
    # framed objects: the median frame whole (320 x 256 at a shorter side of 256; its shorter side
    # padded by reflection) instead of a 256 crop that leaves a fifth of its width out
    "frame": ["augment.crop_size=320"],
    # framed objects with rule 19 off: a 256 crop of the frame (the planned config before the rule)
    "crop256": ["augment.crop_size=256"],
    # rule 8 off: no brightness and contrast jitter where the images' brightness spreads widely
    "nobc": ["augment.brightness_contrast=0.0"],
    # framed objects (lesions: median frame 971x778): the frame at the photographs' loop's size, its longer
    # side 256 (256x205), one 256 crop holding it, instead of rule 18's shorter side of 256 (320x256)
    "long256": ["data.short_side=205", "augment.crop_size=256"],
    # rule 18 before 2026-12-07 (a shorter side of 256, rule 19's crop holding the frame), against the rule
    # that brings the median frame's longer side to 256: the lesions (971x778: 320x256 against 256x205)
    # and the polyp frames (1119x778: 368x256 against 256x178)
    "short256c320": ["data.short_side=256", "augment.crop_size=320"],
    "short256c368": ["data.short_side=256", "augment.crop_size=368"],
}
DISTURBED = 0.9  # a run whose training got less than this share of its threads' CPU time was slowed by other load
REFERENCE_CORES = 2  # --budget is seconds of a 2-core machine, the budget a user gives init here
STARVED = 0.8  # fewer crops than this share of the best-fed seed of the same method and data: starved by load
PEER_VERSION = 1  # bump when panel_peers.py changes what it trains (not bumped for the batch-wide turn of whole
# photographs: no run of that mode had finished before it)
# Bumped when the post-processing choice changes what it chooses from the same checkpoint (2: on
# the validation images predicted as `predict` predicts, TTA included). A stored result of a
# config that chooses (`train.postprocess: choose`) is then re-predicted from its checkpoint,
# choice made again, not retrained.
POSTPROCESS_CHOICE = 2
PREDICT_FLAGS = ("tta",)  # inference.* that only predict uses (validation in training predicts without TTA)
TRAINING = (
    "process_s",
    "cpu_share",
    "machine",
    "epochs",
    "crops",
    "train_s",
    "crops_per_s",
    "best_val_dice",
    "checkpoint",
)  # a run's training numbers, copied into a result that re-predicts its checkpoint


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        proc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[2] if len(command) > 2 else command[0]} failed; see {log}")


def _cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    _run([sys.executable, "-m", "unetseg", *args], log, env)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _training_numbers(run_dir: Path) -> dict[str, Any]:
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    crops = sum(int(r["train_images"]) for r in rows)
    seconds = sum(int(r["train_images"]) / float(r["train_img_per_s"]) for r in rows if float(r["train_img_per_s"]) > 0)
    val = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    return {
        "epochs": len(rows),
        "crops": crops,
        "train_s": round(seconds, 1),
        "crops_per_s": round(crops / seconds, 2) if seconds else None,
        "best_val_dice": max(val) if val else None,
    }


SHIPPED_DATA = re.compile(r"^/.+?/(data/(?:isbi2012|dsb2018_nuclei)(?:/.*)?)$")  # the data/ this repository ships


def _values(text: str) -> Any:
    """A written config's values, without its comments: re-planning the same data with reworded
    reasons (or on another day) keys alike; a changed value does not. Paths inside this checkout
    are keyed from its root, so a grid run from a frozen clone is reused by the next clone."""

    def relative(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: relative(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith(str(ROOT) + os.sep):
            return "<repo>" + value[len(str(ROOT)) :]
        if isinstance(value, str) and SHIPPED_DATA.search(value):  # another clone's copy of the shipped data
            inside = SHIPPED_DATA.search(value).group(1)
            return "<repo>/" + inside if (ROOT / inside).exists() else value
        return value

    return relative(yaml.safe_load(text))


def _effective(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """What a run trained: the config's values with its ``--set`` overrides applied, read with
    the schema's defaults (a key written at its default value is the same run as one left out),
    without the run's name and folder (which say which method ran it, not what ran), and without
    the validation settings when nothing validates (``data.split.mode: none``): they have no effect."""
    tree = json.loads(json.dumps(values))
    for item in overrides:
        key, _, raw = item.partition("=")
        set_dotted(tree, key, yaml.safe_load(raw))
    tree = normalised_config(tree) or tree
    tree.pop("name", None)
    tree.pop("output_dir", None)
    if tree.get("data", {}).get("split", {}).get("mode") == "none":
        tree["data"]["split"] = {"mode": "none"}
        for key in ("val_every", "monitor", "postprocess"):
            tree.get("train", {}).pop(key, None)
    return tree


def _stored_key(result: dict[str, Any]) -> str | None:
    """The key of a stored result, recomputed from what it ran (its own ``key`` for a peer)."""
    if "config" not in result:
        return result.get("key")
    effective = _effective(_values(result["config"]), result["overrides"])
    choice = result.get("postprocess_choice", 1)  # results from before the field chose the first way
    return _digest(_keyed(result["dataset"], result["seed"], result["budget_s"], effective, choice))


def _chooses(effective: dict[str, Any]) -> bool:
    return effective.get("train", {}).get("postprocess") == "choose"


def _keyed(
    dataset: str, seed: int, budget: float, effective: dict[str, Any], choice: int = POSTPROCESS_CHOICE
) -> dict[str, Any]:
    """What a unetseg run's result key is made from: with how its post-processing was chosen,
    where the config chooses one (the first way adds nothing, so keys made before stay)."""
    made = {"dataset": dataset, "seed": seed, "budget": budget, "config": effective}
    return {**made, "postprocess_choice": choice} if _chooses(effective) and choice > 1 else made


def _training_part(tree: dict[str, Any]) -> dict[str, Any]:
    """What decides the trained weights and the checkpoint kept: the effective config without the
    inference settings only ``predict`` uses (two runs alike here differ only in how their test
    images are predicted; mode, windows and threshold also score validation, so they count)."""
    inference = {k: v for k, v in tree.get("inference", {}).items() if k not in PREDICT_FLAGS}
    return {**tree, "inference": inference}


def _stored_training_key(result: dict[str, Any]) -> str | None:
    if "config" not in result:
        return None
    made = {"dataset": result["dataset"], "seed": result["seed"], "budget": result["budget_s"]}
    made.update(config=_training_part(_effective(_values(result["config"]), result["overrides"])))
    return _digest(made)


class Job:
    """One (dataset, method, seed) run of the panel."""

    def __init__(
        self,
        panel_set: PanelSet,
        method: str,
        seed: int,
        budget: float,
        work: Path,
        out: Path,
        threads: int,
        clock: str,
    ) -> None:
        self.set, self.method, self.seed, self.budget = panel_set, method, seed, budget
        self.threads, self.clock = threads, clock
        # The run's own budget: on the CPU clock, the CPU seconds of `budget` on REFERENCE_CORES, per thread.
        self.run_budget = budget * REFERENCE_CORES / threads if clock == "cpu" else budget
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        tag = method.replace(":", "-")
        self.dir = work / panel_set.name / tag / f"seed{seed}"
        self.out = out
        self.result_path = out / "runs" / panel_set.name / tag / f"seed{seed}.json"
        self.log = self.dir / "log.txt"

    def applies(self) -> bool:
        return self.method != "hand_tuned" or self.set.hand_tuned is not None

    def stored(self, key: str) -> dict[str, Any] | None:
        """The stored result, if it was made from what this job would run now; for a planned or
        screened config, also another method's run of the very same config (a screen whose rule
        the planner then adopted is the planned run), marked ``reused_from``."""
        if self.result_path.exists():
            result = json.loads(self.result_path.read_text())
            if _stored_key(result) == key:
                return result
        if self.method in PEERS:
            return None
        for path in sorted(self.result_path.parents[1].glob(f"*/seed{self.seed}.json")):
            other = json.loads(path.read_text())
            if path != self.result_path and other["method"] not in PEERS and _stored_key(other) == key:
                reused = {**other, "method": self.method, "reused_from": other["method"]}
                reused["trained_by"] = other.get("trained_by") or other.get("reused_from") or other["method"]
                self.result_path.parent.mkdir(parents=True, exist_ok=True)
                self.result_path.write_text(json.dumps(reused, indent=2) + "\n")
                run = self.dir.parent.parent / other["method"].replace(":", "-") / self.dir.name / "run"
                checkpoint = run / "checkpoints" / other.get("checkpoint", "best.pt")
                if self.method == "planned" and self.seed == 0 and checkpoint.exists():
                    self.dir.mkdir(parents=True, exist_ok=True)
                    self._failure_report(checkpoint)
                return reused
        return None

    # -- the methods --------------------------------------------------------------------------
    def plan(self) -> tuple[Path, str]:
        config = self.dir / "planned.yaml"
        _cli(
            [
                "init",
                str(self.set.train),
                "--out",
                str(config),
                "--budget",
                f"{self.budget:g}",
                "--name",
                f"{self.set.name}_planned",
                "--output-dir",
                str(self.dir / "run"),
                "--overwrite",
            ],
            self.log,
            self.env,
        )
        return config, config.read_text()

    def _overrides(self) -> list[str]:
        overrides = [
            f"seed={self.seed}",
            f"train.threads={self.threads}",
            f"train.budget_clock={self.clock}",
            f"train.max_time_s={self.run_budget:g}",
        ]
        if self.method.startswith("planned:"):
            overrides += SCREENS[self.method.split(":", 1)[1]]
        return overrides

    def key(self) -> tuple[str, dict[str, Any]]:
        """The key a stored result must carry to be reused, and what it was made from."""
        base: dict[str, Any] = {"dataset": self.set.name, "seed": self.seed, "budget": self.budget}
        if self.method in PEERS:
            base.update(
                peer=self.method,
                version=PEER_VERSION,
                resize=self.set.photographs,
                threads=self.threads,
                clock=self.clock,
                run_budget=self.run_budget,
            )
            return _digest(base), {"peer": self.method}
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        if self.method == "hand_tuned":
            assert self.set.hand_tuned is not None
            text = (ROOT / self.set.hand_tuned).read_text()
            config = ROOT / self.set.hand_tuned
        else:
            config, text = self.plan()
        effective = _effective(_values(text), self._overrides())
        made = {"config_path": str(config), "config": text, "overrides": self._overrides()}
        made["_training_key"] = _digest({**base, "config": _training_part(effective)})
        made["_predict"] = {k: v for k, v in effective.get("inference", {}).items() if k in PREDICT_FLAGS}
        made["_chooses"] = _chooses(effective)
        return _digest(_keyed(self.set.name, self.seed, self.budget, effective)), made

    def _train_unetseg(self, config: Path) -> dict[str, Any]:
        run_dir = self.dir / "run"
        # a folder here is a run killed before it finished (a stop, a crash): it restarts from
        # nothing, since resuming would mix two processes' clocks into one budget; a finished run
        # of an earlier config (its result stored) is kept beside, as another config may re-predict it
        if self.result_path.exists() and run_dir.exists():
            earlier = self.dir / f"run-{json.loads(self.result_path.read_text()).get('key', 'earlier')}"
            shutil.rmtree(earlier, ignore_errors=True)
            run_dir.rename(earlier)
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = [arg for item in self._overrides() for arg in ("--set", item)]
        start, cpu = time.perf_counter(), _children_cpu()
        _cli(["train", "--config", str(config), "--out", str(run_dir), "--yes", *sets], self.log, self.env)
        wall = time.perf_counter() - start
        numbers = {
            "process_s": round(wall, 1),
            "cpu_share": round((_children_cpu() - cpu) / (wall * self.threads), 3),
            **_training_numbers(run_dir),
        }
        final_only = self.method == "hand_tuned" and self.set.name == "isbi"  # its validation = the test slices
        checkpoint = run_dir / "checkpoints" / ("last.pt" if final_only else "best.pt")
        numbers["checkpoint"] = checkpoint.name
        start = time.perf_counter()
        self._predict(checkpoint, self.dir / "pred")
        numbers["predict_s"] = round(time.perf_counter() - start, 1)
        if self.method == "planned" and self.seed == 0:
            self._failure_report(checkpoint)
        chosen = run_dir / "postprocessing.json"
        if chosen.exists() and any(json.loads(chosen.read_text())["chosen"].values()):
            raw = self.dir / "pred_raw"
            self._predict(checkpoint, raw, "--no-postprocess")
            numbers["postprocess"] = json.loads(chosen.read_text())
            numbers["dice_without_postprocess"] = score_folder(self.set, raw)["dice"]
        return numbers

    def trained(self, training_key: str) -> tuple[dict[str, Any], Path] | None:
        """A stored unetseg run of this dataset and seed that trained exactly these weights, and a
        checkpoint under ``--work`` whose embedded config is that training (checked, not taken from
        the folder's name: a folder may hold an older run of another config): a change of
        prediction settings (a test-time-augmentation screen, a rule that sets them) re-predicts
        instead of retraining."""
        for path in [self.result_path, *sorted(self.result_path.parents[1].glob(f"*/seed{self.seed}.json"))]:
            other = json.loads(path.read_text()) if path.exists() else {}
            if other.get("method", "peer") in PEERS or _stored_training_key(other) != training_key:
                continue
            named = (other.get("trained_by") or other.get("reused_from") or other["method"]).replace(":", "-")
            folders = [named, *sorted(p.name for p in self.dir.parent.parent.iterdir() if p.name != named)]
            for folder in folders:
                seed_dir = self.dir.parent.parent / folder / self.dir.name
                for run in [seed_dir / "run", *sorted(seed_dir.glob("run-*"))]:  # run-*: earlier configs' runs
                    checkpoint = run / "checkpoints" / other["checkpoint"]
                    if checkpoint.exists() and self._checkpoint_training_key(checkpoint) == training_key:
                        return other, checkpoint
        return None

    def _checkpoint_training_key(self, checkpoint: Path) -> str:
        """The training key of the config a checkpoint embeds (as run, overrides applied)."""
        import torch

        config = torch.load(checkpoint, map_location="cpu", weights_only=False)["config"]
        config.get("inference", {}).pop("postprocess", None)  # chosen after training, written into best.pt
        made = {"dataset": self.set.name, "seed": self.seed, "budget": self.budget}
        return _digest({**made, "config": _training_part(_effective(_values(yaml.safe_dump(config)), []))})

    def _repredict(
        self, donor: dict[str, Any], checkpoint: Path, settings: dict[str, Any], chooses: bool
    ) -> dict[str, Any]:
        """The donor's training numbers, and its checkpoint's predictions under ``settings``; for
        a config that chooses its post-processing, chosen again first where the checkpoint's
        choice is older than ``POSTPROCESS_CHOICE`` (``unetseg postprocess``, as a user would)."""
        flags = [arg for key, value in settings.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
        self.dir.mkdir(parents=True, exist_ok=True)
        numbers = {k: donor[k] for k in (*TRAINING, "started", "load_average_start", "load_average_end") if k in donor}
        numbers["trained_by"] = donor.get("trained_by", donor.get("reused_from", donor["method"]))
        record = checkpoint.parent.parent / "postprocessing.json"
        chosen = json.loads(record.read_text()) if chooses and record.exists() else None
        if chosen is not None and "predicted_with" not in chosen:  # chosen on validation's predictions without TTA
            _cli(["postprocess", "--checkpoint", str(checkpoint)], self.log, self.env)
            chosen = json.loads(record.read_text())
        start = time.perf_counter()
        self._predict(checkpoint, self.dir / "pred", *flags)
        numbers["predict_s"] = round(time.perf_counter() - start, 1)
        if self.method == "planned" and self.seed == 0:
            self._failure_report(checkpoint)
        if chosen is not None and any(chosen["chosen"].values()):
            self._predict(checkpoint, self.dir / "pred_raw", *flags, "--no-postprocess")
            numbers["postprocess"] = chosen
            numbers["dice_without_postprocess"] = score_folder(self.set, self.dir / "pred_raw")["dice"]
        return numbers

    def _predict(self, checkpoint: Path, out: Path, *flags: str) -> None:
        """``unetseg predict`` on the test images, as a user runs it."""
        args = ["predict", str(self.set.test_images), "--checkpoint", str(checkpoint), "--out", str(out)]
        _cli([*args, "--overwrite", *flags], self.log, self.env)

    def _failure_report(self, checkpoint: Path) -> None:
        """``unetseg evaluate --report`` on the test images: the worst images, as a person looks."""
        page = self.out / "reports" / f"{self.set.name}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.unlink(missing_ok=True)
        test = self.set.test_images.parent
        args = ["evaluate", "--checkpoint", str(checkpoint), "--images", str(test / "images")]
        _cli([*args, "--masks", str(test / "masks"), "--report", str(page)], self.log, self.env)

    def _train_peer(self) -> dict[str, Any]:
        numbers = self.dir / "peer.json"
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "panel_peers.py"),
            "--arch",
            self.method,
            "--train",
            str(self.set.train),
            "--test",
            str(self.set.test_images),
            "--out",
            str(self.dir / "pred"),
            "--seed",
            str(self.seed),
            "--budget",
            f"{self.run_budget:g}",
            "--threads",
            str(self.threads),
            "--clock",
            self.clock,
            "--json",
            str(numbers),
        ]
        command += ["--foreground-zero"] * self.set.foreground_zero + ["--resize"] * self.set.photographs
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        _run(command, self.log, self.env)
        return json.loads(numbers.read_text())

    def run(self, reuse: bool = True) -> dict[str, Any]:
        key, made_from = self.key()
        stored = self.stored(key) if reuse else None
        if stored is not None:
            return stored
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        load = [round(v, 2) for v in os.getloadavg()]
        donor = self.trained(made_from["_training_key"]) if reuse and self.method not in PEERS else None
        if donor is not None:
            numbers = self._repredict(*donor, made_from["_predict"], made_from["_chooses"])
        else:  # trained here: the budget is seconds of this machine, so the result names it
            peer = self.method in PEERS
            numbers = self._train_peer() if peer else self._train_unetseg(Path(made_from["config_path"]))
            numbers["machine"] = cpu_model()
        result = {
            "key": key,
            "dataset": self.set.name,
            "method": self.method,
            "seed": self.seed,
            "budget_s": self.budget,
            "threads": self.threads,
            "clock": self.clock,
            "run_budget_s": self.run_budget,
            "started": started,
            "load_average_start": load,
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
            **numbers,
            **score_folder(self.set, self.dir / "pred"),
            **{k: v for k, v in made_from.items() if k != "config_path" and not k.startswith("_")},
        }
        if made_from.get("_chooses"):
            result["postprocess_choice"] = POSTPROCESS_CHOICE
        self.result_path.parent.mkdir(parents=True, exist_ok=True)
        self.result_path.write_text(json.dumps(result, indent=2) + "\n")
        return result


def collect(out: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every stored result under ``out/runs``: dataset -> method -> results by seed."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for path in sorted((out / "runs").glob("*/*/seed*.json")):
        result = json.loads(path.read_text())
        table.setdefault(result["dataset"], {}).setdefault(result["method"], []).append(result)
    for methods in table.values():
        for results in methods.values():
            results.sort(key=lambda r: r["seed"])
    return table


def starved(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of one method on one dataset that trained under ``STARVED`` of the crops its
    best-fed seed trained. The CPU clock keeps other load from taking a run's CPU seconds, but
    not from slowing them: with four one-thread runs on this 2-core machine a MONAI loop made
    about 27 % fewer crops in its 960 CPU seconds than with two (CHASE 6,496 against 9,064), the
    planned networks 7-13 % fewer. Such a seed measures the load, and is set aside and rerun.
    Seeds are weighed against those trained on the same CPU: another one does more or less in a
    second whatever the load (the planned lesion network: ~10,100 crops on the AMD EPYC, 15,156
    on the Intel Xeon)."""
    most: dict[str, int] = {}
    for r in results:
        if r.get("crops"):
            most[r.get("machine", "?")] = max(most.get(r.get("machine", "?"), 0), r["crops"])
    return [r for r in results if r.get("crops") and r["crops"] < STARVED * most[r.get("machine", "?")]]


def set_aside_starved(out: Path) -> list[Path]:
    """Rename every starved run's JSON to ``starved-seed<k>.json`` (kept as a record, no longer
    collected), so that the next invocation reruns that seed."""
    moved = []
    for methods in collect(out).values():
        for results in methods.values():
            for result in starved(results):
                training = _stored_training_key(result)
                for path in sorted((out / "runs" / result["dataset"]).glob(f"*/seed{result['seed']}.json")):
                    other = json.loads(path.read_text())
                    same = other["method"] == result["method"] or (training and _stored_training_key(other) == training)
                    if same:  # the run itself, and every re-predicted or reused copy of its weights
                        record, n = path.with_name(f"starved-{path.name}"), 1
                        while record.exists():
                            record, n = path.with_name(f"starved-{path.stem}-{n}.json"), n + 1
                        path.rename(record)
                        moved.append(path)
    return moved


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _share(results: list[dict[str, Any]]) -> str:
    """The lowest CPU share of the runs, starred when other load slowed a wall-clock one down
    (a run on the CPU clock got its CPU seconds whatever the load: its share only says how
    long it waited)."""
    shares = [r["cpu_share"] for r in results if r.get("cpu_share") is not None]
    if not shares:
        return "-"
    on_wall = [r["cpu_share"] for r in results if r.get("cpu_share") is not None and r.get("clock") != "cpu"]
    return f"{min(shares):.2f}" + (" *" if on_wall and min(on_wall) < DISTURBED else "")


def _against_peer(table: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """Planned against the best peer of each dataset, with the interval the seeds and the test
    images leave on the difference: a mean ahead or behind by less than that is not resolved."""
    lines = [
        "",
        "## Planned against the best peer",
        "",
        "Difference of the mean test Dice (planned minus the peer with the higher mean), with a 95 % bootstrap",
        "interval that resamples the test images together and each method's seeds on their own",
        "(`unetseg.metrics.stats.difference_ci`); images ahead: test images on which the planned config's",
        "mean over its seeds is higher.",
        "",
        "| dataset | best peer | planned − peer [95 % CI] | images ahead |",
        "|---|---|---|---|",
    ]
    for dataset in sorted(table):
        methods = table[dataset]
        peers = [m for m in PEERS if m in methods]
        if "planned" not in methods or not peers:
            continue
        if not all(r.get("per_image") for m in ("planned", *peers) for r in methods[m]):
            continue  # a result without per-image scores (an early run) cannot be paired by image
        peer = max(peers, key=lambda m: _mean([r["dice"] for r in methods[m]]))
        names = sorted(set.intersection(*(set(r["per_image"]) for r in methods["planned"] + methods[peer])))
        grid = {m: np.array([[r["per_image"][n] for n in names] for r in methods[m]]) for m in ("planned", peer)}
        diff, lo, hi = difference_ci(grid["planned"], grid[peer])
        ahead = int((grid["planned"].mean(axis=0) > grid[peer].mean(axis=0)).sum())
        lines.append(f"| {dataset} | {peer} | {diff:+.4f} [{lo:+.4f}, {hi:+.4f}] | {ahead} of {len(names)} |")
    return lines


def _machines(results: list[dict[str, Any]]) -> str:
    """The CPUs the seeds trained on, short, in seed order where they differ."""
    names = [re.sub(r"\(R\)|Processor|CPU|\s+\d+-Core.*", "", r.get("machine", "?")).strip() for r in results]
    return names[0] if len(set(names)) == 1 else " / ".join(names)


def report(out: Path) -> dict[str, Any]:
    """``panel.json`` (dataset -> method -> per-seed test Dice) and ``panel.md``."""
    table = collect(out)
    panel = {d: {m: [r["dice"] for r in rs] for m, rs in methods.items()} for d, methods in table.items()}
    (out / "panel.json").write_text(json.dumps(panel, indent=2, sort_keys=True) + "\n")
    lines = [
        "# The planning panel",
        "",
        "Test Dice (mean of per-image Dice; CHASE inside the field of view; DSB x4 scored on the original",
        "pixels). Every run gets the same training budget on the same machine: by default one thread and",
        f"the CPU time of `--budget` seconds on {REFERENCE_CORES} cores (train.budget_clock: cpu), so other load",
        "cannot eat into it. Regenerate with `python benchmarks/planning_panel.py --report-only`; the runs are in",
        "`runs/`. CPU share: the training process's CPU time over its wall time x its threads (lowest of the",
        f"seeds); * below {DISTURBED} on a wall-clock budget: other load slowed the run, which is rerun before it "
        "counts (on the CPU clock a low share only means the run waited). (starved): fewer than "
        f"{STARVED:g} of the crops of the method's best-fed seed on the data and CPU: too many runs at once slowed its CPU "
        "seconds; `--set-aside-starved` moves it to `starved-seed<k>.json` and the next invocation reruns it. "
        "Trained on: the CPU of each seed's training (a budget in seconds buys more crops on a faster one, so "
        "methods are compared on one machine; `--again` trains a finished run anew on this one).",
        "",
        "| dataset | method | seeds | Dice (mean) | per seed | worst image | train s | crops | crops/s | CPU share | trained on |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    for dataset in sorted(table):
        methods = table[dataset]
        for method in sorted(methods, key=lambda m: (order.get(m.split(":")[0], 9), m)):
            rs = methods[method]
            dices, hungry = [r["dice"] for r in rs], [r["seed"] for r in starved(rs)]
            seeds = " / ".join(f"{r['dice']:.4f}" + (" (starved)" if r["seed"] in hungry else "") for r in rs)
            lines.append(
                f"| {dataset} | {method} | {','.join(str(r['seed']) for r in rs)} | {_mean(dices):.4f} | "
                f"{seeds} | {min(r['worst'] for r in rs):.3f} | "
                f"{_mean([r['train_s'] for r in rs]):.0f} | {_mean([r['crops'] for r in rs]):.0f} | "
                f"{_mean([r['crops_per_s'] or 0 for r in rs]):.1f} | {_share(rs)} | {_machines(rs)} |"
            )
    lines += _against_peer(table)
    aside = [json.loads(path.read_text()) for path in sorted((out / "runs").glob("*/*/starved-seed*.json"))]
    if aside:
        lines += [
            "",
            "## Set aside: starved by load, rerun",
            "",
            "| dataset | method | seed | Dice | crops |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {r['dataset']} | {r['method']} | {r['seed']} | {r['dice']:.4f} | {r['crops']} |" for r in aside]
    lines += ["", "## Configs", ""]
    for dataset in sorted(table):
        for method, rs in sorted(table[dataset].items()):
            if "config" in rs[0]:
                overrides = " ".join(f"--set {o}" for o in rs[0]["overrides"])
                lines += [
                    f"<details><summary>{dataset} / {method} ({overrides})</summary>",
                    "",
                    "```yaml",
                    rs[0]["config"].rstrip(),
                    "```",
                    "</details>",
                    "",
                ]
    (out / "panel.md").write_text("\n".join(lines) + "\n")
    return panel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panel", type=Path, default=ROOT.parent / "shared" / "panel", help="CHASE_DB1 and MoNuSeg")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "unetseg-panel", help="runs, made data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "planning_panel")
    parser.add_argument("--datasets", default="isbi,dsb,dsb_x4,chase,monuseg,lesions,polyps,ultrasound")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"of {METHODS} and planned:<screen>")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of training on a 2-core machine")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (run two lanes on 2 cores)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: the budget in CPU time, which other load cannot take (only slow: see STARVED)",
    )
    parser.add_argument("--order", choices=("seed", "dataset"), default="seed", help="run all of seed 0 first, or")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--again", action="store_true", help="train finished runs anew (on this machine) and replace their results"
    )
    parser.add_argument(
        "--set-aside-starved", action="store_true", help="rename starved runs' JSON so they are rerun, then report"
    )
    args = parser.parse_args(argv)
    if args.set_aside_starved:
        for path in set_aside_starved(args.out):
            print(f"set aside {path.relative_to(args.out)}: starved by load; the next invocation reruns it")
    if args.report_only or args.set_aside_starved:
        report(args.out)
        return
    names = [n for n in args.datasets.split(",") if n]
    sets = panel_sets(args.panel, args.work / "data", names)
    methods = [m for m in args.methods.split(",") if m]
    for method in methods:
        if method not in METHODS and not (method.startswith("planned:") and method.split(":", 1)[1] in SCREENS):
            parser.error(f"unknown method {method!r}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        Job(sets[d], m, s, args.budget, args.work / "runs", args.out, args.threads, args.clock)
        for s in seeds
        for d in names
        for m in methods
    ]
    if args.order == "dataset":
        jobs.sort(key=lambda j: (names.index(j.set.name), j.seed))
    for job in jobs:
        if not job.applies():
            continue
        print(f"{time.strftime('%H:%M:%S')} {job.set.name} {job.method} seed {job.seed}", flush=True)
        try:
            result = job.run(reuse=not args.again)
        except (RuntimeError, FileNotFoundError) as err:
            print(f"  failed: {err}", flush=True)
            continue
        print(f"  Dice {result['dice']:.4f} (worst {result['worst']:.3f}), {result['crops']} crops", flush=True)
        report(args.out)


if __name__ == "__main__":
    main()
