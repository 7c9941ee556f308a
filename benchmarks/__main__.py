"""`python -m benchmarks [--quick] [NAME ...]`: run the CPU benchmarks one after another.

--quick uses fewer repeats so the whole set fits in a few minutes on 2 cores. Each benchmark prints
its table and writes results/bench/NAME.json.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {"loader": ["--repeats", "3"]}
QUICK = {"loader": ["--repeats", "2"]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], default=[], metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}; default: all")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    for name in args.names or BENCHMARKS:
        print(f"== {name}")
        module = importlib.import_module(f"benchmarks.{name}")
        module.main((QUICK if args.quick else BENCHMARKS)[name])


if __name__ == "__main__":
    main()
