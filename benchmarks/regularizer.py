"""Cost of the neural-collapse regularizers: a training step with CE against CE + L_W + L_B.

Both variants run `ncstudy.engine.step.train_epoch` (the worker's step) on the same ResNet-32, the same
CIFAR-10-LT (r=100) batches of 128 (same epoch order and augmentation seeds) on the CPU; they differ
only in the regularizer weights: lambda_W = lambda_B = 0 (the regularizer is skipped entirely)
against the paper's CIFAR-10-LT values lambda_W = 0.01, lambda_B = 0.1 (Liu et al., AISTATS 2023,
Table 1) with learnable centres (their own SGD step after every batch, as the released code does).

Each round times `--batches` steps of one variant after `--warmup` untimed ones, then the other;
the order alternates between rounds (AB, BA, AB, ...) so drift on a shared machine cancels. The
claim is the step-time ratio (CE + L_W + L_B) / CE: the median of the per-round ratios, and the ratio
of the best rates; target <= 1.05 (L_W and L_B act on the 64-d pooled features and a 10 x 64 centre
matrix, so their cost should vanish next to the ResNet's).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import CIFAR_PARQUET, write_result
from benchmarks.harness import CIFAR_LT, FirstBatches, cifar_overrides, study_from
from benchmarks.train_step import CE_ONLY, ncstudy_rate
from ncstudy.data.build import build_data, device_splits
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import train_epoch

TARGET = 1.05


def variants(parquet: Path, centers: str) -> dict:
    """name -> StudyConfig: plain CE, and CE with the paper's L_W + L_B weights."""
    base = ["name=regularizer", *cifar_overrides(parquet, epochs=200), "loss.reweight=none", f"regularizer.centers={centers}"]
    return {
        "ce": study_from(CIFAR_LT, [*base, *CE_ONLY]),
        "ce+lw+lb": study_from(CIFAR_LT, [*base, "regularizer.lambda_within=0.01", "regularizer.lambda_between=0.1"]),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before each measurement")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both variants, order alternating")
    parser.add_argument("--centers", choices=("learnable", "ema", "batch"), default="learnable")
    parser.add_argument("--parquet", type=Path, default=CIFAR_PARQUET)
    parser.add_argument("--smoke", action="store_true", help="2 batches, 1 warm-up, 2 rounds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batches, args.warmup, args.rounds = 2, 1, 2

    studies = variants(args.parquet, args.centers)
    data = build_data(studies["ce"].data)
    cpu = torch.device("cpu")
    train, _, _ = device_splits(data, studies["ce"].data, cpu)
    states = {name: TrialState(study, data, cpu) for name, study in studies.items()}
    epoch0 = studies["ce"].train.warmup_epochs

    rates: dict[str, list[float]] = {name: [] for name in studies}
    for round_ in range(args.rounds):
        order = list(studies) if round_ % 2 == 0 else list(reversed(studies))
        for name in order:
            rate = ncstudy_rate(studies[name], states[name], train, data, epoch0 + round_, args.warmup, args.batches)
            rates[name].append(rate)
    terms = train_epoch(epoch0, studies["ce+lw+lb"], states["ce+lw+lb"].model, states["ce+lw+lb"], FirstBatches(train, 1), data, 0, 1)
    ran = terms["loss_within"] > 0 and terms["loss_between"] != 0

    per_round = [c / r for c, r in zip(rates["ce"], rates["ce+lw+lb"])]  # time ratio = inverse rate ratio
    median_ratio = statistics.median(per_round)
    best_ratio = max(rates["ce"]) / max(rates["ce+lw+lb"])
    print(f"{'step (ResNet-32, CIFAR-10-LT, batch 128, CPU)':<48}{'images/s (best)':>16}{'median':>10}")
    for name, values in rates.items():
        print(f"{name:<48}{max(values):>16,.1f}{statistics.median(values):>10,.1f}")
    print(f"step-time ratio (CE + L_W + L_B) / CE: median of rounds {median_ratio:.3f}, of bests {best_ratio:.3f} "
          f"(target <= {TARGET}); regularizer active: {ran}")  # fmt: skip
    record = {
        "batch": studies["ce"].train.batch_size, "batches": args.batches, "warmup": args.warmup, "rounds": args.rounds,
        "centers": args.centers, "lambda_within": 0.01, "lambda_between": 0.1, "smoke": args.smoke,
        "images_per_s": rates, "per_round_time_ratio": per_round, "time_ratio_median": median_ratio,
        "time_ratio_of_bests": best_ratio, "target": TARGET, "regularizer_active": ran,
    }  # fmt: skip
    print(f"written: {write_result('regularizer-smoke' if args.smoke else 'regularizer', record)}")
    return record


if __name__ == "__main__":
    main()
