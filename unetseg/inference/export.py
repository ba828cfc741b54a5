"""Export a trained model to ONNX or TorchScript, for running it without unetseg.

Both formats take ``image`` (N, C, H, W float32, any batch, height and width) and return
``logits`` (N, out_channels, H, W): sigmoid > 0.5 for a binary model (one channel), argmax
otherwise. The network's pad-to-multiple-and-crop logic is traced into the graph, so sizes
that are not multiples of the stride work (see :mod:`unetseg.models.padding`). Every export
is checked by running the exported file at a size that is *not* the example's and not a
multiple of the stride, against PyTorch: a graph that froze a shape fails here, not in the
user's pipeline.

ONNX goes through the TorchScript-based exporter (``dynamo=False``) with ``dynamic_axes``:
on this project's models it gives the same graphs as the ``torch.export``-based one, exports
in well under a second instead of 10-15 s, and needs only ``onnx``, where the new exporter
also needs ``onnxscript``. It is deprecated upstream; switching is one argument
(``dynamo=True`` with ``dynamic_shapes``), and the padding is already written for both.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unetseg.config import Config, dump_config

FORMATS = ("onnx", "torchscript")
OPSET = 17
# The check looks for a graph that froze a shape (wrong output or a crash), not for float32
# reduction-order noise: instance and group norm over a 512x512 map differ by ~1e-4.
TOLERANCE = 1e-3
INSTALL_HINT = "pip install 'unetseg[export]' (or: pip install onnx onnxruntime)"


class ExportError(ValueError):
    """A model that cannot be exported as asked (missing package, size too small, mismatch)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    check_size: tuple[int, int]
    max_abs_diff: float | None  # None: not checked (onnxruntime missing)


def metadata(cfg: Config) -> dict[str, str]:
    """What a user without unetseg needs to feed the model and read its output."""
    data = cfg.data
    binary = data.out_channels == 1
    return {
        "unetseg.config": json.dumps(dump_config(cfg)),
        "unetseg.input": f"image: N x {data.channels} x H x W float32; data.normalize={data.normalize} "
        "('dtype': divide by the dtype's maximum, e.g. 255 for 8-bit)",
        "unetseg.output": "logits: N x 1 x H x W, foreground = sigmoid(logits) > 0.5"
        if binary
        else f"logits: N x {data.out_channels} x H x W, class = argmax over channels",
        "unetseg.label_map": json.dumps(data.label_map),
    }


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer: the shape checks it flags (the decoder's size check, which padding
    makes always-false) are settled by the check in :func:`export_model`; the deprecation
    notes of TorchScript and the legacy ONNX exporter are discussed in the module docstring."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # Instance norm always uses the input's statistics, in eval mode too: export it so.
        warnings.filterwarnings("ignore", message=".*'instance_norm' is set to train=True")
        yield


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    if importlib.util.find_spec("onnx") is None:
        raise ExportError(f"ONNX export needs the 'onnx' package: {INSTALL_HINT}")
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with _quiet_tracing():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=OPSET,
            **legacy,
        )
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    with _quiet_tracing():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"unetseg.json": json.dumps(meta)})


def run_exported(path: Path, fmt: str, image: np.ndarray) -> np.ndarray | None:
    """Logits of an exported model for an NCHW float32 batch; None when the runtime is missing."""
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"image": image})[0]
    with _quiet_tracing():
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return loaded(torch.from_numpy(image)).numpy()


def export_model(
    model: nn.Module, cfg: Config, path: Path, fmt: str, size: tuple[int, int] = (256, 256), overwrite: bool = False
) -> ExportResult:
    """Write ``model`` (built from ``cfg``) to ``path`` and check it at another, odd size."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    multiple = int(getattr(model, "multiple", 1))
    if min(size) < multiple:
        raise ExportError(
            f"--size {size[0]} {size[1]}: height and width must be at least the network's multiple ({multiple})"
        )
    model = model.to("cpu").eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, cfg.data.channels, *size, generator=generator)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot write {path}: {err.strerror}") from None
    # Written beside --out and moved over it only once checked, so a failed export or check
    # never replaces the file already there (--overwrite) with a broken one.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        check_size, diff = _write_checked(model, cfg, example, partial, path, fmt, multiple, generator)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(path, check_size, diff)


def _write_checked(
    model: nn.Module,
    cfg: Config,
    example: torch.Tensor,
    path: Path,
    target: Path,
    fmt: str,
    multiple: int,
    generator: torch.Generator,
) -> tuple[tuple[int, int], float | None]:
    """Export to ``path`` (on its way to ``target``) and compare it with PyTorch at another, odd
    size: (that size, the largest difference, None where the runtime is missing)."""
    exporter = _export_onnx if fmt == "onnx" else _export_torchscript
    with torch.no_grad():
        exporter(model, example, path, metadata(cfg))
    h, w = example.shape[-2:]
    check_size = (h + 13 if multiple == 1 else h + multiple // 2 + 3, w + 2 * multiple + 1)
    check = torch.rand(2, cfg.data.channels, *check_size, generator=generator)
    with torch.inference_mode():
        expected = model(check).numpy()
    got = run_exported(path, fmt, check.numpy())
    if got is None:
        return check_size, None
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise ExportError(
            f"{target}: the exported model differs from PyTorch at {check_size[0]}x{check_size[1]} "
            f"(output {got.shape} vs {expected.shape}, max |diff| {diff:.3g}); please report this model config"
        )
    return check_size, diff


def describe(result: ExportResult, fmt: str) -> str:
    """One line for the command line."""
    h, w = result.check_size
    if result.max_abs_diff is None:
        return f"wrote {result.path} ({fmt}); not checked: onnxruntime is not installed ({INSTALL_HINT})"
    return f"wrote {result.path} ({fmt}); checked against PyTorch at {h}x{w}: max |diff| {result.max_abs_diff:.2g}"


def read_metadata(path: Path, fmt: str) -> dict[str, Any]:
    """The metadata written by :func:`metadata`, read back from an exported file."""
    if fmt == "onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    files = {"unetseg.json": ""}
    with _quiet_tracing():
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["unetseg.json"])
