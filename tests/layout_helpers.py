"""Tiny datasets in each layout users bring (nnU-Net v2 raw, Medical Segmentation Decathlon,
CSV manifest), generated in a temporary folder: a few 64x64 blob images or 48x40x6 volumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from conftest import blob_pair, write_pairs
from test_volumes import blob_volume, save_nifti


def write_json(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


def nnunet_2d(root: Path, n: int = 6, channels: int = 2, test_cases: int = 2) -> Path:
    """``Dataset001_Blobs``: PNG cases with ``channels`` channel files each (channel 1 is the
    inverted image at a tenth of its contrast, so channels differ in range), labels 0/1."""
    dataset = root / "Dataset001_Blobs"
    rng = np.random.default_rng(0)
    for folder, count, labelled in (("imagesTr", n, True), ("imagesTs", test_cases, False)):
        (dataset / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = blob_pair(rng)
            case = f"{'case' if labelled else 'test'}_{i:03d}"
            planes = [image, (255 - image) // 10 + 100][:channels]
            for c, plane in enumerate(planes):
                assert cv2.imwrite(str(dataset / folder / f"{case}_{c:04d}.png"), plane.astype(np.uint8))
            if labelled:
                (dataset / "labelsTr").mkdir(exist_ok=True)
                assert cv2.imwrite(str(dataset / "labelsTr" / f"{case}.png"), (mask > 0).astype(np.uint8))
    write_json(
        dataset / "dataset.json",
        {
            "channel_names": {str(c): name for c, name in enumerate(["bright", "dim"][:channels])},
            "labels": {"background": 0, "blob": 1},
            "numTraining": n,
            "file_ending": ".png",
        },
    )
    return dataset


def nnunet_3d(root: Path, n: int = 3, test_cases: int = 1) -> Path:
    """``Dataset002_Vol``: one-channel NIfTI volumes (MR-like int16), labels 0/1."""
    dataset = root / "Dataset002_Vol"
    for i in range(n):
        image, mask = blob_volume(seed=i)
        save_nifti(dataset / "imagesTr" / f"vol_{i:03d}_0000.nii.gz", image)
        save_nifti(dataset / "labelsTr" / f"vol_{i:03d}.nii.gz", mask)
    for i in range(test_cases):
        save_nifti(dataset / "imagesTs" / f"ts_{i:03d}_0000.nii.gz", blob_volume(seed=10 + i)[0])
    write_json(
        dataset / "dataset.json",
        {
            "channel_names": {"0": "T2"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": n,
            "file_ending": ".nii.gz",
        },
    )
    return dataset


def msd(root: Path, n: int = 3, modalities: int = 2) -> Path:
    """``Task09_Blobs``: 4D NIfTI cases (modalities on the 4th axis, the second at 10x the
    first's intensity), 3D labels, and the ``training`` list with ./-relative paths."""
    dataset = root / "Task09_Blobs"
    training = []
    for i in range(n):
        image, mask = blob_volume(seed=i)
        stacked = np.stack([image.astype(np.int32) * 10**m for m in range(modalities)], axis=-1)
        save_nifti(dataset / "imagesTr" / f"blob_{i:03d}.nii.gz", stacked)
        save_nifti(dataset / "labelsTr" / f"blob_{i:03d}.nii.gz", mask)
        training.append({"image": f"./imagesTr/blob_{i:03d}.nii.gz", "label": f"./labelsTr/blob_{i:03d}.nii.gz"})
    write_json(
        dataset / "dataset.json",
        {
            "name": "Blobs",
            "modality": {str(m): f"MR{m}" for m in range(modalities)},
            "labels": {"0": "background", "1": "blob"},
            "numTraining": n,
            "training": training,
            "test": [],
        },
    )
    return dataset


def csv_manifest(root: Path, n: int = 6, with_split: bool = True) -> Path:
    """``cases.csv`` beside ``images/`` and ``masks/`` (paths relative to the CSV), the last
    two rows validation and one extra test row without a mask when ``with_split``."""
    write_pairs(root, n=n)
    lines = ["image,mask,split" if with_split else "image,mask"]
    for i in range(n):
        split = ",val" if i >= n - 2 else ",train"
        lines.append(f"images/img_{i}.png,masks/img_{i}.png{split if with_split else ''}")
    if with_split:
        (root / "test").mkdir(exist_ok=True)
        assert cv2.imwrite(str(root / "test" / "unseen.png"), blob_pair(np.random.default_rng(9))[0])
        lines.append("test/unseen.png,,test")
    (root / "cases.csv").write_text("\n".join(lines) + "\n")
    return root / "cases.csv"


def walls_pairs(root: Path, n: int = 6, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    """ISBI-like pairs: Voronoi cells (mask 255) separated by 3-pixel dark walls (mask 0)."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        seeds = rng.uniform(0, size, (20, 2))
        nearest = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
        edge = np.zeros((size, size), bool)
        edge[:, 1:] |= nearest[:, 1:] != nearest[:, :-1]
        edge[1:, :] |= nearest[1:, :] != nearest[:-1, :]
        wall = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        image = np.where(wall, 60, 190) + rng.normal(0, 15, (size, size))
        assert cv2.imwrite(str(images / f"slice_{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
        assert cv2.imwrite(str(masks / f"slice_{i}.png"), np.where(wall, 0, 255).astype(np.uint8))
    return images, masks


def lines_pairs(root: Path, n: int = 6, size: int = 192, seed: int = 0) -> tuple[Path, Path]:
    """Vessel-like pairs: a tree of 2-pixel branches (mask 255) on one connected dark background."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        centre = np.array([size // 2, size // 2]) + rng.integers(-size // 8, size // 8, 2)
        for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False) + rng.uniform(0, 1):
            tip = centre + (0.4 * size * np.array([np.cos(angle), np.sin(angle)])).astype(int)
            cv2.line(mask, tuple(int(v) for v in centre), tuple(int(v) for v in tip), 255, 2)
            twig = tip + (0.15 * size * np.array([np.cos(angle + 0.8), np.sin(angle + 0.8)])).astype(int)
            cv2.line(mask, tuple(int(v) for v in (centre + tip) // 2), tuple(int(v) for v in twig), 255, 2)
        image = np.where(mask > 0, 200, 50) + rng.normal(0, 15, (size, size))
        assert cv2.imwrite(str(images / f"fundus_{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
        assert cv2.imwrite(str(masks / f"fundus_{i}.png"), mask)
    return images, masks
