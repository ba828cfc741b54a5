"""Inference: TTA equivariance and averaging, sliding window vs whole image, thresholds,
and writing a folder of predictions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from unetseg.config import InferenceConfig
from unetseg.data import find_images
from unetseg.data.io import DataError, read_raw
from unetseg.inference.predictor import Predictor, predict_samples, tta_transforms


class PixelModel(nn.Module):
    """A per-pixel function of the input (no spatial interaction): equivariant to any
    rearrangement of the pixels, so every TTA must give back the plain prediction."""

    def __init__(self, out_channels: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if self.out_channels == 1:
            return 6 * x[:, :1] - 3
        return torch.cat([4 * x[:, :1], 4 * (1 - x[:, :1]), 8 * (x[:, :1] - 0.5) ** 2], dim=1)[:, : self.out_channels]


def asymmetric_conv() -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3) - 4)
    return conv


def predictor(model: nn.Module, num_classes: int = 2, **cfg) -> Predictor:
    return Predictor(model, InferenceConfig(**cfg), num_classes)


def test_tta_transform_counts_and_inverses():
    x = torch.randn(1, 1, 5, 7)
    for kind, n in (("none", 1), ("flips", 4), ("d4", 8)):
        views = tta_transforms(kind)
        assert len(views) == n
        outs = []
        for forward, inverse in views:
            assert torch.equal(inverse(forward(x)), x)
            outs.append(forward(x))
        # the views are distinct elements of the group
        assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == n


@pytest.mark.parametrize("tta", ["flips", "d4"])
@pytest.mark.parametrize("out_channels, num_classes", [(1, 2), (3, 3)])
def test_tta_is_equivariant_for_a_per_pixel_model(tta, out_channels, num_classes):
    image = torch.rand(1, 23, 37)  # non-square: rotations change the shape
    plain = predictor(PixelModel(out_channels), num_classes, tta="none").probabilities(image)
    model = PixelModel(out_channels)
    augmented = predictor(model, num_classes, tta=tta).probabilities(image)
    assert plain.shape == (num_classes, 23, 37)
    assert torch.allclose(augmented, plain, atol=1e-6)
    assert len(model.calls) == (4 if tta == "flips" else 8)
    if tta == "d4":
        assert (1, 1, 37, 23) in model.calls  # the rotated views were really run


def _d4_reference(x: torch.Tensor, model: nn.Module, kind: str) -> torch.Tensor:
    """Average of g^-1(sigmoid(model(g(x)))) over the group, written independently."""
    views = []
    for k in range(4 if kind == "d4" else 1):
        for flip in (False, True):
            views.append((k, flip, None))
    if kind == "flips":
        views = [(0, False, None), (0, True, None), (0, False, 2), (0, True, 2)]
    total = 0
    for k, flip, extra in views:
        y = x
        if flip:
            y = torch.flip(y, (3,))
        if extra is not None:
            y = torch.flip(y, (extra,))
        y = torch.rot90(y, k, (2, 3))
        p = torch.sigmoid(model(y))
        p = torch.rot90(p, -k, (2, 3))
        if extra is not None:
            p = torch.flip(p, (extra,))
        if flip:
            p = torch.flip(p, (3,))
        total = total + p
    return total / len(views)


@pytest.mark.parametrize("tta", ["flips", "d4"])
def test_tta_averages_the_views_of_a_non_equivariant_model(tta):
    conv = asymmetric_conv()
    image = torch.rand(1, 11, 16)
    probs = predictor(conv, tta=tta).probabilities(image)
    with torch.no_grad():
        expected = _d4_reference(image[None], conv, tta)[0, 0]
        plain = torch.sigmoid(conv(image[None]))[0, 0]
    assert torch.allclose(probs[1], expected, atol=1e-6)
    assert torch.allclose(probs[0], 1 - expected, atol=1e-6)
    assert not torch.allclose(probs[1], plain, atol=1e-3)  # the views really differ


def test_sliding_window_matches_whole_image_for_pixelwise_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, kernel_size=1)
    image = torch.rand(1, 700, 300)
    whole = predictor(conv, 3, mode="whole").probabilities(image)
    recorder = PixelModel()

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            recorder.calls.append(tuple(x.shape))
            return self.conv(x)

    sliding = predictor(Recording(), 3, mode="sliding", roi_size=128, overlap=0.25, sw_batch_size=2).probabilities(
        image
    )
    assert sliding.shape == whole.shape == (3, 700, 300)
    assert torch.allclose(sliding, whole, atol=1e-5)
    assert all(shape[-2:] == (128, 128) for shape in recorder.calls)
    assert all(shape[0] <= 2 for shape in recorder.calls)
    constant = predictor(conv, 3, mode="sliding", roi_size=128, blend="constant").probabilities(image)
    assert torch.allclose(constant, whole, atol=1e-5)


def test_auto_mode_switches_on_size():
    model = PixelModel()
    p = predictor(model, mode="auto", roi_size=32)
    p.probabilities(torch.rand(1, 32, 32))
    assert model.calls[-1] == (1, 1, 32, 32)
    model.calls.clear()
    p.probabilities(torch.rand(1, 40, 33))
    assert model.calls and all(c[-2:] == (32, 32) for c in model.calls)


def test_sliding_window_on_a_real_unet_is_close_to_whole():
    from unetseg.models import UNet

    torch.manual_seed(0)
    net = UNet(1, 1, depth=3, base_width=4, norm="instance").eval()
    image = torch.rand(1, 96, 80)
    whole = predictor(net, mode="whole").probabilities(image)
    sliding = predictor(net, mode="sliding", roi_size=64, overlap=0.5).probabilities(image)
    assert sliding.shape == whole.shape
    # not identical (the windows see less context) but the same prediction in most pixels
    assert (sliding.argmax(0) == whole.argmax(0)).float().mean() > 0.8


def test_binary_probabilities_and_threshold():
    image = torch.tensor([[[0.0, 0.45, 0.55, 0.6, 1.0]]])
    probs = predictor(PixelModel(), threshold=0.5).probabilities(image)
    p = torch.sigmoid(6 * image[0] - 3)
    assert torch.allclose(probs[1], p) and torch.allclose(probs[0] + probs[1], torch.ones_like(p))
    assert predictor(PixelModel(), threshold=0.5).classes(probs).tolist() == [[0, 0, 1, 1, 1]]
    # p(0.6) = sigmoid(0.6) = 0.646: below a 0.7 threshold
    assert predictor(PixelModel(), threshold=0.7).classes(probs).tolist() == [[0, 0, 0, 0, 1]]


def test_multiclass_argmax():
    image = torch.tensor([[[0.0, 0.5, 1.0]]])
    pred = predictor(PixelModel(3), 3)
    probs = pred.probabilities(image)
    assert torch.allclose(probs.sum(0), torch.ones(1, 3))
    # logits [0, 4, 2], [2, 2, 0], [4, 0, 2] -> classes 1, (0 or 1 tie -> first), 0
    assert pred.classes(probs).tolist() == [[1, 0, 0]]


def test_predictor_leaves_model_in_eval_and_does_not_track_grad():
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    net.train()
    probs = predictor(net).probabilities(torch.rand(1, 8, 8))
    assert not net.training and not probs.requires_grad


# --------------------------------------------------------------------------- predict_samples


def _inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(folder / "odd.png"), (rng.random((37, 50)) * 255).astype(np.uint8))
    tifffile.imwrite(folder / "t16.tif", (rng.random((20, 30)) * 65535).astype(np.uint16))
    assert cv2.imwrite(str(folder / "photo.jpg"), (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def _run(folder: Path, out: Path, **kwargs):
    return predict_samples(predictor(PixelModel()), find_images(folder), out, 1, "dtype", None, **kwargs)


def test_predict_samples_writes_good_files_and_reports_bad(tmp_path):
    folder = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    report = _run(folder, out)
    assert [name for name, _ in report.failed] == ["broken"]
    assert "broken.png" in report.failed[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["odd.png", "photo.png", "t16.tif"]
    assert sorted(p.name for p in report.written) == ["odd.png", "photo.png", "t16.tif"]
    mask = read_raw(out / "odd.png")
    assert mask.shape == (37, 50) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 255}
    image = read_raw(folder / "odd.png") / 255.0
    expected = np.where(1 / (1 + np.exp(-(6 * image - 3))) > 0.5, 255, 0)
    assert np.array_equal(mask, expected)
    assert read_raw(out / "t16.tif").shape == (20, 30)


def test_predict_samples_refuses_to_overwrite(tmp_path):
    folder = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    _run(folder, out)
    marker = out / "odd.png"
    before = marker.read_bytes()
    marker.write_bytes(b"user's own file")
    with pytest.raises(FileExistsError, match="already exist.*overwrite"):
        _run(folder, out)
    assert marker.read_bytes() == b"user's own file"  # nothing was touched
    report = _run(folder, out, overwrite=True)
    assert marker.read_bytes() == before
    assert len(report.failed) == 1


def test_predict_samples_refuses_two_inputs_for_one_output(tmp_path):
    folder = _inputs(tmp_path / "in")
    assert cv2.imwrite(str(folder / "odd.bmp"), np.zeros((8, 8), np.uint8))  # its mask would be odd.png too
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"odd\.(bmp|png) and .*odd\.(bmp|png) would both be written as odd\.png"):
        _run(folder, out)
    assert not out.exists()  # refused before anything was written


def test_predict_samples_reports_an_output_it_cannot_write(tmp_path):
    folder = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    (out / "odd.png").mkdir(parents=True)  # a folder where odd's mask goes
    report = _run(folder, out, overwrite=True)
    assert sorted(name for name, _ in report.failed) == ["broken", "odd"]
    assert "odd.png" in dict(report.failed)["odd"]
    assert sorted(p.name for p in report.written) == ["photo.png", "t16.tif"]  # the rest still written


def test_predict_samples_probabilities_and_label_map(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (4, 1))
    cv2.imwrite(str(folder / "ramp.png"), image)
    out = tmp_path / "out"
    report = predict_samples(
        predictor(PixelModel()), find_images(folder), out, 1, "dtype", {0: 1, 255: 0}, with_probs=True
    )
    assert sorted(p.name for p in report.written) == ["ramp.png", "ramp_prob.tif"]
    prob = tifffile.imread(out / "ramp_prob.tif")
    assert prob.dtype == np.float32 and prob.shape == (4, 16)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-(6 * image.astype(np.float64) / 255.0 - 3))), atol=1e-5)
    mask = read_raw(out / "ramp.png")
    # class 1 (p > 0.5) is written back as raw value 0, class 0 as 255
    assert np.array_equal(mask, np.where(prob > 0.5, 0, 255))


def test_predict_samples_tiff_stack_pages(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", np.stack([np.full((6, 7), v, np.uint8) for v in (0, 255, 0, 255, 255)]))
    out = tmp_path / "out"
    report = predict_samples(predictor(PixelModel()), find_images(folder), out, 1, "dtype", None)
    assert not report.failed
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"stack_{i:04d}.png" for i in range(5)]
    assert [int(read_raw(out / n).max()) for n in names] == [0, 255, 0, 255, 255]


def test_corrupt_tiff_is_reported_not_fatal(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.zeros((9, 11), np.uint8))
    (folder / "bad.tif").write_bytes(b"definitely not a TIFF file")
    samples = find_images(folder)
    assert [s.name for s in samples] == ["bad", "good"]
    report = predict_samples(predictor(PixelModel()), samples, tmp_path / "out", 1, "dtype", None)
    assert [name for name, _ in report.failed] == ["bad"] and "bad.tif" in report.failed[0][1]
    assert (tmp_path / "out" / "good.png").is_file()


# --------------------------------------------------------------------------- symbolic links in --out


@pytest.mark.parametrize("dangling", [True, False])
def test_predict_never_writes_through_a_link_in_out(tmp_path, dangling):
    """A link where a mask goes is an existing output (refused without ``overwrite``, even
    dangling), and with ``overwrite`` it is replaced by the mask: its target is never written."""
    folder = _inputs(tmp_path / "in")
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    victim = outside / "victim.png"
    if not dangling:
        victim.write_bytes(b"the user's file")
    (out / "odd.png").symlink_to(Path("..") / "outside" / "victim.png")
    with pytest.raises(FileExistsError, match="odd.png"):
        _run(folder, out)
    assert victim.exists() == (not dangling)
    report = _run(folder, out, overwrite=True)
    assert "odd" not in dict(report.failed)
    assert not (out / "odd.png").is_symlink() and read_raw(out / "odd.png").shape == (37, 50)
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_bytes() == b"the user's file"
    assert sorted(p.name for p in out.iterdir()) == ["odd.png", "photo.png", "t16.tif"]  # no temporary files left


# --------------------------------------------------------------------------- any image size


class ShapeRecorder(nn.Module):
    """A model that records the largest input it was given."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.largest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.shape[-2] * x.shape[-1])
        return self.net(x)


def _smooth_image(path: Path, h: int, w: int) -> None:
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
    assert cv2.imwrite(str(path), np.round(255 * (image - image.min()) / np.ptp(image)).astype(np.uint8))


@pytest.mark.parametrize("mode, atol", [("whole", 1e-5), ("sliding", 5e-3)])
def test_large_image_is_predicted_tile_by_tile_as_if_whole(tmp_path, mode, atol):
    """Issue #27: a huge image made torch allocate the whole output (and MONAI's sliding
    window too). Above Tiling.max_pixels (lowered here so 600x600 takes the path) the model
    never sees more than a tile with its margin, and the stitched masks and probabilities
    equal the untiled ones (exactly for a whole-image pass, up to window blending otherwise)."""
    from unetseg.inference.tiling import Tiling
    from unetseg.models import UNet

    folder = tmp_path / "in"
    folder.mkdir()
    _smooth_image(folder / "big.png", 600, 600)
    torch.manual_seed(0)
    model = ShapeRecorder(UNet(1, 1, depth=3, base_width=4))
    run = {}
    for name, tiling in (("untiled", Tiling()), ("tiled", Tiling(max_pixels=256 * 256, tile=256, halo=64))):
        model.largest = 0
        report = predict_samples(
            predictor(model, mode=mode, roi_size=128),
            find_images(folder),
            tmp_path / name,
            1,
            "dtype",
            None,
            with_probs=True,
            tiling=tiling,
        )
        assert not report.failed and report.masks == 1
        run[name] = (
            read_raw(tmp_path / name / "big.png"),
            tifffile.imread(tmp_path / name / "big_prob.tif"),
            model.largest,
        )
    (mask, prob, _), (tiled_mask, tiled_prob, largest) = run["untiled"], run["tiled"]
    assert largest <= (256 + 2 * 64) ** 2 and largest < 600 * 600
    assert tiled_prob.shape == (600, 600) and tiled_prob.dtype == np.float32
    np.testing.assert_allclose(tiled_prob, prob, atol=atol)
    assert (tiled_mask != mask).mean() < 1e-3
    if mode == "whole":
        assert np.array_equal(tiled_mask, mask)
    assert sorted(p.name for p in (tmp_path / "tiled").iterdir()) == ["big.png", "big_prob.tif"]  # no scratch left


def test_one_image_failing_does_not_stop_the_folder(tmp_path):
    """An image the machine cannot hold (here: the allocator's error, raised for one size) is
    reported by name as too large, and every other image is still written."""
    folder = _inputs(tmp_path / "in")

    class OutOfMemoryFor37Rows(PixelModel):
        def forward(self, x):
            if x.shape[-2] == 37:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
            return super().forward(x)

    report = predict_samples(predictor(OutOfMemoryFor37Rows()), find_images(folder), tmp_path / "out", 1, "dtype", None)
    failed = dict(report.failed)
    assert sorted(failed) == ["broken", "odd"]
    assert failed["odd"].startswith(f"{folder / 'odd.png'}: too large to predict in the memory available")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png", "t16.tif"]


def test_tiny_images_do_not_crash_predict(tmp_path):
    """Issue #27: 1x1 and 2x2 images stopped the folder with instance norm's 'Expected more
    than 1 spatial element' (a model like isbi_cpu.yaml's: stem 4, instance norm)."""
    from unetseg.models import UNet

    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(1, 1), (2, 2), (1, 9), (3, 2), (64, 64), (65, 40)]
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        assert cv2.imwrite(str(folder / f"im{i}.png"), (rng.random((h, w)) * 255).astype(np.uint8))
    torch.manual_seed(0)
    model = UNet(1, 1, depth=3, base_width=4, norm="instance", stem_stride=4, head="shuffle")
    report = predict_samples(
        predictor(model, mode="whole"), find_images(folder), tmp_path / "out", 1, "percentile", None
    )
    assert not report.failed and report.masks == len(sizes)
    for i, size in enumerate(sizes):
        assert read_raw(tmp_path / "out" / f"im{i}.png").shape == size


def test_a_240_character_file_name_is_predicted(tmp_path):
    """The output name fits the file system's 255 characters; the temporary name beside it must
    too (it repeated the whole name: "File name too long")."""
    folder = tmp_path / "in"
    folder.mkdir()
    name = "n" * 236  # + ".png": 240 characters
    assert cv2.imwrite(str(folder / f"{name}.png"), np.full((9, 11), 200, np.uint8))
    out = tmp_path / "out"
    report = _run(folder, out, with_probs=True)
    assert not report.failed
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.png", f"{name}_prob.tif"]  # no temporary file left
    assert read_raw(out / f"{name}.png").shape == (9, 11)
