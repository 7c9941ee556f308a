"""Loader throughput: ncstudy's tensor loader against the torchvision/PIL pipeline of LDAM-DRW.

Both deliver the same augmented, normalized training batches of CIFAR-10-LT (r=100, 12,406 images,
batch 128) on the CPU: random crop with 4-pixel padding, horizontal flip, normalization. The
reference is what the long-tailed codebases run (a Dataset holding uint8 arrays, Image.fromarray,
RandomCrop / RandomHorizontalFlip / ToTensor / Normalize, a DataLoader with 2 workers); ncstudy
gathers a batch of uint8 images by index and augments it in one gather. Images per second, best of
`--repeats` epochs each, side by side in one process; the ratio is the claim (target >= 5x).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks.common import CIFAR_PARQUET, best_of, timed, write_result
from ncstudy.config import DataConfig
from ncstudy.data.build import build_data
from ncstudy.data.loader import TensorImages, augmentation, channel_stats, epoch_order, shard_batches

BATCH = 128


class PilCifar(Dataset):
    """The LDAM-DRW / torchvision CIFAR dataset: one PIL image per sample, transformed per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std):
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # HWC, as in the CIFAR pickles
        self.labels = labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean.tolist(), std.tolist()),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_epoch(loader: DataLoader) -> int:
    seen = 0
    for images, _ in loader:
        seen += len(images)
    return seen


def tensor_epoch(train: TensorImages, labels: np.ndarray, epoch: int) -> int:
    seen = 0
    for number, index in shard_batches(epoch_order(labels, 0, epoch), BATCH):
        images, _ = train.batch(index, augmentation(0, epoch, number, True))
        seen += len(images)
    return seen


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parquet", type=Path, default=CIFAR_PARQUET)
    args = parser.parse_args(argv)

    data = build_data(DataConfig(dataset="parquet", root=str(args.parquet), imbalance={"ratio": 100}))
    mean, std = channel_stats(data.train)
    train = TensorImages(data.train, torch.device("cpu"), mean, std)
    epochs = iter(range(1_000))
    tensor = best_of(args.repeats, lambda: timed(lambda: tensor_epoch(train, data.train.labels, next(epochs))))

    reference_loader = DataLoader(
        PilCifar(data.train.images, data.train.labels, mean, std),
        batch_size=BATCH, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
    )  # fmt: skip
    reference = best_of(args.repeats, lambda: timed(lambda: reference_epoch(reference_loader)))

    ratio = tensor["best"] / reference["best"]
    print(f"{'loader':<34}{'images/s (best)':>16}{'median':>10}")
    print(f"{'torchvision + PIL, ' + str(args.workers) + ' workers':<34}{reference['best']:>16,.0f}{reference['median']:>10,.0f}")
    print(f"{'ncstudy tensor loader':<34}{tensor['best']:>16,.0f}{tensor['median']:>10,.0f}")
    print(f"ratio: {ratio:.1f}x (target >= 5x)")
    record = {
        "images": len(data.train), "batch": BATCH, "workers": args.workers,
        "reference_images_per_s": reference, "tensor_images_per_s": tensor, "ratio": ratio, "target": 5.0,
    }  # fmt: skip
    print(f"written: {write_result('loader', record)}")
    return record


if __name__ == "__main__":
    main()
