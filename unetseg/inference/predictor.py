"""Whole-image prediction: padding or MONAI sliding windows, test-time augmentation,
ensembles, and writing masks (and overlays) for a folder. Validation, ``evaluate`` and
``predict`` all go through :class:`Predictor`, so the numbers a run reports are the ones its
predictions have (up to rounding where training validates under bf16 autocast and ``evaluate``
runs in fp32). A 3D volume is predicted slice by slice and written back as one volume.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from torch import nn

from unetseg.config import Config, DataConfig, InferenceConfig
from unetseg.data.channels import read_input
from unetseg.data.intensity import Normalization
from unetseg.data.io import DataError, Sample, label_values, read_mask, write_array, write_mask
from unetseg.data.scaling import Resolution, restore_size, shrink_input
from unetseg.data.volumes import output_name, write_volume
from unetseg.inference.overlay import contour_overlay, display_image, error_overlay, write_overlay
from unetseg.inference.postprocess import apply_postprocess
from unetseg.inference.tiling import Tiling, predict_plane
from unetseg.models.checkpoint import CheckpointError
from unetseg.runtime import autocast

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _flip(dims: tuple[int, ...]) -> Transform:
    return (lambda x: torch.flip(x, dims), lambda x: torch.flip(x, dims))


def _rot(k: int) -> Transform:
    return (lambda x: torch.rot90(x, k, (2, 3)), lambda x: torch.rot90(x, -k, (2, 3)))


def tta_transforms(kind: str) -> list[Transform]:
    """(forward, inverse) pairs: ``flips`` = the 4 flips, ``d4`` = all 8 flips and rotations."""
    identity: Transform = (lambda x: x, lambda x: x)
    if kind == "none":
        return [identity]
    flips = [identity, _flip((3,)), _flip((2,)), _flip((2, 3))]
    if kind == "flips":
        return flips
    rot_then_flip = [_rot(1), _rot(3)]
    transposed = [
        (lambda x: torch.flip(torch.rot90(x, 1, (2, 3)), (3,)), lambda x: torch.rot90(torch.flip(x, (3,)), -1, (2, 3))),
        (lambda x: torch.flip(torch.rot90(x, 1, (2, 3)), (2,)), lambda x: torch.rot90(torch.flip(x, (2,)), -1, (2, 3))),
    ]
    return flips + rot_then_flip + transposed


@dataclass
class Predictor:
    """Class probabilities for whole images of any size.

    ``probabilities`` returns ``(num_classes, H, W)``: for a binary model (one logit) the two
    channels are ``1 - p`` and ``p``, so callers never special-case the task type. With a
    working resolution (``data.scale`` below 1, or ``data.short_side``) the image is resized
    first and the probabilities come back at the image's own size.
    """

    model: nn.Module
    cfg: InferenceConfig
    num_classes: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: torch.dtype | None = None
    channels_last: bool = False
    resolution: Resolution = field(default_factory=Resolution)

    @classmethod
    def of(
        cls,
        model: nn.Module,
        cfg: Config,
        device: torch.device,
        inference: InferenceConfig | None = None,
        amp: torch.dtype | None = None,
        channels_last: bool = False,
    ) -> Predictor:
        """The predictor of a run's config: its classes and working resolution come from the
        config, so no caller can predict at another resolution than the model trained at;
        ``inference`` replaces the config's own settings (validation without TTA, CLI options)."""
        return cls(
            model, inference or cfg.inference, cfg.data.num_classes, device, amp, channels_last, Resolution.of(cfg.data)
        )

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            return self._activate(self.model(x))

    def _one_view(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        roi = self.cfg.roi_size
        if self.cfg.mode == "whole" or (self.cfg.mode == "auto" and h * w <= roi * roi):
            return self._forward(x)
        from monai.inferers import sliding_window_inference  # here: importing MONAI takes seconds

        return sliding_window_inference(
            x,
            roi_size=(min(roi, h), min(roi, w)),
            sw_batch_size=self.cfg.sw_batch_size,
            predictor=self._forward,
            overlap=self.cfg.overlap,
            mode=self.cfg.blend,
        )

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """``image``: (C, H, W) float tensor -> (num_classes, H, W) probabilities on the CPU."""
        self.model.eval()
        x = shrink_input(image.cpu(), self.resolution.factor(*image.shape[-2:]))[None].to(self.device)
        views = tta_transforms(self.cfg.tta)
        total = sum(inverse(self._one_view(forward(x))) for forward, inverse in views)
        return restore_size(total / len(views), tuple(image.shape[-2:]))[0].cpu()

    def classes(self, probs: torch.Tensor) -> np.ndarray:
        """Class index per pixel: threshold for binary tasks, argmax otherwise."""
        if self.num_classes == 2:
            return (probs[1] > self.cfg.threshold).numpy().astype(np.int64)
        return probs.argmax(0).numpy().astype(np.int64)

    def postprocess(self, classes: np.ndarray) -> np.ndarray:
        """The whole image's classes after ``inference.postprocess`` (chosen in training)."""
        return apply_postprocess(classes, self.cfg.postprocess)


@dataclass
class Ensemble:
    """The mean class probabilities of several predictors (models of different folds or seeds).

    Probabilities, not logits, are averaged, so a member's confidence counts as a probability
    and binary and multi-class members behave alike; each member applies its own TTA first.
    """

    members: list[Predictor]

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        total = self.members[0].probabilities(image)
        for member in self.members[1:]:
            total = total + member.probabilities(image)
        return total / len(self.members)

    def classes(self, probs: torch.Tensor) -> np.ndarray:
        return self.members[0].classes(probs)

    def postprocess(self, classes: np.ndarray) -> np.ndarray:
        return self.members[0].postprocess(classes)


# What a model's input and classes mean: models, or a model and a dataset, that differ in
# one of these cannot share an input tensor or a mask.
INPUT_KEYS = ("num_classes", "channels", "normalize", "percentile", "window", "slice_axis", "label_map")


def data_differences(data: DataConfig, other: DataConfig, keys: tuple[str, ...] = INPUT_KEYS) -> list[str]:
    """``"key other-value vs data-value"`` for each of ``keys`` where the two data sections differ."""
    return [f"{k} {getattr(other, k)} vs {getattr(data, k)}" for k in keys if getattr(other, k) != getattr(data, k)]


def ensemble_of(members: list[tuple[Path, Predictor, DataConfig]]) -> Predictor | Ensemble:
    """One predictor, or the average of several whose inputs and classes mean the same.

    Members must agree on channels and normalisation (they see one input tensor) and on the
    classes and label map (class k must be the same structure in every member).
    """
    first_path, first, data = members[0]
    for path, _, other in members[1:]:
        diffs = data_differences(data, other)
        if diffs:
            raise CheckpointError(
                f"{path}: cannot be averaged with {first_path}: data.{'; data.'.join(diffs)} "
                "(ensemble members must agree on classes, label map, channels and normalisation)"
            )
    return first if len(members) == 1 else Ensemble([predictor for _, predictor, _ in members])


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    masks: int = 0  # masks written (an image whose overlay failed still has its mask)


def output_paths(sample: Sample, out_dir: Path, with_probs: bool, with_overlay: bool = False) -> list[Path]:
    """Mask with the input's name (PNG for lossy or TIFF-stack inputs), optional float TIFF
    of the probabilities, optional ``<stem>_overlay.png``. The slices of a volume share one
    mask volume and one probability volume (``<stem>.nii.gz``, ``<stem>_prob.nii.gz``: the
    input's NIfTI extension, NIfTI for DICOM) and have one overlay each. An nnU-Net case
    (``sample.case``) is named as nnU-Net names it: the case without the channel suffix."""
    suffix = sample.image.suffix.lower()
    if sample.axis is not None:
        mask_name, prob_name = (
            output_name(sample.image, stem=sample.case),
            output_name(sample.image, "_prob", sample.case),
        )
    else:
        same_format = suffix in (".png", ".tif", ".tiff") and sample.page is None
        own_name = f"{sample.case}{sample.image.suffix}" if sample.case else sample.image.name
        mask_name = own_name if same_format else f"{sample.name}.png"
        prob_name = f"{sample.name}_prob.tif"
    paths = [out_dir / mask_name]
    if with_probs:
        paths.append(out_dir / prob_name)
    if with_overlay:
        paths.append(out_dir / f"{sample.name}_overlay.png")
    return paths


def _overlay(image: np.ndarray, classes: np.ndarray, sample: Sample, label_map: dict[int, int] | None) -> np.ndarray:
    """Contours of the prediction, or its errors when the sample carries a ground-truth mask."""
    picture = display_image(image)
    if sample.mask is None:
        return contour_overlay(picture, classes)
    truth = read_mask(sample.mask, label_map, sample.page, sample.axis)
    if truth.shape != classes.shape:
        raise DataError(
            f"{sample.mask}: ground truth is {truth.shape[1]}x{truth.shape[0]} (WxH) but its image "
            f"{sample.image} is {classes.shape[1]}x{classes.shape[0]}"
        )
    return error_overlay(picture, classes, truth)


def failure_message(err: Exception, source: Path) -> str:
    """One line for an input that could not be predicted: data errors already name the file;
    anything else (out of memory, a model that cannot take the input) is named here."""
    if isinstance(err, DataError):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0]
    out_of_memory = (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
    if isinstance(err, out_of_memory) or re.search(r"allocate memory|out of memory", first, re.IGNORECASE):
        return f"{source}: too large to predict in the memory available ({type(err).__name__}: {first})"
    return f"{source}: cannot be predicted ({type(err).__name__}: {first})"


@dataclass
class _Run:
    """One ``predict_samples`` call: what every sample needs, and the report it fills."""

    predictor: Predictor | Ensemble
    out_dir: Path
    channels: int
    normalization: Normalization
    label_map: dict[int, int] | None
    with_probs: bool
    overlay: bool
    tiling: Tiling = Tiling()
    report: PredictReport = field(default_factory=PredictReport)

    def plane(self, sample: Sample) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
        """(classes, what ``--prob`` writes or None, output paths) of one 2D sample (an image or
        a slice); its overlay, if asked for, is written here, as it is per plane for images and
        volumes."""
        array = read_input(sample, self.channels, self.normalization)
        classes, probs = predict_plane(self.predictor, array, self.with_probs, self.tiling, self.out_dir)
        paths = output_paths(sample, self.out_dir, self.with_probs, self.overlay)
        if self.overlay:
            try:
                write_overlay(paths[-1], _overlay(array, classes, sample, self.label_map))
                self.report.written.append(paths[-1])
            except DataError as err:  # an unusable ground-truth mask: the mask is still written
                self.report.failed.append((sample.name, f"overlay: {err}"))
        return classes, probs, paths

    def image(self, sample: Sample) -> None:
        # Any failure of one image (unreadable, too large, an output that cannot be written) is
        # reported and the folder goes on: outputs are written by rename, so none is half-written.
        try:
            classes, probs, paths = self.plane(sample)
            write_mask(paths[0], classes, self.label_map)
            if probs is not None:
                write_array(paths[1], probs)
        except Exception as err:
            self.report.failed.append((sample.name, failure_message(err, sample.image)))
            return
        self.report.masks += 1
        self.report.written.extend(paths[: 1 + self.with_probs])

    def volume(self, slices: Iterable[Sample]) -> None:
        """Predict a volume's slices in order and stack them back along their axis; a slice
        that fails fails the volume (reported, the folder goes on)."""
        slices = list(slices)
        first = slices[0]
        assert first.axis is not None
        try:
            planes = [self.plane(sample)[:2] for sample in slices]
            paths = output_paths(first, self.out_dir, self.with_probs)
            masks = np.stack([classes for classes, _ in planes], axis=first.axis)
            write_volume(paths[0], label_values(masks, self.label_map), first.image)
            if self.with_probs:  # classes last in a multi-class volume
                probs = [fg if fg.ndim == 2 else np.moveaxis(fg, 0, -1) for _, fg in planes]
                write_volume(paths[1], np.stack(probs, axis=first.axis), first.image)
        except Exception as err:
            self.report.failed.append((output_name(first.image), failure_message(err, first.image)))
            return
        self.report.masks += 1
        self.report.written.extend(paths[: 1 + self.with_probs])


def predict_samples(
    predictor: Predictor | Ensemble,
    samples: list[Sample],
    out_dir: Path,
    channels: int,
    normalize: str | Normalization,
    label_map: dict[int, int] | None,
    with_probs: bool = False,
    overwrite: bool = False,
    progress: Callable[[list[Sample]], list[Sample]] = lambda xs: xs,
    overlay: bool = False,
    tiling: Tiling = Tiling(),
) -> PredictReport:
    """Predict every sample into ``out_dir``; an input that fails (unreadable, too large for
    memory, a model error) is reported and the others are still predicted.

    Existing outputs (symbolic links included, even dangling ones) are never replaced unless
    ``overwrite`` is set: the check runs before any work so a rerun cannot half-overwrite a
    folder. Every output is written by rename, so a link in ``out_dir`` is replaced by the
    output, never written through (see :mod:`unetseg.atomic`). With ``overlay``, samples that carry
    a mask (see :func:`unetseg.data.attach_masks`) get an error overlay, the others contours.
    The slices of a volume (consecutive samples with an ``axis``) make one output volume with
    the input's affine and header; a slice that cannot be read fails the whole volume. Images
    above ``tiling.max_pixels`` are predicted tile by tile (see :mod:`unetseg.inference.tiling`).
    """
    sources: dict[Path, Path] = {}  # output -> the input it is planned for
    for sample in samples:
        for path in output_paths(sample, out_dir, with_probs, overlay):
            source = sources.setdefault(path, sample.image)
            if source != sample.image:  # e.g. cell.png and cell.jpg both make cell.png
                raise DataError(
                    f"{source} and {sample.image} would both be written as {path.name}; "
                    "rename one of them or predict them into separate folders"
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        clashes = [p for p in sources if os.path.lexists(p)]  # a link counts, dangling or not
        if clashes:
            raise FileExistsError(
                f"{len(clashes)} output file(s) already exist in {out_dir} (first: {clashes[0].name}); "
                "pass --overwrite to replace them or choose another --out"
            )
    run = _Run(predictor, out_dir, channels, Normalization.of(normalize), label_map, with_probs, overlay, tiling)
    for (_, axis), group in groupby(progress(samples), key=lambda s: (s.image, s.axis)):
        if axis is None:
            for sample in group:
                run.image(sample)
        else:
            run.volume(group)
    return run.report
