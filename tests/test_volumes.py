"""3D volumes (NIfTI, DICOM series): slices along each axis, pairing by name, whole-volume
percentile and CT-window normalisation, and predict writing a volume with the input's shape,
affine and header. Every volume is built here (small, synthetic); nothing is downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import invoke
from conftest import blob_pair, tiny_config, write_yaml
from test_inference import PixelModel, predictor

from unetseg.config import ConfigError, config_from_dict
from unetseg.data import SegmentationDataset, find_images, find_pairs, read_image
from unetseg.data.intensity import Normalization
from unetseg.data.io import DataError, list_image_files, read_raw
from unetseg.data.volumes import _load, load_volume
from unetseg.inference.predictor import predict_samples

nib = pytest.importorskip("nibabel")

SHAPE = (48, 40, 6)


def rotated_affine() -> np.ndarray:
    """Voxel sizes 0.8 x 0.9 x 2.5 mm, rotated 0.3 rad about z, shifted: nothing an identity could fake."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-12.0, 7.5, 30.0]
    return affine


def blob_volume(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(MR-like int16 image, uint8 mask 0/1): three bright disks on every slice along the last axis."""
    rng = np.random.default_rng(seed)
    pairs = [blob_pair(rng, shape[0], shape[1]) for _ in range(shape[2])]
    image = np.stack([4 * p[0].astype(np.int16) + 100 for p in pairs], axis=-1)
    image[0, 0, 0] = 4000  # one hot voxel: what percentile clipping is for
    return image, np.stack([(p[1] > 0).astype(np.uint8) for p in pairs], axis=-1)


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    image = nib.Nifti1Image(array, rotated_affine() if affine is None else affine)
    image.header["descrip"] = b"unetseg synthetic"
    image.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def volume_dataset(root: Path, n: int = 3, mask_suffix: str = "_seg") -> tuple[Path, Path]:
    for i in range(n):
        image, mask = blob_volume(seed=i)
        save_nifti(root / "images" / f"case{i}.nii.gz", image)
        save_nifti(root / "masks" / f"case{i}{mask_suffix}.nii.gz", mask)
    return root / "images", root / "masks"


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_volume_pairs_expand_to_slices_along_each_axis(tmp_path, axis):
    images, masks = volume_dataset(tmp_path, n=1)
    image, mask = blob_volume(seed=0)
    pairs = find_pairs(images, masks, axis)
    assert [s.name for s in pairs] == [f"case0_{k:04d}" for k in range(SHAPE[axis])]
    assert all(s.page == k and s.axis == axis and s.mask == masks / "case0_seg.nii.gz" for k, s in enumerate(pairs))
    data = config_from_dict(tiny_config(images, masks, tmp_path / "run")).data.model_copy(update={"slice_axis": axis})
    ds = SegmentationDataset(pairs, data)
    for k in (0, SHAPE[axis] - 1):
        item = ds[k]
        assert tuple(item["image"].shape) == (1, *np.take(image, k, axis).shape)
        assert np.array_equal(item["mask"].numpy(), np.take(mask, k, axis))
        np.testing.assert_array_equal(read_raw(images / "case0.nii.gz", k, axis), np.take(image, k, axis))


def test_volume_is_decoded_once_not_once_per_slice(tmp_path):
    images, masks = volume_dataset(tmp_path, n=1)
    _load.cache_clear()
    pairs = find_pairs(images, masks)
    ds = SegmentationDataset(pairs, config_from_dict(tiny_config(images, masks, tmp_path / "run")).data)
    for k in range(len(pairs)):
        ds.load(k)
    assert _load.cache_info().misses == 2  # the image volume and the mask volume, once each


def test_pairing_strips_the_double_suffix_and_nnunet_channel(tmp_path):
    image, mask = blob_volume(shape=(20, 18, 2))
    save_nifti(tmp_path / "img" / "a_0000.nii.gz", image)  # nnU-Net: case_0000 <-> case
    save_nifti(tmp_path / "img" / "b.nii", image)
    save_nifti(tmp_path / "lbl" / "a.nii.gz", mask)
    save_nifti(tmp_path / "lbl" / "b_seg.nii.gz", mask)
    pairs = find_pairs(tmp_path / "img", tmp_path / "lbl")
    assert [(s.name, s.mask.name) for s in pairs] == [
        ("a_0000", "a.nii.gz"),
        ("a_0001", "a.nii.gz"),
        ("b_0000", "b_seg.nii.gz"),
        ("b_0001", "b_seg.nii.gz"),
    ]


def test_mask_volume_with_other_slice_count_is_an_error(tmp_path):
    image, mask = blob_volume(shape=(20, 18, 4))
    save_nifti(tmp_path / "img" / "v.nii.gz", image)
    save_nifti(tmp_path / "lbl" / "v.nii.gz", mask[..., :3])
    with pytest.raises(DataError, match=r"v\.nii\.gz has 4 slices along axis 2 but its mask .*v\.nii\.gz has 3"):
        find_pairs(tmp_path / "img", tmp_path / "lbl")


def test_broken_and_5d_volumes_name_the_file(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a volume at all")
    with pytest.raises(DataError, match="broken.nii.gz"):
        read_image(tmp_path / "broken.nii.gz", 1, "zscore", 0, 2)
    save_nifti(tmp_path / "t.nii.gz", np.zeros((4, 4, 3, 2, 2), np.int16))
    with pytest.raises(DataError, match=r"t\.nii\.gz: expected a 3D volume or a 4D one"):
        read_raw(tmp_path / "t.nii.gz", 0, 2)


def test_4d_volume_slices_have_the_channels_last(tmp_path):
    array = np.arange(4 * 5 * 3 * 2, dtype=np.int16).reshape(4, 5, 3, 2)
    save_nifti(tmp_path / "t.nii.gz", array)
    assert read_raw(tmp_path / "t.nii.gz", 1, 2).shape == (4, 5, 2)
    np.testing.assert_array_equal(read_raw(tmp_path / "t.nii.gz", 1, 2), array[:, :, 1, :])


def test_missing_nibabel_is_one_clear_error(tmp_path, monkeypatch):
    save_nifti(tmp_path / "v.nii.gz", np.zeros((4, 4, 2), np.int16))
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    with pytest.raises(DataError, match=r"v\.nii\.gz: .*needs nibabel: pip install 'unetseg\[medical\]'"):
        find_pairs(tmp_path, tmp_path)


# --------------------------------------------------------------------------- intensity


def test_percentile_normalisation_uses_the_whole_volume(tmp_path):
    image, _ = blob_volume(shape=(20, 18, 3))
    path = save_nifti(tmp_path / "mr.nii.gz", image)
    values = image.astype(np.float64)
    lo, hi = np.percentile(values, [1.0, 99.0])
    clipped = np.clip(values, lo, hi)
    expected = (clipped - clipped.mean()) / clipped.std()  # by hand, over all three slices
    norm = Normalization("percentile", (1.0, 99.0))
    for k in range(3):
        np.testing.assert_allclose(read_image(path, 1, norm, k, 2)[..., 0], expected[..., k], atol=1e-5)
    assert read_image(path, 1, norm, 0, 2).max() < 5  # the 4000 outlier was clipped


def test_percentile_on_a_2d_image_uses_the_image(tmp_path):
    arr = np.arange(100, dtype=np.float32).reshape(10, 10)
    tifffile.imwrite(tmp_path / "p.tif", arr)
    clipped = np.clip(arr, *np.percentile(arr, [10, 90]))
    got = read_image(tmp_path / "p.tif", 1, Normalization("percentile", (10.0, 90.0)))[..., 0]
    np.testing.assert_allclose(got, (clipped - clipped.mean()) / clipped.std(), atol=1e-5)


def test_ct_window_maps_center_plus_minus_half_width_to_unit_range(tmp_path):
    hu = np.array([-1000, -160, 40, 240, 1000, 140], np.int16).reshape(1, 2, 3)
    path = save_nifti(tmp_path / "ct.nii.gz", hu)
    window = Normalization("window", window=(40.0, 400.0))  # soft tissue: [-160, 240] HU
    got = np.stack([read_image(path, 1, window, k, 2)[..., 0] for k in range(3)], axis=-1)
    np.testing.assert_allclose(got, [[[0.0, 0.0, 0.5], [1.0, 1.0, 0.75]]], atol=1e-6)


def test_new_data_keys_are_validated(tmp_path):
    base = tiny_config(tmp_path, tmp_path, tmp_path / "run")
    for key, value, message in [
        ("normalize", "window", "needs window: [center, width]"),
        ("window", [40, 0], "data.window: window is [center, width] with a positive width"),
        ("percentile", [99.5, 0.5], "data.percentile: percentile must be [low, high]"),
        ("slice_axis", 3, "data.slice_axis: Input should be less than or equal to 2"),
        ("slice_axes", 1, "data.slice_axes: unknown key, did you mean 'slice_axis'?"),
    ]:
        tree = {**base, "data": {**base["data"], key: value}}
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            config_from_dict(tree)
    data = config_from_dict({**base, "data": {**base["data"], "normalize": "window", "window": [40, 400]}}).data
    assert Normalization.of(data) == Normalization("window", (0.5, 99.5), (40.0, 400.0))


# --------------------------------------------------------------------------- prediction


def assert_same_grid(out: Path, reference: Path) -> None:
    written, source = nib.load(str(out)), nib.load(str(reference))
    assert written.shape[:3] == source.shape
    assert np.allclose(written.affine, source.affine)
    np.testing.assert_allclose(written.header["pixdim"][1:4], source.header["pixdim"][1:4])
    assert written.header["descrip"] == source.header["descrip"]
    assert written.header.get_xyzt_units() == source.header.get_xyzt_units()


@pytest.mark.parametrize("axis", [0, 2])
def test_predict_stacks_slices_back_along_their_axis(tmp_path, axis):
    hu = np.random.default_rng(1).integers(-300, 300, size=(9, 7, 5)).astype(np.int16)
    path = save_nifti(tmp_path / "in" / "scan.nii", hu)
    window = Normalization("window", window=(0.0, 400.0))  # -200..200 HU -> 0..1; the pixel model thresholds at 0.5
    report = predict_samples(
        predictor(PixelModel()), find_images(tmp_path / "in", axis), tmp_path / "out", 1, window, {0: 0, 7: 1}, True
    )
    assert not report.failed and report.masks == 1
    assert sorted(p.name for p in report.written) == ["scan.nii", "scan_prob.nii"]
    mask = np.asarray(nib.load(str(tmp_path / "out" / "scan.nii")).dataobj)
    assert mask.dtype == np.uint8 and np.array_equal(mask, np.where(hu > 0, 7, 0))  # label values, not classes
    prob = nib.load(str(tmp_path / "out" / "scan_prob.nii"))
    assert prob.get_data_dtype() == np.float32 and prob.shape == hu.shape
    assert_same_grid(tmp_path / "out" / "scan.nii", path)


def test_train_then_predict_volumes_end_to_end(tmp_path):
    images, masks = volume_dataset(tmp_path / "data")
    tree = tiny_config(images, masks, tmp_path / "run")
    tree["data"].update(normalize="percentile", percentile=[0.5, 99.5], slice_axis=2, label_map={0: 0, 1: 1})
    tree["train"]["epochs"] = 1
    result = invoke("train", "--config", write_yaml(tmp_path / "vol.yaml", tree))
    assert result.exit_code == 0, result.output
    assert "12 train / 6 val pairs" in result.output  # 3 volumes x 6 slices, last block for validation

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("case0.nii.gz", "case1.nii.gz"):
        (inputs / name).write_bytes((images / name).read_bytes())
    (inputs / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    ckpt, out = tmp_path / "run" / "checkpoints" / "best.pt", tmp_path / "pred"
    result = invoke("predict", inputs, "--checkpoint", ckpt, "--out", out, "--prob", "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "wrote 2 mask(s)" in result.output and "corrupt" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "case0.nii.gz",
        "case0_prob.nii.gz",
        "case1.nii.gz",
        "case1_prob.nii.gz",
    ]
    for name in ("case0", "case1"):
        assert_same_grid(out / f"{name}.nii.gz", inputs / f"{name}.nii.gz")
        assert_same_grid(out / f"{name}_prob.nii.gz", inputs / f"{name}.nii.gz")
        assert set(np.unique(np.asarray(nib.load(str(out / f"{name}.nii.gz")).dataobj)).tolist()) <= {0, 1}

    again = invoke("predict", inputs / "case0.nii.gz", "--checkpoint", ckpt, "--out", out, "--device", "cpu")
    assert again.exit_code != 0 and "already exist" in again.output and "--overwrite" in again.output


# --------------------------------------------------------------------------- DICOM


def write_dicom_series(folder: Path, volume: np.ndarray, spacing=(0.7, 0.8), step: float = 2.0) -> None:
    """One CT slice file per ``volume[:, :, k]`` (rows x columns), axial, InstanceNumber k + 1."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID, ds.InstanceNumber = "CT", "Synthetic", "0", k + 1
        ds.ImagePositionPatient = [-10.0, 5.0, 3.0 + step * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = list(spacing), step
        ds.Rows, ds.Columns = volume.shape[:2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = volume[:, :, k].astype(np.int16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    assert pydicom.dcmread(folder / "slice000.dcm").Rows == volume.shape[0]


def test_dicom_series_folder_is_one_volume_written_as_nifti(tmp_path):
    hu = np.random.default_rng(2).integers(-300, 300, size=(6, 5, 4)).astype(np.int16)  # rows, columns, slices
    write_dicom_series(tmp_path / "in" / "ct1", hu)
    assert list_image_files(tmp_path / "in") == [tmp_path / "in" / "ct1"]  # a sub-folder of .dcm files
    samples = find_images(tmp_path / "in" / "ct1")  # or the series folder itself
    assert [s.name for s in samples] == [f"ct1_{k:04d}" for k in range(4)]
    volume = load_volume(tmp_path / "in" / "ct1")
    assert np.array_equal(volume.array, hu.transpose(1, 0, 2))  # MONAI: (columns, rows, slices)
    # RAS affine: DICOM's LPS x and y flipped; columns 0.8 mm apart, rows 0.7 mm, slices 2 mm
    expected = np.array([[-0.8, 0, 0, 10.0], [0, -0.7, 0, -5.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])
    assert np.allclose(volume.affine, expected)

    window = Normalization("window", window=(0.0, 400.0))
    report = predict_samples(predictor(PixelModel()), samples, tmp_path / "out", 1, window, None)
    assert not report.failed and [p.name for p in report.written] == ["ct1.nii.gz"]
    written = nib.load(str(tmp_path / "out" / "ct1.nii.gz"))
    assert np.allclose(written.affine, expected)
    assert np.array_equal(np.asarray(written.dataobj), np.where(hu.transpose(1, 0, 2) > 0, 255, 0))
