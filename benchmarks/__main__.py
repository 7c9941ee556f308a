"""`python -m benchmarks [--quick] [NAME ...]`: run the CPU benchmarks one after another.

--quick uses fewer repeats and smaller trials so the whole set fits in under 10 minutes on 2 cores.
Each benchmark prints its table and writes results/bench/NAME.json (NAME-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks import common

BENCHMARKS = {
    "loader": ["--repeats", "3"],
    "train_step": ["--batches", "20", "--warmup", "3", "--repeats", "3"],
    "regularizer": ["--batches", "20", "--warmup", "2", "--rounds", "4"],
    "ray_overhead": ["--trial", "cifar", "--epochs", "15", "--n-max", "500"],
    "concurrency": ["--trials", "4", "--epochs", "12"],
    "memory": [],
    "search_efficiency": ["--trials", "12", "--epochs", "12", "--seeds", "5", "--asha"],
    "nc_metrics": ["--repeats", "3"],
    "validation_scaling": [],
}
# --quick: an estimated 7-8 minutes in all on 2 quiet cores (loader ~20 s, train_step ~40 s, regularizer ~35 s,
# ray_overhead ~45 s, concurrency ~1.5 min, memory ~2 min, search_efficiency ~1.5 min); the full set an
# estimated 25-30 minutes (memory ~7, search_efficiency ~6, ray_overhead ~5, concurrency ~4 minutes).
QUICK = {
    "loader": ["--repeats", "2"],
    "train_step": ["--batches", "10", "--warmup", "2", "--repeats", "2"],
    "regularizer": ["--batches", "10", "--warmup", "1", "--rounds", "2"],
    "ray_overhead": ["--trial", "digits", "--epochs", "12", "--marginal", "3", "--fresh-actors"],
    "concurrency": ["--trials", "2", "--epochs", "12"],
    "memory": ["--scenarios", "quickstart", "cifar", "cifar2", "--quick-epochs", "4", "--cifar-n-max", "500"],
    "search_efficiency": ["--trials", "8", "--epochs", "4", "--seeds", "5", "--asha"],
    "nc_metrics": ["--repeats", "2"],
    "validation_scaling": ["--variants", "100", "1000"],
}
# benchmarks/gpu.py is not listed: it is run once on a GPU machine (python -m benchmarks.gpu).


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)}; default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.quick:
        common.RESULT_SUFFIX = "-quick"
    for name in args.names or BENCHMARKS:
        print(f"== {name}")
        module = importlib.import_module(f"benchmarks.{name}")
        module.main((QUICK if args.quick else BENCHMARKS)[name])


if __name__ == "__main__":
    main()
