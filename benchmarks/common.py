"""Shared benchmark plumbing: where the data is, the machine description, and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from ncstudy.data_root import data_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "bench"
# The CIFAR-10 Parquet tables: $NCSTUDY_CIFAR_PARQUET, else cifar10-jpeg/ under the data root ($NCSTUDY_DATA).
CIFAR_PARQUET = Path(os.environ.get("NCSTUDY_CIFAR_PARQUET") or data_root() / "cifar10-jpeg")


def machine() -> dict:
    info = {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def best_of(repeats: int, run: Callable[[], float]) -> dict:
    """Run `run` (returning a rate) `repeats` times: all values, the median and the best."""
    values = [run() for _ in range(repeats)]
    return {"values": values, "median": statistics.median(values), "best": max(values)}


# `python -m benchmarks --quick` sets "-quick", so a quick run (smaller settings) never overwrites the
# full run's NAME.json, which docs/performance.md's table cites.
RESULT_SUFFIX = ""


def write_result(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), **record}
    path = RESULTS / f"{name}{RESULT_SUFFIX}.json"
    path.write_text(json.dumps(record, indent=2))
    return path


def timed(function: Callable[[], int]) -> float:
    """Items per second of a call that returns how many items it processed."""
    start = time.perf_counter()
    items = function()
    return items / (time.perf_counter() - start)
