"""Neural-collapse metrics on the CPU: the direct function against the streaming accumulator.

50,000 x 64 float32 features of K = 100 classes (labels drawn from an exponential profile with
imbalance ratio 100, as CIFAR-100-LT's; ResNet-32's feature dim), a K x 64 linear classifier.
`neural_collapse` (NC1-NC4 on the features in memory) against `ClassMoments` fed batches of 1024:
pass 1 the moments and `finalize`, pass 2 `nc4_mismatches`, once with the class counts given (one
weighted P x P sum, what training uses) and once without (per-class second moments). Seconds per
full evaluation, best of `--repeats`; target under 1 s each.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import best_of, timed, write_result
from ncstudy.method.metrics import neural_collapse
from ncstudy.method.nc_stream import ClassMoments, nc4_mismatches

SAMPLES, FEATURE_DIM, CLASSES, BATCH, RATIO = 50_000, 64, 100, 1024, 100


def synthetic(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, labels, weight, bias): class centres plus unit noise, long-tailed labels."""
    generator = torch.Generator().manual_seed(seed)
    profile = RATIO ** (-torch.arange(CLASSES, dtype=torch.float64) / (CLASSES - 1))
    labels = torch.multinomial(profile, SAMPLES, replacement=True, generator=generator)
    centres = torch.randn(CLASSES, FEATURE_DIM, generator=generator) * 2 + 1
    features = centres[labels] + torch.randn(SAMPLES, FEATURE_DIM, generator=generator)
    weight = torch.randn(CLASSES, FEATURE_DIM, generator=generator)
    return features, labels, weight, torch.randn(CLASSES, generator=generator)


def streamed(features, labels, weight, bias, counts: torch.Tensor | None) -> dict[str, float]:
    """NC1-NC4 over batches: moments, then the NC4 pass with the final means."""
    moments = ClassMoments(CLASSES, FEATURE_DIM, counts=counts)
    for start in range(0, len(labels), BATCH):
        moments.update(features[start : start + BATCH], labels[start : start + BATCH])
    result = moments.all_reduce().finalize(weight)
    classes, means = moments.class_means()
    mismatches = 0
    for start in range(0, len(labels), BATCH):
        batch = features[start : start + BATCH]
        mismatches += nc4_mismatches(batch, batch @ weight.t() + bias, means, classes)[0]
    result["nc4"] = mismatches / len(labels)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    features, labels, weight, bias = synthetic()
    counts = torch.bincount(labels, minlength=CLASSES)
    runs = {
        "direct neural_collapse": lambda: neural_collapse(features, labels, CLASSES, weight, bias),
        f"ClassMoments, counts, batch {BATCH}": lambda: streamed(features, labels, weight, bias, counts),
        f"ClassMoments, per-class, batch {BATCH}": lambda: streamed(features, labels, weight, bias, None),
    }
    results = {name: run() for name, run in runs.items()}  # warm-up, and the values compared below
    rates = {name: best_of(args.repeats, lambda run=run: timed(lambda: (run(), SAMPLES)[1])) for name, run in runs.items()}
    reference = results["direct neural_collapse"]
    gap = max(abs(result[key] - reference[key]) / max(abs(reference[key]), 1e-12) for result in results.values() for key in reference)

    print(f"{'NC1-NC4, 50,000 x 64, K = 100':<40}{'s (best)':>10}{'median':>10}{'samples/s':>14}")
    for name, rate in rates.items():
        print(f"{name:<40}{SAMPLES / rate['best']:>10.3f}{SAMPLES / rate['median']:>10.3f}{rate['best']:>14,.0f}")
    print(f"largest relative difference from the direct values: {gap:.1e}; target < 1 s each")
    record = {
        "samples": SAMPLES, "feature_dim": FEATURE_DIM, "classes": CLASSES, "batch": BATCH,
        "samples_per_s": rates, "best_seconds": {name: SAMPLES / rate["best"] for name, rate in rates.items()},
        "max_relative_difference": gap, "target_seconds": 1.0, "values": reference,
    }  # fmt: skip
    print(f"written: {write_result('nc_metrics', record)}")
    return record


if __name__ == "__main__":
    main()
