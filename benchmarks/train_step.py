"""Training throughput: ncstudy's training step against a plain LDAM-DRW-style loop, side by side.

Both train the same ResNet-32 (ncstudy.models.resnet_cifar.resnet32, 64-d features) on CIFAR-10-LT
(r=100, 12,406 images, from the Parquet tables) with cross-entropy and SGD (lr 0.1, momentum 0.9,
weight decay 5e-4), batch 128, random crop (pad 4) + horizontal flip + normalization, on the CPU.

- ncstudy: `ncstudy.engine.step.train_epoch` on the tensor-resident `TensorImages` split (batched
  augmentation by index, no DataLoader), regularizer off (lambda_W = lambda_B = 0), the worker's
  exact step: forward, loss, backward, optimizer step and the per-batch loss bookkeeping.
- reference: the loop of LDAM-DRW's cifar_train.py (Cao et al., NeurIPS 2019; the code the paper
  builds on): a torchvision `DataLoader` (2 worker processes, shuffle) over a Dataset that does
  `Image.fromarray` + RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize per
  image (benchmarks.loader.PilCifar), then forward, CE, `loss.item()` and top-1 bookkeeping,
  zero_grad, backward, step.

Each measurement trains `--warmup` untimed batches, then times `--batches` batches; the two loops
alternate (ncstudy, reference, ncstudy, ...) `--repeats` times in one process. Images per second,
best and median; the claim is the ratio of the bests. On a CPU the ResNet's arithmetic dominates
both, so expect a ratio near the share of time the reference spends waiting on its loader; the
order-of-magnitude claim of the issue is for a GPU (benchmarks/gpu.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.common import CIFAR_PARQUET, write_result
from benchmarks.harness import CIFAR_LT, FirstBatches, cifar_overrides, study_from
from benchmarks.loader import PilCifar
from ncstudy.data.build import build_data, device_splits
from ncstudy.data.loader import channel_stats
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import train_epoch
from ncstudy.models.resnet_cifar import resnet32

CE_ONLY = ["loss.reweight=none", "regularizer.lambda_within=0", "regularizer.lambda_between=0"]


def ncstudy_rate(study, state, train, data, epoch: int, warmup: int, batches: int) -> float:
    """Images/s of `batches` steps of train_epoch after `warmup` untimed ones."""
    train_epoch(epoch, study, state.model, state, FirstBatches(train, warmup), data, 0, 1)
    start = time.perf_counter()
    train_epoch(epoch, study, state.model, state, FirstBatches(train, batches), data, 0, 1)
    return batches * study.train.batch_size / (time.perf_counter() - start)


def reference_step(model, optimizer, images, labels) -> None:
    """One step as LDAM-DRW's train(): forward, CE, loss.item() and top-1, zero_grad, backward, step."""
    logits, _ = model(images)
    loss = F.cross_entropy(logits, labels)
    _ = loss.item(), (logits.argmax(dim=1) == labels).float().mean().item()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def reference_rate(loader: DataLoader, model, optimizer, warmup: int, batches: int) -> float:
    """Images/s of `batches` steps from a fresh pass over the DataLoader, after `warmup` steps."""
    model.train()
    iterator = iter(loader)
    for _ in range(warmup):
        reference_step(model, optimizer, *next(iterator))
    seen = 0
    start = time.perf_counter()
    for _ in range(batches):
        images, labels = next(iterator)
        reference_step(model, optimizer, images, labels)
        seen += len(labels)
    return seen / (time.perf_counter() - start)


def summary(values: list[float]) -> dict:
    return {"values": values, "median": statistics.median(values), "best": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    parser.add_argument("--parquet", type=Path, default=CIFAR_PARQUET)
    parser.add_argument("--smoke", action="store_true", help="2 batches, 1 warm-up, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches, args.warmup, args.repeats = 2, 1, 1

    study = study_from(CIFAR_LT, ["name=train_step", *cifar_overrides(args.parquet, epochs=200), *CE_ONLY])
    data = build_data(study.data)
    cpu = torch.device("cpu")
    train, _, _ = device_splits(data, study.data, cpu)
    state = TrialState(study, data, cpu)
    batches_per_epoch = -(-len(data.train) // study.train.batch_size)
    if args.warmup + args.batches > batches_per_epoch:
        parser.error(f"--warmup + --batches must fit in one epoch ({batches_per_epoch} batches)")

    mean, std = channel_stats(data.train)
    loader = DataLoader(
        PilCifar(data.train.images, data.train.labels, mean, std), batch_size=study.train.batch_size,
        shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
    )  # fmt: skip
    torch.manual_seed(study.train.seed)
    model = resnet32(data.num_classes)
    t = study.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)

    ours, reference = [], []
    for repeat in range(args.repeats):
        ours.append(ncstudy_rate(study, state, train, data, t.warmup_epochs + repeat, args.warmup, args.batches))
        reference.append(reference_rate(loader, model, optimizer, args.warmup, args.batches))
    ours_s, reference_s = summary(ours), summary(reference)
    ratio = ours_s["best"] / reference_s["best"]

    print(f"{'training loop (ResNet-32, CIFAR-10-LT, batch 128)':<52}{'images/s (best)':>16}{'median':>10}")
    print(f"{f'reference: DataLoader + PIL, {args.workers} workers':<52}{reference_s['best']:>16,.0f}{reference_s['median']:>10,.0f}")
    print(f"{'ncstudy: train_epoch on TensorImages':<52}{ours_s['best']:>16,.0f}{ours_s['median']:>10,.0f}")
    print(f"ratio: {ratio:.2f}x  ({args.batches} batches after {args.warmup} warm-up, {args.repeats} alternating repeats, "
          f"{torch.get_num_threads()} torch threads)")  # fmt: skip
    record = {
        "images": len(data.train), "batch": t.batch_size, "batches": args.batches, "warmup": args.warmup,
        "repeats": args.repeats, "workers": args.workers, "smoke": args.smoke,
        "reference_images_per_s": reference_s, "ncstudy_images_per_s": ours_s, "ratio": ratio,
    }  # fmt: skip
    print(f"written: {write_result('train_step-smoke' if args.smoke else 'train_step', record)}")
    return record


if __name__ == "__main__":
    main()
