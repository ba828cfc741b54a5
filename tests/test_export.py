"""Exported models (ONNX through onnxruntime, TorchScript through torch.jit.load) give
PyTorch's logits on a real ISBI slice and on an odd-sized crop, for any size: the padding
to the network's multiple survives tracing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ckpt_helpers import write_checkpoint
from cli_helpers import assert_clean_failure, invoke

from unetseg.data.io import read_image
from unetseg.inference.export import read_metadata, run_exported
from unetseg.models.checkpoint import load_model
from unetseg.models.padding import pad_to_multiple

# name -> (model changes, tolerance on the logits). onnxruntime's InstanceNormalization loses
# float32 precision over a 512x512 map: 2.4e-4 off a float64 reference on logits of ~2, where
# PyTorch is 3e-6 off. Its tolerance is therefore relative to the largest logit.
MODELS = {
    "concat": ({}, 1e-4),
    "mixed": ({"depth": 4, "skips": ["concat", "add", "none"], "upsample": "bilinear"}, 1e-4),
    "instance": ({"norm": "instance", "skips": ["add", "concat"]}, None),
}


def _runtime(fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_pytorch_on_isbi_at_any_size(fmt, model, isbi, tiny_cfg_dict, tmp_path):
    _runtime(fmt)
    changes, tolerance = MODELS[model]
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict, model_changes=changes)
    out = tmp_path / f"m.{fmt}"
    result = invoke("export", "--checkpoint", ckpt, "--format", fmt, "--out", out, "--size", 256, 256)
    assert result.exit_code == 0, result.output
    assert "checked against PyTorch" in result.output
    net, _, _ = load_model(ckpt)
    image = read_image(isbi / "train" / "image" / "0.png", 1, "dtype").transpose(2, 0, 1)[None]  # 1x1x512x512
    odd = np.ascontiguousarray(image[..., 100:433, :500])  # 333x500: not a multiple of the stride
    batch = np.concatenate([image[..., :200, :300], image[..., 300:500, 200:500]])  # batch of two, 200x300
    for x in (image, odd, batch):
        with torch.inference_mode():
            expected = net(torch.from_numpy(x)).numpy()
        got = run_exported(out, fmt, x)
        assert got.shape == expected.shape == (x.shape[0], 1, *x.shape[2:])
        np.testing.assert_allclose(got, expected, atol=tolerance or 5e-4 * np.abs(expected).max(), rtol=0)
    meta = read_metadata(out, fmt)
    assert "sigmoid" in meta["unetseg.output"] and "float32" in meta["unetseg.input"]


def test_padding_is_branch_free_only_while_tracing():
    x = torch.rand(1, 1, 5, 7)
    assert pad_to_multiple(x, 4).shape == (1, 1, 8, 8)
    # eager: within one multiple each way, so two multiples (a 2x2 deepest level), replicated
    assert pad_to_multiple(x, 8).shape == (1, 1, 16, 16)
    traced = torch.jit.trace(lambda t: pad_to_multiple(t, 4), torch.rand(1, 1, 8, 8), check_trace=False)
    assert traced(torch.rand(1, 1, 9, 13)).shape == (1, 1, 12, 16)  # traced at a multiple, still pads


def test_export_refuses_overwrite_and_too_small_size(tiny_cfg_dict, tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    out = tmp_path / "m.ts"
    assert invoke("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", out).exit_code == 0
    assert_clean_failure(
        invoke("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", out), "already exists", "--overwrite"
    )
    assert_clean_failure(
        invoke("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", tmp_path / "s.ts", "--size", 2, 64),
        "at least the network's multiple (4)",
    )
    assert_clean_failure(
        invoke("export", "--checkpoint", tmp_path / "none.pt", "--format", "onnx", "--out", out), "none.pt"
    )


def test_onnx_export_without_onnx_says_what_to_install(tiny_cfg_dict, tmp_path, monkeypatch):
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    result = invoke("export", "--checkpoint", ckpt, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert_clean_failure(result, "needs the 'onnx' package", "unetseg[export]")
    assert not (tmp_path / "m.onnx").exists()


def test_failed_export_keeps_the_file_it_would_overwrite(tiny_cfg_dict, tmp_path, monkeypatch):
    import unetseg.inference.export as export

    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    out = tmp_path / "m.ts"
    out.write_bytes(b"the user's earlier export")
    monkeypatch.setattr(export, "run_exported", lambda path, fmt, x: np.full((2, 1, *x.shape[2:]), 1e3, np.float32))
    result = invoke("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", out, "--overwrite")
    assert_clean_failure(result, "m.ts: the exported model differs from PyTorch")
    assert out.read_bytes() == b"the user's earlier export"
    assert not list(tmp_path.glob(".*partial*"))  # no partial file left behind


def test_export_under_a_file_is_one_message(tiny_cfg_dict, tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    (tmp_path / "outfile").write_text("")
    result = invoke("export", "--checkpoint", ckpt, "--format", "torchscript", "--out", tmp_path / "outfile" / "m.ts")
    assert_clean_failure(result, "cannot write", "outfile")
