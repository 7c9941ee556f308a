"""Plumbing shared by the trial benchmarks (not a benchmark itself): study configs, a private local
Ray, a trial run without Ray, a split cut to its first batches, and per-process memory from /proc.

`bare_trial` runs one trial through the engine (ncstudy.engine) in this process, exactly as
`python -m ncstudy train` (ncstudy.single_run) does: the data cut from the decoded source it is given
(ncstudy.data.build.build_data), the trial state, the splits on the device, and `run_epochs`, each
epoch's checkpoint written by `write_checkpoint` into a temporary folder, as every runner does, and
its report collected. That is the same code every runner trains with (the Tune trial actor of a
single-worker trial, ncstudy.study.in_trial; the Ray Train workers of a DDP trial, ncstudy.study.train_worker), so the
bare run is a trial as a plain training script would run it, and what it lacks is what Ray and the
study add: scheduling, actors, the object store, Tune, persisting checkpoints, MLflow, the result
tables, the figures and the report. It imports no Ray.

`start_local_ray` starts a Ray of its own, like `ncstudy.study.cluster.init_ray` does with address
"local", but sized to the benchmark's CPUs; it never joins a running one (`address="auto"`): on a
shared machine that could be someone else's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncstudy.config import StudyConfig, load_study

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"
CIFAR_LT = ROOT / "studies" / "cifar_lt.yaml"


def study_from(path: Path, overrides: list[str], drop_space: tuple[str, ...] = ()) -> StudyConfig:
    """A study file with `--set`-style overrides, minus some search-space keys."""
    study = load_study(path, overrides)
    if not drop_space:
        return study
    tree = study.model_dump(mode="json")
    for key in drop_space:
        tree["search"]["space"].pop(key, None)
    return StudyConfig.model_validate(tree)


def cifar_overrides(parquet: Path, epochs: int, n_max: int | None = None, cpus: float = 2) -> list[str]:
    """studies/cifar_lt.yaml on the CPU: the Parquet tables given, no GPU, one worker, no search and no
    strata (the study's ratio, 100, only: one trial), and no DRW (the study's epoch 160 is past a
    benchmark's few epochs, which validation refuses; the earlier measurements trained these trials
    without it too, the weights never switching on)."""
    overrides = [
        f"data.root={parquet}", f"train.epochs={epochs}", "train.warmup_epochs=1", "loss.reweight=none", "resources.gpus_per_worker=0",
        f"resources.cpus_per_worker={cpus}", "resources.max_failures=0", "search.num_samples=1",
        "search.max_concurrent=1", "search.space={}", "search.strata={}",
    ]  # fmt: skip
    if n_max is not None:
        overrides.append(f"data.imbalance.n_max={n_max}")
    return overrides


def start_local_ray(num_cpus: int) -> float:
    """A fresh local Ray of `num_cpus` CPUs with the settings `ncstudy.study.cluster.init_ray` gives a local
    instance (its RAY_ENV, quiet logging); returns how long it took to start (s)."""
    import ray

    from ncstudy.study.cluster import RAY_ENV

    started = time.perf_counter()
    ray.init(
        address="local", num_cpus=num_cpus, logging_level=logging.WARNING, log_to_driver=False,
        runtime_env={"env_vars": RAY_ENV},
    )  # fmt: skip
    return time.perf_counter() - started


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@dataclass
class TimedStudy:
    """A study run by `study_on_local_ray`: its outcome, results folder and times (s)."""

    outcome: Any
    folder: Path
    ray_init_s: float
    wall_s: float


@contextmanager
def study_on_local_ray(study: StudyConfig, cpus: int, prefix: str) -> Iterator[TimedStudy]:
    """Run `study` through `ncstudy.study.driver.run_study` on a fresh local Ray of `cpus` CPUs, into a
    temporary results folder that exists while the caller reads it; `ray.init` is timed apart."""
    from ncstudy.study.driver import run_study

    init = start_local_ray(cpus)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as folder:
            start = time.perf_counter()
            outcome = run_study(study, Path(folder))
            yield TimedStudy(outcome, Path(folder), init, time.perf_counter() - start)
    finally:
        stop_ray()


def bare_trial(
    study: StudyConfig,
    source: Any = None,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Run one trial through the engine, without Ray, as ncstudy.single_run does; returns every
    epoch's metrics. `source` (a decoded ncstudy.data.sources.Source, the object-store copy of a
    study) saves decoding the data set again; `on_report` sees each epoch's metrics after its
    checkpoint is written and may raise (e.g. optuna.TrialPruned) to stop the trial."""
    import torch

    from ncstudy.data.build import build_data, device_splits
    from ncstudy.engine.checkpoint import write_checkpoint
    from ncstudy.engine.loop import EpochEnd, Splits, run_epochs, static_metrics
    from ncstudy.engine.state import TrialState

    target = torch.device(device)
    data = build_data(study.data, source)
    state = TrialState(study, data, target)
    splits = Splits(*device_splits(data, study.data, target))
    reports: list[dict[str, Any]] = []

    def on_epoch(end: EpochEnd) -> None:
        with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as folder:  # as ncstudy.study.in_trial and ncstudy.study.train_worker
            write_checkpoint(Path(folder), state, end.epoch, end.final, data)
        reports.append(dict(end.metrics))
        if on_report is not None:
            on_report(end.metrics)

    run_epochs(study, data, state, state.model, splits, static_metrics(data, 1), on_epoch)
    return reports


class FirstBatches:
    """A DeviceSplit that yields only the first `count` training batches of `split` (and its labels),
    so a benchmark can time a fixed number of steps through ncstudy.engine.step.train_epoch."""

    def __init__(self, split: Any, count: int):
        self.split = split
        self.count = count
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.split)

    def train_batches(self, *args: Any, **kwargs: Any) -> Iterator:
        for position, batch in enumerate(self.split.train_batches(*args, **kwargs)):
            if position >= self.count:
                return
            yield batch

    def eval_batches(self, *args: Any, **kwargs: Any) -> Iterator:
        return self.split.eval_batches(*args, **kwargs)


MEMORY_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
PSS_FIELDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def process_memory(pid: int, pss: bool = True) -> dict[str, int]:
    """Bytes of /proc/PID/status (peak and current resident set, split into anonymous = private,
    file-backed and shared memory) and, with `pss` and where readable, the proportional set sizes of
    /proc/PID/smaps_rollup (shared pages divided among the processes that map them; reading it
    costs the kernel milliseconds per process, status microseconds). {} if the process is gone."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in MEMORY_FIELDS:
                values[key] = int(rest.split()[0]) * 1024
        rollup = Path(f"/proc/{pid}/smaps_rollup")
        for line in rollup.read_text().splitlines() if pss and rollup.exists() else []:
            key, _, rest = line.partition(":")
            if key in PSS_FIELDS:
                values[key] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return values


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def mib(value: float) -> float:
    return value / 1024**2
