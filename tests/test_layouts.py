"""Dataset layouts read in place: nnU-Net v2 raw datasets (2D PNG with channel files, NIfTI
volumes, splits_final.json), Decathlon datasets (4D multi-modal volumes), CSV manifests; their
checks, their splits, one clear message per broken input, and predict naming nnU-Net's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_clean_failure, invoke
from layout_helpers import csv_manifest, msd, nnunet_2d, nnunet_3d, write_json
from test_inference import PixelModel, predictor

from unetseg.config import ConfigError, DataConfig, config_from_dict
from unetseg.data.channels import read_input
from unetseg.data.check import check_dataset
from unetseg.data.io import DataError
from unetseg.data.layouts import detect_data, find_inputs, labelled_samples, split_data
from unetseg.inference.predictor import predict_samples

nib = pytest.importorskip("nibabel")


# --------------------------------------------------------------------------- config


def test_layout_config_names_what_is_missing():
    with pytest.raises(ConfigError, match="data: layout 'nnunet' needs root: the dataset folder holding dataset.json"):
        config_from_dict({"data": {"layout": "nnunet"}})
    with pytest.raises(ConfigError, match="images and masks belong to layout 'folders'"):
        config_from_dict({"data": {"layout": "csv", "root": "a.csv", "images": "x"}})
    with pytest.raises(ConfigError, match="layout 'folders' needs images and masks"):
        config_from_dict({"data": {"images": "x"}})
    with pytest.raises(ConfigError, match="split mode 'manifest' .* needs layout 'csv'"):
        config_from_dict({"data": {"images": "x", "masks": "y", "split": {"mode": "manifest"}}})
    with pytest.raises(ConfigError, match="data.channels: Input should be greater than or equal to 1"):
        config_from_dict({"data": {"images": "x", "masks": "y", "channels": 0}})
    assert config_from_dict({"data": {"layout": "msd", "root": "T", "channels": 4}}).data.channels == 4


# --------------------------------------------------------------------------- nnU-Net


def test_nnunet_2d_cases_carry_their_channel_files(tmp_path):
    root = nnunet_2d(tmp_path)
    data = detect_data(root)
    assert (data.layout, data.root, data.channels, data.label_map) == ("nnunet", root, 2, {0: 0, 1: 1})
    samples = labelled_samples(data)
    assert [s.name for s in samples] == [f"case_{i:03d}" for i in range(6)]
    first = samples[0]
    assert first.image.name == "case_000_0000.png" and [p.name for p in first.channel_files] == ["case_000_0001.png"]
    assert first.mask.name == "case_000.png" and first.case == "case_000"
    image = read_input(first, 2, "minmax")
    assert image.shape == (64, 64, 2)
    # each channel is scaled on its own range: the dim channel spans [0, 1] too
    assert np.allclose(image.reshape(-1, 2).min(0), 0) and np.allclose(image.reshape(-1, 2).max(0), 1)
    assert check_dataset(data).fatal is False


def test_nnunet_wrong_channel_count_is_one_message(tmp_path):
    data = detect_data(nnunet_2d(tmp_path)).model_copy(update={"channels": 3})
    with pytest.raises(DataError, match=r"case_000_0000\.png: 2 channels from 2 channel files, but data.channels is 3"):
        read_input(labelled_samples(data)[0], 3, "dtype")
    report = check_dataset(data)
    assert ("error", "channels") in {(p.severity, p.kind) for p in report.problems}


@pytest.mark.parametrize("key", ["labels", "file_ending", "channel_names"])
def test_nnunet_missing_dataset_json_key_names_file_and_key(tmp_path, key):
    root = nnunet_2d(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    del meta[key]
    write_json(root / "dataset.json", meta)
    data = DataConfig(layout="nnunet", root=root)
    with pytest.raises(DataError, match=rf"dataset\.json: missing key '{key}'"):
        labelled_samples(data)
    result = invoke("data", "check", "--config", _config_file(tmp_path, data))
    assert_clean_failure(result, "dataset.json", key)


def test_nnunet_label_without_image_and_image_without_label(tmp_path):
    root = nnunet_2d(tmp_path)
    (root / "labelsTr" / "case_000.png").rename(root / "labelsTr" / "ghost.png")
    with pytest.raises(
        DataError, match=r"case_000_0000\.png: no label case_000\.png in .*labelsTr \(and 1 more problem"
    ):
        labelled_samples(DataConfig(layout="nnunet", root=root))
    result = invoke("data", "check", root)
    assert_clean_failure(result, "ghost.png", "no image ghost_0000.png in", "no label case_000.png")
    (root / "imagesTr" / "case_001_0001.png").unlink()
    report = check_dataset(detect_data(root))
    assert any("case_001_0001.png" in p.path and "missing" in p.detail for p in report.errors)


def test_nnunet_region_labels_and_unreadable_ending_are_refused(tmp_path):
    root = nnunet_2d(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    write_json(root / "dataset.json", {**meta, "labels": {"background": 0, "whole": [1, 2]}})
    with pytest.raises(DataError, match="labels.whole is a region"):
        detect_data(root)
    write_json(root / "dataset.json", {**meta, "labels": {"background": 0, "tumour": 1, "lesion": 1}})
    with pytest.raises(DataError, match="labels.lesion and labels.tumour both have the mask value 1"):
        detect_data(root)
    write_json(root / "dataset.json", {**meta, "file_ending": ".mha"})
    with pytest.raises(DataError, match=r"dataset\.json: file_ending '\.mha': unetseg reads"):
        detect_data(root)


def test_nnunet_volumes_split_by_case_and_splits_final(tmp_path):
    root = nnunet_3d(tmp_path, n=4)
    data = DataConfig.model_validate(
        {**detect_data(root).model_dump(), "split": {"mode": "cases", "folds": 2, "fold": -1}}
    )
    train, val = split_data(data)
    assert {s.case for s in val} == {"vol_002", "vol_003"} and {s.case for s in train} == {"vol_000", "vol_001"}
    assert len(val) == 2 * 6 and val[0].name == "vol_002_0000" and val[0].axis == 2
    write_json(root / "splits_final.json", [{"train": ["vol_000", "vol_002", "vol_003"], "val": ["vol_001"]}] * 5)
    data = detect_data(root)
    assert (data.split.mode, data.split.file, data.split.fold) == ("file", root / "splits_final.json", 0)
    _, val = split_data(data)
    assert {s.case for s in val} == {"vol_001"}
    write_json(root / "splits_final.json", [{"train": [], "val": ["nobody"]}])
    with pytest.raises(
        DataError, match=r"splits_final\.json: fold 0 validates on case\(s\) the dataset does not hold: \['nobody'\]"
    ):
        split_data(data)


def test_predict_on_nnunet_images_ts_names_outputs_as_nnunet(tmp_path):
    root = nnunet_2d(tmp_path)
    data = detect_data(root)
    samples = find_inputs(root / "imagesTs", data)
    assert [(s.name, len(s.channel_files)) for s in samples] == [("test_000", 1), ("test_001", 1)]
    report = predict_samples(predictor(PixelModel()), samples, tmp_path / "out", 2, "dtype", data.label_map)
    assert sorted(p.name for p in report.written) == ["test_000.png", "test_001.png"]
    # a single file of a case brings its other channel files along
    assert [s.name for s in find_inputs(root / "imagesTs" / "test_001_0000.png", data)] == ["test_001"]


def test_predict_on_nnunet_volumes_keeps_the_geometry(tmp_path):
    root = nnunet_3d(tmp_path)
    data = detect_data(root)
    samples = find_inputs(root / "imagesTs", data)
    report = predict_samples(predictor(PixelModel()), samples, tmp_path / "out", 1, "percentile", data.label_map)
    assert [p.name for p in report.written] == ["ts_000.nii.gz"]
    written, source = nib.load(tmp_path / "out" / "ts_000.nii.gz"), nib.load(root / "imagesTs" / "ts_000_0000.nii.gz")
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    assert written.header.get_zooms() == source.header.get_zooms()


def test_plain_names_in_an_nnunet_model_are_not_grouped(tmp_path):
    from conftest import write_pairs

    images, _ = write_pairs(tmp_path / "plain", n=2)
    data = DataConfig(layout="nnunet", root=tmp_path)
    assert [s.name for s in find_inputs(images, data)] == ["img_0", "img_1"]


# --------------------------------------------------------------------------- Decathlon


def test_msd_4d_volumes_are_channels_each_normalised_alone(tmp_path):
    root = msd(tmp_path)
    data = detect_data(root)
    assert (data.layout, data.channels, data.label_map) == ("msd", 2, {0: 0, 1: 1})
    samples = labelled_samples(data)
    assert len(samples) == 3 * 6 and samples[0].name == "blob_000_0000" and samples[0].case == "blob_000"
    image = read_input(samples[0], 2, "zscore")
    assert image.shape == (48, 40, 2)
    # the second modality is 10x the first: z-scored per channel, the two agree
    assert np.allclose(image[..., 0], image[..., 1], atol=1e-4)
    assert not check_dataset(data).fatal


def test_msd_listing_problems_name_the_entry(tmp_path):
    root = msd(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][1]["image"] = "./imagesTr/missing.nii.gz"
    write_json(root / "dataset.json", meta)
    with pytest.raises(
        DataError, match=r"dataset\.json: training\[1\]\.image \./imagesTr/missing\.nii\.gz: no such file"
    ):
        labelled_samples(DataConfig(layout="msd", root=root, channels=2))
    del meta["training"]
    write_json(root / "dataset.json", meta)
    with pytest.raises(DataError, match=r"dataset\.json: missing key 'training'"):
        labelled_samples(DataConfig(layout="msd", root=root, channels=2))


# --------------------------------------------------------------------------- CSV


def test_csv_manifest_rows_split_column_and_test_rows(tmp_path):
    manifest = csv_manifest(tmp_path)
    data = detect_data(manifest)
    assert (data.layout, data.root, data.split.mode) == ("csv", manifest, "manifest")
    train, val = split_data(data)
    assert [s.name for s in val] == ["img_4", "img_5"] and len(train) == 4  # the test row is left out
    assert not check_dataset(data).fatal


def test_csv_without_header_or_split_is_positional(tmp_path):
    manifest = csv_manifest(tmp_path, with_split=False)
    manifest.write_text("\n".join(manifest.read_text().splitlines()[1:]) + "\n")
    data = detect_data(manifest)
    assert data.split.mode == "block" and len(labelled_samples(data)) == 6


def test_csv_row_pointing_nowhere_names_the_line(tmp_path):
    manifest = csv_manifest(tmp_path)
    lines = manifest.read_text().splitlines()
    lines[3] = "images/nothing.png,masks/img_2.png,train"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"cases\.csv: line 4: image images/nothing\.png: no such file"):
        labelled_samples(DataConfig(layout="csv", root=manifest))
    assert_clean_failure(
        invoke("data", "check", manifest), "cases.csv", "line 4: image images/nothing.png: no such file"
    )
    manifest.write_text("image,mask,split\nimages/img_0.png,masks/img_0.png,holdout\n")
    with pytest.raises(DataError, match=r"line 2: split 'holdout' is not one of train, val, test"):
        labelled_samples(DataConfig(layout="csv", root=manifest))


def _config_file(tmp_path: Path, data: DataConfig) -> Path:
    from conftest import write_yaml

    return write_yaml(tmp_path / "data.yaml", {"data": data.model_dump(mode="json")})


def test_csv_rows_outside_the_manifests_folder_are_read_and_noted(tmp_path):
    """Probe #13: a row pointing outside its folder was read silently. It is legitimate (data
    shared between projects), so it is read, and `data check` names the line in a warning."""
    from unetseg.data.check import check_dataset

    data = tmp_path / "shared"
    csv_manifest(data, with_split=False)
    project = tmp_path / "project"
    project.mkdir()
    rows = (
        (data / "cases.csv").read_text().replace("images/", "../shared/images/").replace("masks/", "../shared/masks/")
    )
    (project / "cases.csv").write_text(rows)
    cfg = detect_data(project / "cases.csv")
    report = check_dataset(cfg)
    outside = [p for p in report.problems if p.kind == "outside"]
    assert not report.fatal and len(outside) == 12  # image and mask of 6 rows
    assert (
        outside[0].severity == "warning"
        and "line 2: image ../shared/images/img_0.png lies outside" in outside[0].detail
    )
