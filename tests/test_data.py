"""Data: pairing, natural order, splits, readers (PNG/TIFF/stacks/colour), label maps, errors
that name the file, the dataset and its augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from unetseg.config import AugmentConfig, DataConfig, SplitConfig, config_from_dict
from unetseg.data import (
    DataError,
    SegmentationDataset,
    build_train_transform,
    find_images,
    find_pairs,
    read_image,
    read_mask,
    split_samples,
    write_mask,
)
from unetseg.data.io import natural_key, read_raw


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _data_cfg(images: Path, masks: Path, **kwargs) -> DataConfig:
    return DataConfig(images=images, masks=masks, **kwargs)


def _pairs(tmp_path: Path, names: list[str], mask_names: list[str], size=(8, 8)) -> tuple[Path, Path]:
    images, masks = tmp_path / "img", tmp_path / "lbl"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for name in names:
        _png(images / name, np.full(size, 100, np.uint8))
    for name in mask_names:
        _png(masks / name, np.zeros(size, np.uint8))
    return images, masks


# --------------------------------------------------------------------------- pairing and order


def test_pairs_with_suffixed_masks(tmp_path):
    images, masks = _pairs(
        tmp_path,
        ["cell_1.png", "cell_2.png", "cell_10.png"],
        ["cell_1_mask.png", "cell_10_mask.png", "cell_2_mask.png"],
    )
    pairs = find_pairs(images, masks)
    assert [s.name for s in pairs] == ["cell_1", "cell_2", "cell_10"]
    assert [s.mask.name for s in pairs] == ["cell_1_mask.png", "cell_2_mask.png", "cell_10_mask.png"]
    assert all(s.page is None for s in pairs)


@pytest.mark.parametrize(
    "suffix", ["_mask", "_label", "_seg", "_gt", "_masks", "_labels", "_segmentation", "_anno", "_annotation"]
)
def test_every_mask_suffix(tmp_path, suffix):
    images, masks = _pairs(tmp_path, ["a.png"], [f"a{suffix}.png"])
    assert find_pairs(images, masks)[0].mask.name == f"a{suffix}.png"


def test_exact_mask_name_wins_over_suffixed(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png"], ["a_mask.png", "a.png"])
    assert find_pairs(images, masks)[0].mask.name == "a.png"


def test_nnunet_channel_suffix_on_images(tmp_path):
    images, masks = _pairs(tmp_path, ["case_0000.png"], ["case.png"])
    pair = find_pairs(images, masks)[0]
    assert pair.name == "case" and pair.mask.name == "case.png"


def test_mask_in_other_format(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png"], [])
    tifffile.imwrite(masks / "a.tif", np.zeros((8, 8), np.uint8))
    assert find_pairs(images, masks)[0].mask.name == "a.tif"


def test_missing_masks_are_listed(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png", "b.png", "c.png"], ["b.png"])
    with pytest.raises(DataError, match=r"2 image\(s\).*a\.png, c\.png"):
        find_pairs(images, masks)


def test_natural_sort(tmp_path):
    names = ["10.png", "2.png", "1.png", "img2.png", "img10.png", "img1.png"]
    images, masks = _pairs(tmp_path, names, names)
    assert [s.name for s in find_pairs(images, masks)] == ["1", "2", "10", "img1", "img2", "img10"]
    assert sorted(["b10", "b9", "a100", "A2"], key=natural_key) == ["A2", "a100", "b9", "b10"]


def test_non_image_files_are_ignored(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png"], ["a.png"])
    (images / "notes.txt").write_text("x")
    (images / "sub").mkdir()
    assert [s.name for s in find_pairs(images, masks)] == ["a"]


@pytest.mark.parametrize("which", ["images", "masks"])
def test_empty_folder_is_data_error(tmp_path, which):
    images, masks = _pairs(tmp_path, ["a.png"], ["a.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    args = (empty, masks) if which == "images" else (images, empty)
    with pytest.raises(DataError, match="empty.*no image files"):
        find_pairs(*args)


def test_missing_folder_is_data_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_pairs(tmp_path / "nope", tmp_path / "nope2")
    with pytest.raises(DataError, match="nope"):
        find_images(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match=r"notes\.txt: a file, not a folder"):
        find_pairs(tmp_path / "notes.txt", tmp_path)


def test_empty_dataset_is_data_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        SegmentationDataset([], _data_cfg(tmp_path, tmp_path))


# --------------------------------------------------------------------------- splits


def test_isbi_block_split_last_fold(isbi):
    data = _data_cfg(isbi / "train" / "image", isbi / "train" / "label")
    pairs = find_pairs(data.images, data.masks)
    assert len(pairs) == 30
    assert [s.name for s in pairs[:12]] == [str(i) for i in range(12)]
    train, val = split_samples(pairs, SplitConfig(mode="block", folds=6, fold=5), data)
    assert [s.name for s in val] == ["25", "26", "27", "28", "29"]
    assert [s.name for s in train] == [str(i) for i in range(25)]
    _, val_last = split_samples(pairs, SplitConfig(mode="block", folds=6, fold=-1), data)
    assert val_last == val
    train0, val0 = split_samples(pairs, SplitConfig(mode="block", folds=6, fold=0), data)
    assert [s.name for s in val0] == ["0", "1", "2", "3", "4"] and len(train0) == 25


def test_block_split_uneven_covers_every_pair_once(tmp_path):
    names = [f"{i}.png" for i in range(7)]
    images, masks = _pairs(tmp_path, names, names)
    pairs = find_pairs(images, masks)
    data = _data_cfg(images, masks)
    vals = [split_samples(pairs, SplitConfig(folds=3, fold=f), data)[1] for f in range(3)]
    assert sorted(s.name for v in vals for s in v) == sorted(s.name for s in pairs)
    assert all(len(v) >= 2 for v in vals)
    for v in vals:  # contiguous blocks
        idx = [int(s.name) for s in v]
        assert idx == list(range(idx[0], idx[0] + len(idx)))


def test_block_split_needs_enough_pairs(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    with pytest.raises(DataError, match="cannot be cut into 5 folds"):
        split_samples(find_pairs(images, masks), SplitConfig(folds=5), _data_cfg(images, masks))


def test_names_split(tmp_path):
    names = [f"s{i}.png" for i in range(5)]
    images, masks = _pairs(tmp_path, names, names)
    pairs = find_pairs(images, masks)
    data = _data_cfg(images, masks)
    train, val = split_samples(pairs, SplitConfig(mode="names", val_names=["s3", "s1"]), data)
    assert [s.name for s in val] == ["s1", "s3"]
    assert [s.name for s in train] == ["s0", "s2", "s4"]
    with pytest.raises(DataError, match="s9"):
        split_samples(pairs, SplitConfig(mode="names", val_names=["s9"]), data)


def test_folders_split(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    vimg, vmask = _pairs(tmp_path / "val", ["v.png"], ["v_mask.png"])
    split = SplitConfig(mode="folders", val_images=vimg, val_masks=vmask)
    train, val = split_samples(find_pairs(images, masks), split, _data_cfg(images, masks))
    assert [s.name for s in train] == ["a", "b"] and [s.name for s in val] == ["v"]


# --------------------------------------------------------------------------- readers


def test_uint8_png_scaled(tmp_path):
    arr = np.array([[0, 51, 255]], np.uint8)
    image = read_image(_png(tmp_path / "a.png", arr), 1, "dtype")
    assert image.dtype == np.float32 and image.shape == (1, 3, 1)
    np.testing.assert_allclose(image[..., 0], [[0.0, 0.2, 1.0]], atol=1e-6)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16bit_images_scaled_to_unit_range(tmp_path, suffix):
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16)
    path = tmp_path / f"a{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, arr)
    else:
        _png(path, arr)
    image = read_image(path, 1, "dtype")
    assert image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_allclose(image[..., 0], arr / 65535.0, atol=1e-6)


def test_float_tiff_kept_and_normalisations(tmp_path):
    arr = np.array([[2.0, 4.0], [6.0, 8.0]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif", 1, "dtype")[..., 0], arr)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif", 1, "minmax")[..., 0], (arr - 2) / 6)
    z = read_image(tmp_path / "f.tif", 1, "zscore")[..., 0]
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5


def test_nan_image_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "n.tif", np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(DataError, match="n.tif.*NaN"):
        read_image(tmp_path / "n.tif", 1, "dtype")


def test_rgb_png_to_grey_uses_rgb_order(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # red
    rgb[0, 1] = (0, 255, 0)  # green
    rgb[0, 2] = (0, 0, 255)  # blue
    rgb[1] = (255, 255, 255)
    path = _png(tmp_path / "rgb.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_raw(path), rgb)  # stored BGR by OpenCV, read back as RGB
    grey = read_image(path, 1, "dtype")
    assert grey.shape == (2, 3, 1)
    np.testing.assert_allclose(grey[0, :, 0], [0.299, 0.587, 0.114], atol=1e-5)
    np.testing.assert_allclose(grey[1, :, 0], 1.0, atol=1e-5)
    colour = read_image(path, 3, "dtype")
    assert colour.shape == (2, 3, 3)
    np.testing.assert_allclose(colour[0, 0], [1, 0, 0])


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = [[0, 255], [128, 7]]  # alpha must not leak into the value
    path = _png(tmp_path / "rgba.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    grey = read_image(path, 1, "dtype")
    np.testing.assert_allclose(grey[..., 0], 0.299, atol=1e-5)
    assert read_image(path, 3, "dtype").shape == (2, 2, 3)


def test_rgb_tiff_is_one_image(tmp_path):
    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 1] = 255
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    samples = find_images(tmp_path / "rgb.tif")
    assert len(samples) == 1
    np.testing.assert_allclose(read_image(samples[0].image, 1, "dtype"), 0.587, atol=1e-5)


def test_grey_to_three_channels(tmp_path):
    path = _png(tmp_path / "g.png", np.full((3, 4), 255, np.uint8))
    image = read_image(path, 3, "dtype")
    assert image.shape == (3, 4, 3) and np.all(image == 1.0)


def test_multipage_tiff_expands_to_one_sample_per_page(tmp_path):
    stack = np.stack([np.full((16, 20), 10 * (i + 1), np.uint8) for i in range(5)])
    labels = np.stack([np.full((16, 20), i % 2, np.uint8) for i in range(5)])
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    tifffile.imwrite(tmp_path / "img" / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "lbl" / "stack.tif", labels)
    pairs = find_pairs(tmp_path / "img", tmp_path / "lbl")
    assert [s.name for s in pairs] == [f"stack_{i:04d}" for i in range(5)]
    assert [s.page for s in pairs] == list(range(5))
    ds = SegmentationDataset(pairs, _data_cfg(tmp_path / "img", tmp_path / "lbl"))
    for i in range(5):
        item = ds[i]
        assert item["image"].shape == (1, 16, 20)
        assert torch.allclose(item["image"], torch.full((1, 16, 20), 10 * (i + 1) / 255))
        assert torch.equal(item["mask"], torch.full((16, 20), i % 2))
    assert [s.name for s in find_images(tmp_path / "img")] == [f"stack_{i:04d}" for i in range(5)]


def test_multipage_mask_page_count_must_match(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    tifffile.imwrite(tmp_path / "img" / "s.tif", np.zeros((5, 8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "lbl" / "s.tif", np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"s\.tif has 5 pages but its mask .*s\.tif has 6"):
        find_pairs(tmp_path / "img", tmp_path / "lbl")


# --------------------------------------------------------------------------- masks and label maps


def test_default_mask_mapping_is_nonzero_foreground(tmp_path):
    path = _png(tmp_path / "m.png", np.array([[0, 1, 255, 7]], np.uint8))
    mask = read_mask(path, None)
    assert mask.dtype == np.int64
    assert mask.tolist() == [[0, 1, 1, 1]]


def test_label_map_applied(tmp_path):
    path = _png(tmp_path / "m.png", np.array([[0, 255, 128], [255, 0, 0]], np.uint8))
    assert read_mask(path, {0: 0, 128: 1, 255: 2}).tolist() == [[0, 2, 1], [2, 0, 0]]
    assert read_mask(path, {0: 1, 128: 0, 255: 0}).tolist() == [[1, 0, 0], [0, 1, 1]]


def test_isbi_label_map_makes_membranes_foreground(isbi):
    path = isbi / "train" / "label" / "0.png"
    raw = read_raw(path)
    assert set(np.unique(raw).tolist()) <= {0, 255}
    mask = read_mask(path, {0: 1, 255: 0})
    assert np.array_equal(mask, (raw == 0).astype(np.int64))
    assert 0.1 < mask.mean() < 0.5  # membranes are a minority


def test_unknown_mask_value_names_the_file(tmp_path):
    path = _png(tmp_path / "bad_mask.png", np.array([[0, 255, 17]], np.uint8))
    with pytest.raises(DataError, match=r"bad_mask\.png.*\[17\].*label_map"):
        read_mask(path, {0: 0, 255: 1})


def test_unknown_mask_value_reported_by_dataset(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png"], [])
    _png(masks / "a.png", np.array([[0, 3]] * 4 + [[0, 0]] * 4, np.uint8).repeat(4, axis=1))
    data = _data_cfg(images, masks, label_map={0: 0, 1: 1})
    ds = SegmentationDataset(find_pairs(images, masks), data)
    with pytest.raises(DataError, match=r"a\.png.*\[3\]"):
        ds[0]


def test_colour_mask_with_differing_channels_rejected(tmp_path):
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    path = _png(tmp_path / "c.png", colour)
    with pytest.raises(DataError, match="c.png.*colour mask"):
        read_mask(path, None)
    grey3 = np.repeat(np.array([[0, 255], [255, 0]], np.uint8)[..., None], 3, axis=2)
    assert read_mask(_png(tmp_path / "g.png", grey3), None).tolist() == [[0, 1], [1, 0]]


def test_fractional_float_mask_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.0, 0.5]], np.float32))
    with pytest.raises(DataError, match="f.tif.*fractional"):
        read_mask(tmp_path / "f.tif", None)


def test_write_mask_inverts_label_map(tmp_path):
    classes = np.array([[0, 1], [1, 0]])
    write_mask(tmp_path / "out.png", classes, {0: 1, 255: 0})
    raw = read_raw(tmp_path / "out.png")
    assert raw.dtype == np.uint8 and raw.tolist() == [[255, 0], [0, 255]]
    assert read_mask(tmp_path / "out.png", {0: 1, 255: 0}).tolist() == classes.tolist()
    write_mask(tmp_path / "bin.png", classes, None)
    assert read_raw(tmp_path / "bin.png").tolist() == [[0, 255], [255, 0]]
    write_mask(tmp_path / "big.png", np.array([[0, 1]]), {0: 0, 1000: 1})
    assert read_raw(tmp_path / "big.png").dtype == np.uint16


# --------------------------------------------------------------------------- broken files


def test_truncated_png_names_the_file(tmp_path):
    good = _png(tmp_path / "good.png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    data = good.read_bytes()
    bad = tmp_path / "slice_07.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"slice_07\.png"):
        read_image(bad, 1, "dtype")


def test_random_bytes_image_names_the_file(tmp_path):
    bad = tmp_path / "noise.png"
    bad.write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(DataError, match=r"noise\.png"):
        read_image(bad, 1, "dtype")
    bad_tif = tmp_path / "noise.tif"
    bad_tif.write_bytes(b"this is not a tiff at all")
    with pytest.raises(DataError, match=r"noise\.tif"):
        read_image(bad_tif, 1, "dtype")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: no such file"):
        read_image(tmp_path / "gone.png", 1, "dtype")


def test_broken_image_in_dataset_names_the_file(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png", "b.png"], ["a.png", "b.png"])
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = SegmentationDataset(find_pairs(images, masks), _data_cfg(images, masks))
    assert ds[0]["image"].shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"b\.png"):
        ds[1]


def test_mask_of_another_size_names_both_files(tmp_path):
    images, masks = _pairs(tmp_path, ["a.png"], [])
    _png(masks / "a_mask.png", np.zeros((8, 9), np.uint8))
    ds = SegmentationDataset(find_pairs(images, masks), _data_cfg(images, masks))
    with pytest.raises(DataError) as info:
        ds.load(0)
    msg = str(info.value)
    assert str(masks / "a_mask.png") in msg and str(images / "a.png") in msg
    assert "9x8" in msg and "8x8" in msg


# --------------------------------------------------------------------------- dataset and augmentation


def _identical_pairs(tmp_path: Path, n: int = 3, h: int = 48, w: int = 40) -> tuple[Path, Path]:
    """Images equal to their masks, so image and mask must be transformed identically."""
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "img", tmp_path / "lbl"
    for i in range(n):
        mask = (rng.random((h, w)) > 0.5).astype(np.uint8) * 255
        _png(images / f"{i}.png", mask)
        _png(masks / f"{i}.png", mask)
    return images, masks


def test_dataset_item_types_and_wraparound(tmp_path):
    images, masks = _identical_pairs(tmp_path)
    pairs = find_pairs(images, masks)
    ds = SegmentationDataset(pairs, _data_cfg(images, masks), length=8)
    assert len(ds) == 8
    item = ds[5]
    assert item["name"] == pairs[5 % 3].name
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 48, 40)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (48, 40)
    assert torch.equal(item["image"][0], item["mask"].float())


def test_augmentation_keeps_image_and_mask_aligned(tmp_path):
    images, masks = _identical_pairs(tmp_path)
    aug = AugmentConfig(crop_size=24, hflip=0.5, vflip=0.5, rot90=0.5)
    ds = SegmentationDataset(find_pairs(images, masks), _data_cfg(images, masks), build_train_transform(aug), length=12)
    ds.reseed(0)
    for i in range(12):
        item = ds[i]
        assert item["image"].shape == (1, 24, 24) and item["mask"].shape == (24, 24)
        assert torch.equal(item["image"][0], item["mask"].float())


def test_crop_larger_than_image_is_padded(tmp_path):
    images, masks = _identical_pairs(tmp_path, n=1, h=20, w=30)
    aug = AugmentConfig(crop_size=32)
    ds = SegmentationDataset(find_pairs(images, masks), _data_cfg(images, masks), build_train_transform(aug))
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["mask"].shape == (32, 32)


def test_augmentation_reseed_repeats_exactly(pair_dirs):
    images, masks = pair_dirs
    aug = AugmentConfig(crop_size=32, elastic={"p": 0.5, "alpha": 50, "sigma": 5}, brightness_contrast=0.5)
    ds = SegmentationDataset(find_pairs(images, masks), _data_cfg(images, masks), build_train_transform(aug), length=10)

    def draw(seed):
        ds.reseed(seed)
        return [ds[i] for i in range(10)]

    first, again, other = draw(123), draw(123), draw(124)
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(first, other))
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, first[1:]))  # it does augment


def test_validation_set_is_untransformed(tiny_cfg_dict):
    from unetseg.training.datasets import build_datasets

    train_ds, val_ds = build_datasets(config_from_dict(tiny_cfg_dict))
    assert train_ds.transform is not None
    assert val_ds.transform is None
    assert [s.name for s in val_ds.samples] == ["img_4", "img_5"]
    item = val_ds[0]
    assert item["image"].shape == (1, 64, 64)  # whole image, no crop
    expected = read_image(val_ds.samples[0].image, 1, "dtype")
    assert torch.equal(item["image"], torch.from_numpy(expected.transpose(2, 0, 1)))
    assert torch.equal(val_ds[0]["image"], item["image"])  # and no randomness


def test_find_images_single_file_and_folder(tmp_path):
    a = _png(tmp_path / "in" / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "in" / "b.jpg", np.zeros((4, 4), np.uint8))
    assert [s.name for s in find_images(a)] == ["a"]
    samples = find_images(tmp_path / "in")
    assert [s.name for s in samples] == ["a", "b"]
    assert all(s.mask is None for s in samples)


def _stripes(size: int = 96) -> np.ndarray:
    """Vertical stripes 6 px wide: every column is constant until something rotates them."""
    return ((np.arange(size) // 6) % 2).astype(np.int64)[None, :].repeat(size, axis=0)


def _axis_aligned(mask: np.ndarray) -> bool:
    return bool((mask == mask[:1]).all() or (mask == mask[:, :1]).all())


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_affine_rotates_off_the_grid_and_moves_mask_and_weight_alike(p):
    mask = _stripes()
    image = mask.astype(np.float32)[..., None]
    transform = build_train_transform(AugmentConfig(crop_size=40, affine={"p": p}), seed=3)
    outs = [transform(image=image, mask=mask, weight=mask.astype(np.float32)) for _ in range(12)]
    for out in outs:
        assert out["image"].shape == (40, 40, 1) and out["mask"].shape == (40, 40)
        assert np.array_equal(out["weight"], out["mask"].astype(np.float32))  # nearest, like the mask
        assert set(np.unique(out["mask"])) <= {0, 1}
        assert (np.abs(out["image"][..., 0] - out["mask"]) < 0.5).mean() > 0.9  # linear image, nearest mask
    tilted = [not _axis_aligned(out["mask"]) for out in outs]
    assert sum(tilted) >= 9 if p else not any(tilted)  # flips and rot90 keep the stripes on the grid


def test_affine_scale_zooms():
    mask = _stripes(192)
    zoom = build_train_transform(
        AugmentConfig(crop_size=48, hflip=0, vflip=0, rot90=0, affine={"p": 1.0, "rotate": 0, "scale": (2.0, 2.0)})
    )
    out = zoom(image=mask.astype(np.float32)[..., None], mask=mask)
    assert _axis_aligned(out["mask"])
    row = out["mask"][0]
    runs = np.diff(np.flatnonzero(np.diff(row)))
    assert len(runs) >= 2 and set(runs) <= {11, 12, 13} and abs(runs.mean() - 12) < 0.5  # 6 px stripes, twice the size


def test_affine_zoom_is_one_factor_for_both_axes():
    """A square stays a square (of another size): nnU-Net's zoom, not a random stretch."""
    square = np.zeros((160, 160), np.int64)
    square[60:100, 60:100] = 1
    zoom = build_train_transform(
        AugmentConfig(crop_size=None, hflip=0, vflip=0, rot90=0, affine={"p": 1.0, "rotate": 0, "scale": (0.5, 2.0)}),
        seed=1,
    )
    sides = set()
    for _ in range(8):
        rows, cols = np.nonzero(zoom(image=square.astype(np.float32)[..., None], mask=square)["mask"])
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert abs(height - width) <= 1
        sides.add(int(height))
    assert max(sides) - min(sides) > 10  # and the factor does vary


def _folder_with_non_inputs(folder: Path) -> Path:
    """One readable image beside the entries issue #27 found skipped without a word."""
    from PIL import Image

    folder.mkdir(parents=True)
    assert cv2.imwrite(str(folder / "good.png"), np.zeros((8, 8), np.uint8))
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    (folder / "x.png").mkdir()
    (folder / "loop.png").symlink_to(folder / "loop.png")
    np.save(folder / "array.npy", np.zeros((8, 8)))
    (folder / ".DS_Store").write_bytes(b"")
    return folder


def test_entries_that_are_not_inputs_are_named_with_a_reason(tmp_path):
    from unetseg.data.io import list_image_files, skipped_entries

    folder = _folder_with_non_inputs(tmp_path / "in")
    assert [p.name for p in list_image_files(folder)] == ["good.png"]
    why = {p.name: reason for p, reason in skipped_entries(folder)}
    assert sorted(why) == ["anim.gif", "array.npy", "loop.png", "x.png"]  # hidden files are not listed
    assert why["anim.gif"].startswith("unsupported file type .gif: convert it to PNG")
    assert why["array.npy"].startswith("unsupported file type .npy: save the array as TIFF")
    assert why["x.png"].startswith("a folder, not an image file")
    assert why["loop.png"] == "a symbolic link that leads nowhere (dangling, or a loop)"


def test_predict_and_data_check_name_every_skipped_entry(tmp_path, tiny_cfg_dict):
    from ckpt_helpers import write_checkpoint
    from click.testing import CliRunner

    from unetseg.cli import main

    folder = _folder_with_non_inputs(tmp_path / "in")
    ckpt = write_checkpoint(tmp_path / "m.pt", tiny_cfg_dict)
    result = CliRunner().invoke(
        main, ["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    for name in ("anim.gif", "array.npy", "loop.png", "x.png"):
        assert f"note: skipped {folder / name}: " in result.output
    assert "DS_Store" not in result.output and "wrote 1 mask(s)" in result.output
    masks = tmp_path / "masks"
    masks.mkdir()
    assert cv2.imwrite(str(masks / "good.png"), np.zeros((8, 8), np.uint8))
    result = CliRunner().invoke(main, ["data", "check", "--images", str(folder), "--masks", str(masks)])
    assert result.output.count("skipped") == 4 and "anim.gif" in result.output, result.output


# --------------------------------------------------------------------------- EXIF orientation


def _with_orientation(path: Path, array: np.ndarray, orientation: int) -> Path:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path, orientation):
    """A phone photograph stores the sensor's pixels and an EXIF turn; the image is read as
    Pillow's exif_transpose (what viewers and annotation tools show) turns it."""
    from PIL import Image, ImageOps

    array = np.zeros((40, 60, 3), np.uint8)
    array[:10, :20] = (255, 0, 0)  # a mark in one corner: every turn moves it elsewhere
    array[30:, 50:, 1] = 200
    path = _with_orientation(tmp_path / "photo.png", array, orientation)
    with Image.open(path) as handle:
        expected = np.asarray(ImageOps.exif_transpose(handle))
    got = read_raw(path)
    assert got.shape == expected.shape == ((40, 60, 3) if orientation < 5 else (60, 40, 3))
    assert np.array_equal(got, expected)


def test_rotated_jpeg_photograph_and_its_png_mask_line_up(tmp_path):
    """The mask was drawn on the photograph as shown (turned): after reading, the image's mark
    and the mask's foreground lie on the same pixels."""
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[4:20, 4:28] = 250  # a bright object where the sensor saw it
    image = _with_orientation(tmp_path / "photo.jpg", stored, 6)
    shown = np.rot90(stored, -1)  # orientation 6: turned 90 degrees clockwise for display
    mask = np.where(shown[..., 0] > 128, 255, 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    img = read_raw(image)
    assert img.shape[:2] == read_raw(tmp_path / "mask.png").shape
    assert np.mean(img[..., 0][mask > 0]) > 200 and np.mean(img[..., 0][mask == 0]) < 30


def test_the_cache_stops_at_its_share_of_free_memory_and_says_what_it_kept(tiny_cfg_dict, monkeypatch):
    """data.cache is on by default: a set too large for memory keeps what fits decoded and reads
    the rest for every crop, with one line saying so, instead of growing until the run is killed."""
    import unetseg.data.dataset as dataset_module
    from unetseg.training.datasets import decode_datasets, open_datasets

    pair_bytes = 64 * 64 * 4 + 64 * 64 * 8  # one grey float32 image and its int64 mask
    monkeypatch.setattr(dataset_module, "available_memory", lambda: int(2.5 * pair_bytes / dataset_module.CACHE_SHARE))
    tiny_cfg_dict["data"]["split"] = {"mode": "none"}
    cfg = config_from_dict(tiny_cfg_dict)
    train_ds, val_ds = open_datasets(cfg)
    lines: list[str] = []
    decode_datasets(cfg, train_ds, val_ds, lines.append)
    assert len(train_ds._cache) == 2 and train_ds.not_cached == {2, 3, 4, 5} and train_ds.cache_bytes == 2 * pair_bytes
    assert lines == [
        "note: data.cache keeps 2 of 6 training pairs decoded (0.0 GiB, 50% of the memory that was free); the other "
        "4 are read from disk for every crop, which is slower: a smaller data.scale or data.short_side keeps them "
        "all, data.cache: false keeps none"
    ]
    again, mask = train_ds.load(4)  # decoded again, the same pixels
    first = SegmentationDataset(train_ds.samples, cfg.data).load(4)
    assert np.array_equal(again, first[0]) and np.array_equal(mask, first[1]) and len(train_ds._cache) == 2

    monkeypatch.setattr(dataset_module, "available_memory", lambda: None)  # unknown: no limit
    unlimited = SegmentationDataset(train_ds.samples, cfg.data)
    for i in range(6):
        unlimited.load(i)
    assert len(unlimited._cache) == 6 and unlimited.cache_note("training") is None
