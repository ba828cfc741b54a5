"""The CHASE_DB1 vessel ablation's script (benchmarks/ablation_chase.py) on a generated stand-in
for the licensed set: the full-resolution variants' shape, and the spec it writes (planned by
``unetseg init``, the standard variants, the held-out test set inside the field of view),
written once and reused. Nothing trains here."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from layout_helpers import lines_pairs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation_chase
from panel_data import PanelSet
from planning_panel import Job

from unetseg.ablation.spec import load_spec, variant_config
from unetseg.config import ConfigError, UNetConfig
from unetseg.models.unet import level_widths

STANDARD = ["concat", "add", "none", "gated", "shallow-only", "deep-only", "plain-encoder"]


def test_the_full_resolution_variants_keep_every_planned_level_at_its_resolution_and_width():
    planned = UNetConfig(stem_stride=4, head="shuffle", depth=5, base_width=32, deep_supervision=3)
    fullres, no_skip0 = ablation_chase.full_resolution_variants(planned)
    assert fullres == {
        "name": "fullres",
        "set": {
            "model.stem_stride": 1,
            "model.depth": 7,
            "model.base_width": 8,
            "model.skips": ["concat"] * 6,
        },
    }
    assert no_skip0["name"] == "fullres-no-skip0" and no_skip0["set"]["model.skips"] == ["none"] + ["concat"] * 5
    # levels 2-6 (1/4 ... 1/64) are the planned levels 0-4, with two levels in front
    assert level_widths(7, 8, 2.0) == [8, 16] + level_widths(5, 32, 2.0)
    half = UNetConfig(stem_stride=2, depth=4, base_width=16, skips=["gated", "concat", "none"], refine_width=8)
    fullres, no_skip0 = ablation_chase.full_resolution_variants(half)
    assert fullres["set"]["model.skips"] == ["gated", "gated", "concat", "none"]
    assert no_skip0["set"]["model.skips"] == ["none", "gated", "concat", "none"]
    assert fullres["set"]["model.refine_width"] == 0
    with pytest.raises(ConfigError, match="at full resolution already"):
        ablation_chase.full_resolution_variants(UNetConfig(stem_stride=1))
    with pytest.raises(ConfigError, match="base_width 30 / width_growth 2"):
        ablation_chase.full_resolution_variants(UNetConfig(stem_stride=4, base_width=30))


def _chase_like(root: Path) -> PanelSet:
    """CHASE's layout with tiny generated vessel images: train and test pairs, test/fov."""
    lines_pairs(root / "train", n=4, size=96, seed=1)
    images, _ = lines_pairs(root / "test", n=2, size=96, seed=2)
    fov = np.zeros((96, 96), np.uint8)
    cv2.circle(fov, (48, 48), 44, 255, -1)
    (root / "test" / "fov").mkdir()
    for image in images.iterdir():
        assert cv2.imwrite(str(root / "test" / "fov" / image.name), fov)
    return PanelSet("chase", "generated vessels", root)


def test_the_spec_of_a_chase_like_set_has_the_standard_and_full_resolution_variants(tmp_path, monkeypatch):
    chase, out, work = _chase_like(tmp_path / "chase_db1"), tmp_path / "out", tmp_path / "work"
    spec_path = ablation_chase.write_spec(chase, out, work, rate=lambda cfg: (10.0, "stand-in"))
    spec = load_spec(spec_path)
    assert [v.name for v in spec.expand()] == [*STANDARD, "fullres", "fullres-no-skip0"]
    assert spec.reference_name == "concat" and spec.seeds == [0, 1, 2] and spec.set == {}  # no validation block
    assert spec.evaluate is not None and spec.evaluate.roi == chase.root / "test" / "fov"
    assert (spec.evaluate.images, spec.evaluate.masks) == (chase.test_images, chase.test_masks)
    assert spec.report.images is False  # research licence: no windows of its images in the committed report
    assert (spec.base, spec.output_dir, spec.results_dir) == (out / "base.yaml", work / "runs", out)
    base = variant_config(spec, spec.expand()[0], 0)
    fullres = variant_config(spec, spec.expand()[-2], 0)
    assert base.data.split.mode == "none" and base.model.stem_stride > 1  # as planned: every image trains
    assert fullres.model.stem_stride == 1 and fullres.model.depth > base.model.depth
    assert "# The CHASE_DB1 vessel ablation" in spec_path.read_text()
    assert "data.split.mode: none" not in spec_path.read_text()  # the header does not promise a validation block

    # again, from another work folder: the plan and the spec are reused, only the folders follow
    monkeypatch.setattr(Job, "plan", lambda *_: pytest.fail("planned again"))
    before = yaml.safe_load(spec_path.read_text())
    ablation_chase.write_spec(chase, out, tmp_path / "elsewhere", rate=lambda cfg: pytest.fail("timed again"))
    after = yaml.safe_load(spec_path.read_text())
    assert after.pop("output_dir") == str(tmp_path / "elsewhere" / "runs")
    before.pop("output_dir")
    assert after == before
