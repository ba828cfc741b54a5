"""What a careful user writes instead of ``unetseg init``: a plain training loop around a
MONAI ``UNet`` or an smp ``Unet`` (ResNet-34 encoder from scratch), the planning panel's peers.

Written the way such a loop is written in an afternoon, and deliberately not tuned per
dataset: AdamW at 1e-3, BCE + soft Dice (MONAI's ``DiceCELoss`` with a sigmoid), flips and
90-degree rotations, batches of 8, a wall-clock budget, the final weights. Microscopy and
vessels train on random 256 x 256 crops at full resolution and predict with MONAI's sliding
window; photographs (``--resize``) train and predict on whole images resized to 256 px on the
long side, the prediction resized back to the image's size.

    python benchmarks/panel_peers.py --arch monai --train DATA/train --test DATA/test/images \
        --out PRED --seed 0 --budget 480 [--foreground-zero] [--resize]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
CROP = 256
BATCH = 8
LR = 1e-3


def build(arch: str, channels: int) -> torch.nn.Module:
    if arch == "monai":
        from monai.networks.nets import UNet

        return UNet(2, channels, 1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, in_channels=channels, classes=1)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, channels: int) -> np.ndarray:
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imread(str(path), flag)
    if image is None:
        raise SystemExit(f"{path}: cannot be read")
    image = image[..., ::-1] if channels == 3 else image[..., None]
    return np.ascontiguousarray(image)


def channels_of(paths: list[Path]) -> int:
    """3 if any image is in colour (grey ones are repeated), else 1."""
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None and not (
            np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        ):
            return 3
    return 1


def resized(image: np.ndarray, long_side: int, interpolation: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    size = (max(16, round(w * scale / 16) * 16), max(16, round(h * scale / 16) * 16))
    out = cv2.resize(image, size, interpolation=interpolation)
    return out if out.ndim == 3 else out[..., None]


def load_pairs(train: Path, channels: int, zero: bool, resize: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    masks = {p.stem: p for p in files(train / "masks")}
    pairs = []
    for path in files(train / "images"):
        image = read_image(path, channels)
        mask = cv2.imread(str(masks[path.stem]), cv2.IMREAD_UNCHANGED)
        mask = mask.max(axis=2) if mask.ndim == 3 else mask
        target = ((mask == 0) if zero else (mask > 0)).astype(np.uint8)[..., None]
        if resize:
            image, target = resized(image, CROP, cv2.INTER_AREA), resized(target, CROP, cv2.INTER_NEAREST)
        pairs.append((image, target))
    return pairs


def crop(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    ph, pw = max(0, CROP - h), max(0, CROP - w)
    if ph or pw:
        pad = ((0, ph), (0, pw), (0, 0))
        image, mask = np.pad(image, pad, mode="reflect"), np.pad(mask, pad, mode="reflect")
        h, w = image.shape[:2]
    y, x = rng.integers(0, h - CROP + 1), rng.integers(0, w - CROP + 1)
    return image[y : y + CROP, x : x + CROP], mask[y : y + CROP, x : x + CROP]


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, k: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flips, and ``k`` quarter turns (drawn here unless given: a batch of whole non-square
    images turns together, or its images would not stack)."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    k = int(rng.integers(0, 4)) if k is None else k
    return np.rot90(image, k), np.rot90(mask, k)


def batch(pairs: list, rng: np.random.Generator, resize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = [], []
    if resize:  # whole resized images; one size per batch (the first one drawn), like a user's bucketing
        first = pairs[int(rng.integers(len(pairs)))]
        same = [p for p in pairs if p[0].shape == first[0].shape]
        chosen = [same[int(rng.integers(len(same)))] for _ in range(BATCH)]
    else:
        chosen = [crop(*pairs[int(rng.integers(len(pairs)))], rng) for _ in range(BATCH)]
    turns = int(rng.integers(0, 4)) if resize else None
    for image, mask in chosen:
        image, mask = augment(image, mask, rng, turns)
        images.append(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0)
        masks.append(np.ascontiguousarray(mask.transpose(2, 0, 1), dtype=np.float32))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def train(
    model: torch.nn.Module, pairs: list, budget: float, seed: int, resize: bool, clock: str = "wall"
) -> dict[str, float]:
    """Train until ``budget`` seconds have passed on ``clock`` (``cpu``: the process's CPU
    seconds per thread, as ``train.budget_clock: cpu``)."""
    threads = torch.get_num_threads()
    now = time.perf_counter if clock == "wall" else lambda: time.process_time() / threads
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    loss_fn = DiceCELoss(sigmoid=True)
    model.train()
    start, cpu, steps, origin = time.perf_counter(), time.process_time(), 0, now()
    while now() - origin < budget:
        x, y = batch(pairs, rng, resize)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
    seconds = time.perf_counter() - start
    share = (time.process_time() - cpu) / (seconds * torch.get_num_threads())
    return {
        "cpu_share": round(share, 3),
        "train_s": round(seconds, 1),
        "steps": steps,
        "crops": steps * BATCH,
        "crops_per_s": round(steps * BATCH / seconds, 2),
    }


@torch.inference_mode()
def predict(model: torch.nn.Module, test: Path, out: Path, channels: int, zero: bool, resize: bool) -> int:
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in files(test):
        image = read_image(path, channels)
        h, w = image.shape[:2]
        source = resized(image, CROP, cv2.INTER_AREA) if resize else image
        x = torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1), dtype=np.float32) / 255.0)[None]
        logits = model(x) if resize else sliding_window_inference(x, (CROP, CROP), 4, model, overlap=0.25)
        prob = torch.sigmoid(logits)[0, 0].numpy()
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        fg = prob > 0.5
        cv2.imwrite(str(out / f"{path.stem}.png"), np.where(fg != zero, 255, 0).astype(np.uint8))
        count += 1
    return count


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("monai", "smp"), required=True)
    parser.add_argument("--train", type=Path, required=True, help="folder with images/ and masks/")
    parser.add_argument("--test", type=Path, required=True, help="test image folder")
    parser.add_argument("--out", type=Path, required=True, help="prediction folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--foreground-zero", action="store_true", help="mask value 0 is the structure")
    parser.add_argument("--resize", action="store_true", help="photographs: whole images at 256 px")
    parser.add_argument("--json", type=Path, help="write the run's numbers here")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what --budget counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    channels = channels_of(files(args.train / "images"))
    pairs = load_pairs(args.train, channels, args.foreground_zero, args.resize)
    model = build(args.arch, channels)
    result: dict[str, object] = {"arch": args.arch, "channels": channels, "seed": args.seed, "budget_s": args.budget}
    result.update(train(model, pairs, args.budget, args.seed, args.resize, args.clock))
    start = time.perf_counter()
    result["predicted"] = predict(model, args.test, args.out, channels, args.foreground_zero, args.resize)
    result["predict_s"] = round(time.perf_counter() - start, 1)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
