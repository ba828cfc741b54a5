"""The CUDA paths: mixed precision (bf16, fp16 with loss scaling), channels_last and
``torch.compile`` in training and prediction. Skipped where no GPU is present (CI has none);
run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from unetseg.config import config_from_dict
from unetseg.config.model import UNetConfig
from unetseg.config.schema import InferenceConfig
from unetseg.inference.predictor import Predictor
from unetseg.models import build_model
from unetseg.models.checkpoint import load_checkpoint, load_model
from unetseg.training import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 on the GPU as on the CPU: TF32 (on by default for cuDNN convolutions) keeps 10 mantissa bits."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _cuda_tree(tree: dict, **train: object) -> dict:
    tree = copy.deepcopy(tree)
    tree["train"].update(device="cuda", **train)
    return tree


@pytest.mark.parametrize("amp,channels_last", [("bf16", False), ("bf16", True), ("fp16", True), ("off", True)])
def test_training_on_cuda(tiny_cfg_dict, amp, channels_last):
    """A short run under each precision writes fp32 weights that predict the same on the CPU."""
    tree = _cuda_tree(tiny_cfg_dict, amp=amp, channels_last=channels_last, epochs=3)
    trainer = Trainer(config_from_dict(tree), log=lambda *_: None)
    summary = trainer.fit()
    assert trainer.device.type == "cuda"
    assert np.isfinite(summary["best_dice"])
    assert trainer.scaler.is_enabled() == (amp == "fp16")  # loss scaling only where fp16 can underflow
    if amp == "fp16":
        assert 0 < trainer.scaler.get_scale() < float("inf")
    if channels_last:
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    weights = load_checkpoint(Path(tree["output_dir"]) / "checkpoints" / "last.pt")["model"]
    assert all(v.dtype not in (torch.bfloat16, torch.float16) for v in weights.values())
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())

    model, cfg, _ = load_model(Path(tree["output_dir"]) / "checkpoints" / "last.pt")
    image = torch.rand(1, 64, 64)
    on_cpu = Predictor(model, cfg.inference, cfg.data.num_classes).probabilities(image)
    on_gpu = Predictor(model.to("cuda"), cfg.inference, cfg.data.num_classes, torch.device("cuda")).probabilities(image)
    assert torch.allclose(on_cpu, on_gpu, atol=1e-3)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_resume_on_cuda(tiny_cfg_dict, amp):
    """A GPU run resumes from its checkpoint (the RNG states in it are restored as CPU tensors;
    fp16: the loss scaler's state too)."""
    tree = _cuda_tree(tiny_cfg_dict, amp=amp, epochs=2, ema=0.9)
    Trainer(config_from_dict(tree), log=lambda *_: None).fit()
    tree["train"]["epochs"] = 3
    messages: list[str] = []
    Trainer(config_from_dict(tree), resume=True, log=messages.append).fit()
    ckpt = load_checkpoint(Path(tree["output_dir"]) / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and [row["epoch"] for row in ckpt["history"]] == [1, 2, 3]
    assert ckpt["ema"]["updates"] == 3 * 4  # 8 crops per epoch in batches of 2
    assert any("resuming" in m for m in messages)


def test_compiled_training_on_cuda(tiny_cfg_dict):
    tree = _cuda_tree(tiny_cfg_dict, amp="bf16", channels_last=True, compile=True, epochs=2)
    summary = Trainer(config_from_dict(tree), log=lambda *_: None).fit()
    assert np.isfinite(summary["best_dice"])
    weights = load_checkpoint(Path(tree["output_dir"]) / "checkpoints" / "last.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in weights), "compiled wrapper's names leaked into the checkpoint"


@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16])
def test_cuda_prediction_matches_cpu(amp):
    """Whole-image and sliding-window prediction on the GPU agree with the CPU's fp32 result."""
    torch.manual_seed(0)
    model = build_model(UNetConfig(depth=3, base_width=8, norm="instance"), 1, 1).eval()
    image = torch.rand(1, 200, 333)
    for mode in ("whole", "sliding"):
        cfg = InferenceConfig(mode=mode, roi_size=96, overlap=0.25)
        reference = Predictor(model, cfg, 2).probabilities(image)
        gpu = Predictor(copy.deepcopy(model).cuda(), cfg, 2, torch.device("cuda"), amp, channels_last=True)
        probs = gpu.probabilities(image)
        assert probs.shape == reference.shape == (2, 200, 333)
        tolerance = 1e-4 if amp is None else 3e-2
        assert (probs - reference).abs().max() < tolerance, mode
        same = (gpu.classes(probs) == gpu.classes(reference)).mean()
        assert same > (0.9999 if amp is None else 0.99), mode
