"""GPU throughput and memory of one CIFAR-10-LT trial (one run on one NVIDIA H200, under 8 minutes).

What runs: the engine itself (ncstudy.engine), the code every runner trains with, on the trial of
studies/cifar_lt.yaml: ResNet-32 / CIFAR-10-LT r=100 (12,386 training images after the validation
hold-out, batch 128, SGD, NC-DRW: CE + L_W + L_B with learnable centres, lambda_W 0.01 and lambda_B
0.1, the paper's CIFAR-10-LT row), its data tensor-resident on the device (`TensorImages`, batched
random crop + flip by index), bf16 autocast and channels_last on CUDA (ncstudy's CUDA defaults,
train.precision auto and model.channels_last). Each measured trial is `ncstudy.engine.loop.run_epochs`
on a fresh TrialState, exactly as `python -m ncstudy train` runs it: `train_epoch` (the engine's
step, its loss terms summed on the device, read once per epoch), the validation pass, and each
epoch's checkpoint written by `write_checkpoint` to a temporary folder; `train.compile` (none,
default, reduce-overhead) is applied by run_epochs itself. The training split is wrapped so that each
epoch's pass is timed from its first batch to the end of its last step (device synchronized at both
ends); the script stops the trial after its epochs (metrics.every 0, so no NC measurement in them)
and times one NC measurement (`ncstudy.engine.measure.measure_collapse`, train and test features)
after it. No Ray, Optuna or MLflow is imported (the record lists any that were: `foreign_modules`).

Measured per `train.compile` mode (`--modes`; each mode from a cold compiler cache, as a trial
process starts):

- images/s of the trial's training passes over `--epochs` epochs from ncstudy's loader, after
  `--warmup-epochs` untimed ones (the first holds compilation, and the recompile or new CUDA graph
  of the epoch's last, partial batch); the first epoch's time on its own;
- images/s over `--resident-epochs` epochs of 8 augmented batches made beforehand and cycled
  (`resident batches`), so the step runs without the loader, whose per-batch index copies and
  augmentation draws come from the CPU: the loader's share of the step;
- the validation pass and the checkpoint write per epoch (from the engine's `epoch_time_s`), and
  the NC measurement;
- GPU memory of the trial: torch.cuda.max_memory_allocated and max_memory_reserved over its epochs
  and NC measurement, data on the GPU included, plus the CUDA context (from mem_get_info), and the
  number of such trials that fit in the GPU's memory;
- the projected wall time of the 200-epoch trial: 200 x (an epoch's training at the measured rate +
  validation + checkpoint) + 20 NC measurements (metrics.every 10, the study's) + the first epoch's
  excess over a steady one (compilation); the trial's start (data, model) is not included.

Also: images/s of eager CE alone (loss.reweight none, no L_W or L_B) against the trial's, the
regularizers' time ratio on the GPU; the loader alone (its ceiling); and, last and only if time is
left, the aggregate images/s of 1, 2, 4, 8, 16 trial processes sharing the GPU (`--pack`, each the
engine's `train_epoch` on its own TrialState in `--pack-mode`, stepping for `--pack-seconds` after
the others are ready).

The stages run in that order, each only if `--budget-s` leaves time for it; the JSON is rewritten
after every stage, to results/bench/gpu.json and, if $OUT is set, $OUT/gpu.json. Without CUDA the
script warns and runs on the CPU (fp32, no channels_last, compile skipped unless `--modes` names it),
which is what `--smoke` is for (n_max 100: 242 training images, 2 batches an epoch; one epoch from
the loader and one of resident batches per trial; validation and test cut to their first 1,024
images (4 evaluation batches); pack 1 and 2 for 2 s; written to gpu-smoke.json).

On the device machine its python3 (3.12) has torch, numpy, pyarrow, pillow and pyyaml but not
pydantic, which ncstudy.config needs (the engine is configured by a StudyConfig). Carry it as
wheels; in the repository root here, once:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
    mkdir -p .data && cp -r "$NCSTUDY_DATA"/cifar10-jpeg .data/    # 18 MB; .data/ is git-ignored

and run (carry [".whl", ".data"], timeout_s about 480; the default --budget-s is 360):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import CIFAR_PARQUET, ROOT, machine, write_result

try:  # the first import to reach ncstudy.config, which needs pydantic; the device machine's python lacks it
    from benchmarks.harness import CIFAR_LT, study_from
except ModuleNotFoundError as missing:
    if missing.name not in ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions"):
        raise
    raise SystemExit(f"{missing.name} is missing: carry pydantic's wheels (see the docstring of benchmarks/gpu.py)") from None
from ncstudy.config import StudyConfig
from ncstudy.data.build import StudyData, build_data, device_splits
from ncstudy.data.loader import epoch_order
from ncstudy.engine.checkpoint import write_checkpoint
from ncstudy.engine.evaluation import EVAL_BATCH
from ncstudy.engine.loop import EpochEnd, Splits, run_epochs, static_metrics
from ncstudy.engine.measure import measure_collapse
from ncstudy.engine.recipe import use_bf16
from ncstudy.engine.state import TrialState
from ncstudy.engine.step import train_epoch

DEFAULT_PARQUET = ROOT / ".data" / "cifar10-jpeg"
MODES = ("none", "default", "reduce-overhead")  # train.compile
MODE_NAMES = {"none": "eager", "default": "compile", "reduce-overhead": "reduce-overhead"}
CE_ONLY = ["loss.reweight=none", "regularizer.lambda_within=0", "regularizer.lambda_between=0"]
RESIDENT_DISTINCT = 8
COMPILE_ESTIMATE_S = 150  # what a compiled mode's trial is assumed to need when checking the budget
FOREIGN = ("ray", "optuna", "mlflow")  # none of these belongs in this process (pyarrow may load pandas where installed)
SMOKE_DATA = ("data.imbalance.n_max=100",)  # --smoke: 242 training images, 2 batches an epoch


class EnoughEpochs(Exception):
    """Raised from the epoch callback to end a trial after the epochs it was to run."""


# ---------------------------------------------------------------- setup


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    warnings.warn("CUDA is not available: running on the CPU (numbers are not GPU numbers)", stacklevel=2)
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trial_study(parquet: Path, cache_dir: str | None, mode: str = "none", extra: tuple[str, ...] = ()) -> StudyConfig:
    """The trial of studies/cifar_lt.yaml (its 200 epochs, DRW at 160, lambdas of Table 1), on the
    Parquet tables given, with `train.compile` `mode`, no search; metrics.every 0, as the script
    times the NC measurement on its own (the projection uses the study's every 10)."""
    overrides = ["name=gpu", f"data.root={parquet}", f"train.compile={mode}", "metrics.every=0", "search.space={}", *extra]
    if cache_dir:
        overrides.append(f"data.cache_dir={cache_dir}")
    return study_from(CIFAR_LT, overrides)


def load_data(study: StudyConfig, device: torch.device) -> tuple[StudyData, tuple]:
    """The trial's data cut and its (train, val, test) splits on the device."""
    data = build_data(study.data)
    return data, device_splits(data, study.data, device)


class TimedSplit:
    """A DeviceSplit around one of the trial's splits, for the engine to use as the split itself.
    Each training pass (`train_batches`, one call per epoch of train_epoch) is timed from its first
    batch to the end of its last step, the device synchronized at both ends, and recorded in
    `passes`. `source` "resident" makes a pass cycle batches made beforehand instead of the loader's;
    `limit` cuts a pass to its first batches, and `deadline` (perf_counter) ends it at that time."""

    def __init__(self, split: Any, device: torch.device, limit: int | None = None):
        self.split, self.device, self.limit = split, device, limit
        self.labels = split.labels
        self.source = "loader"
        self.deadline: float | None = None
        self.resident: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.passes: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.split)

    def make_resident(self, batch_size: int, seed: int, augment: bool) -> None:
        """RESIDENT_DISTINCT full augmented batches from the loader, kept on the device."""
        order = epoch_order(self.labels.cpu().numpy(), seed, 5)
        for _, images, labels in self.split.train_batches(order, batch_size, 0, 1, seed, 5, augment):
            if len(labels) == batch_size:
                self.resident.append((images, labels))
            if len(self.resident) == RESIDENT_DISTINCT:
                break

    def _resident_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for number in range(len(order) // batch_size):
            yield (number, *self.resident[number % len(self.resident)])

    def train_batches(self, order, batch_size, rank, world_size, seed, epoch, augment) -> Iterator:
        if self.source == "resident":
            stream = self._resident_batches(order, batch_size)
        else:
            stream = self.split.train_batches(order, batch_size, rank, world_size, seed, epoch, augment)
        synchronize(self.device)
        start, images, batches = time.perf_counter(), 0, 0
        for number, batch, labels in stream:
            if (self.limit is not None and batches >= self.limit) or (self.deadline is not None and time.perf_counter() > self.deadline):
                break
            yield number, batch, labels
            images += len(labels)
            batches += 1
        synchronize(self.device)
        self.passes.append({"source": self.source, "seconds": time.perf_counter() - start, "images": images, "batches": batches})

    def eval_batches(self, *args: Any, **kwargs: Any) -> Iterator:
        return self.split.eval_batches(*args, **kwargs)


class EvalCut:
    """A validation or test split cut to its first `batches` evaluation batches, labels included, so
    the NC measurement's class counts match what it sees (--smoke: a CPU evaluates 10,000 test images
    slowly)."""

    def __init__(self, split: Any, batches: int):
        self.split, self.batches = split, batches
        self.labels = split.labels[: batches * EVAL_BATCH]

    def __len__(self) -> int:
        return len(self.labels)

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator:
        assert batch_size == EVAL_BATCH and world_size == 1, "cut for the engine's one-worker evaluation"
        for position, batch in enumerate(self.split.eval_batches(batch_size, rank, world_size)):
            if position >= self.batches:
                return
            yield batch


# ---------------------------------------------------------------- one trial through the engine


def gpu_memory(device: torch.device, context: int | None) -> dict:
    """Peaks since the last reset, this process's CUDA context, and how many such trials fit."""
    free, total = torch.cuda.mem_get_info()
    if context is None:
        context = max(total - free - torch.cuda.memory_reserved(), 0)  # this process's CUDA context and libraries
    peak_allocated, peak_reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    per_trial = peak_reserved + context
    return {
        "gpu_total_bytes": total, "peak_allocated_bytes": peak_allocated, "peak_reserved_bytes": peak_reserved,
        "cuda_context_bytes": context, "per_trial_bytes": per_trial, "trials_fit_by_memory": int(0.95 * total // per_trial),
    }  # fmt: skip


def run_trial(
    study: StudyConfig, data: StudyData, splits: tuple, device: torch.device, plan: list[str], warmup: int,
    eval_cut: int | None, context: int | None, nc: bool = True,
) -> dict:  # fmt: skip
    """The engine's run_epochs on a fresh TrialState for len(plan) epochs (plan: each epoch's batch
    source, "loader" or "resident"), then one NC measurement; the first `warmup` epochs untimed.
    `eval_cut` cuts validation and test to their first evaluation batches (--smoke)."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    state = TrialState(study, data, device)
    train, val, test = TimedSplit(splits[0], device), splits[1], splits[2]
    if eval_cut is not None:
        val, test = EvalCut(val, eval_cut), EvalCut(test, eval_cut)
    if "resident" in plan:
        train.make_resident(study.train.batch_size, study.train.seed, data.augment)
    epochs: list[dict[str, Any]] = []

    def on_epoch(end: EpochEnd) -> None:
        synchronize(device)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-gpu-") as folder:  # as every runner writes it
            write_checkpoint(Path(folder), state, end.epoch, end.final, data)
        checkpoint_s = time.perf_counter() - start
        done = train.passes[-1]
        epochs.append({
            **done, "epoch_time_s": end.metrics["epoch_time_s"], "rest_s": end.metrics["epoch_time_s"] - done["seconds"],
            "checkpoint_s": checkpoint_s, "loss": end.metrics["loss"],
        })  # fmt: skip
        if len(epochs) == len(plan):
            raise EnoughEpochs
        train.source = plan[len(epochs)]

    train.source = plan[0]
    start = time.perf_counter()
    try:
        run_epochs(study, data, state, state.model, Splits(train, val, test), static_metrics(data, 1), on_epoch)
    except EnoughEpochs:
        pass
    trial_s = time.perf_counter() - start
    nc_s = 0.0
    if nc:
        synchronize(device)
        start = time.perf_counter()
        measure_collapse(state, train, test, data, use_bf16(study.train, device), 0, 1, len(epochs) - 1)
        synchronize(device)
        nc_s = time.perf_counter() - start

    timed = epochs[warmup:]
    result: dict[str, Any] = {"epochs": epochs, "trial_s": trial_s, "first_epoch_s": epochs[0]["epoch_time_s"] + epochs[0]["checkpoint_s"]}
    for source in ("loader", "resident"):
        chosen = [e for e in timed if e["source"] == source]
        if chosen:
            result[f"{source}_images_per_s"] = sum(e["images"] for e in chosen) / sum(e["seconds"] for e in chosen)
    loader_epochs = [e for e in epochs[1:] if e["source"] == "loader"] or epochs
    result["val_pass_s"] = statistics.median(e["rest_s"] for e in loader_epochs)
    result["checkpoint_s"] = statistics.median(e["checkpoint_s"] for e in loader_epochs)
    result["nc_measurement_s"] = nc_s
    result["finite"] = all(math.isfinite(e["loss"]) for e in epochs)
    if device.type == "cuda":
        result["memory"] = gpu_memory(device, context)
        result["memory"]["data_on_gpu_bytes"] = sum(s.images.numel() * s.images.element_size() for s in splits)
    return result


def projected_trial_s(result: dict, train_images: int, epochs: int, every: int) -> float:
    """200 x (training at the measured rate + validation + checkpoint) + the NC measurements + the
    first epoch's excess over a steady one (compilation, CUDA graphs)."""
    steady = train_images / result["loader_images_per_s"] + result["val_pass_s"] + result["checkpoint_s"]
    measurements = sum(1 for e in range(epochs) if e == epochs - 1 or (every and (e + 1) % every == 0))
    return epochs * steady + measurements * result["nc_measurement_s"] + max(result["first_epoch_s"] - steady, 0.0)


def loader_rate(train: Any, labels, batch_size: int, batches: int, device: torch.device) -> float:
    """Images/s of ncstudy's loader alone (a trial's batches, no step): the step's ceiling."""
    seen, start = 0, None
    for epoch in range(2, 10**6):
        for _, images, batch_labels in train.train_batches(epoch_order(labels, 0, epoch), batch_size, 0, 1, 0, epoch, True):
            images.sum()  # touch the batch, as a step would
            if start is None and seen >= 5 * batch_size:  # after 5 untimed batches
                synchronize(device)
                start, seen = time.perf_counter(), 0
            seen += len(batch_labels)
            if start is not None and seen >= batches * batch_size:
                synchronize(device)
                return seen / (time.perf_counter() - start)
    raise AssertionError("unreachable")


def compile_counters() -> dict:
    """Dynamo/inductor counters so far (graph breaks, recompiles, cudagraph skips): whether a
    compiled mode really ran as one graph, and with CUDA graphs."""
    try:
        from torch._dynamo.utils import counters

        return {group: dict(values) for group, values in counters.items() if group in ("stats", "graph_break", "inductor")}
    except Exception as error:  # private API: report its absence, never fail on it
        return {"unavailable": repr(error)}


def reset_compiler() -> None:
    """A cold compiler cache, as in a fresh trial process."""
    try:
        torch.compiler.reset()
    except Exception:  # older torch: nothing to reset
        pass


# ---------------------------------------------------------------- several trial processes on one GPU


def _pack_worker(rank: int, parquet: str, cache_dir: str | None, extra: tuple[str, ...], mode: str, warmup: int,
                 seconds: float, threads: int, barrier, results) -> None:  # fmt: skip
    """One trial process: the trial's data and TrialState, `warmup` batches of train_epoch, wait for
    the others, then train_epoch over and over until `seconds` have passed."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(threads)  # the node's cores shared out, as Ray gives a trial its CPUs' worth of threads
    study = trial_study(Path(parquet), cache_dir, "none", extra)
    data, (train, _, _) = load_data(study, device)
    state = TrialState(study, data, device)
    model = torch.compile(state.model, mode=mode) if mode != "none" else state.model  # what run_epochs does
    timed = TimedSplit(train, device, limit=warmup)
    epoch = study.train.warmup_epochs
    train_epoch(epoch, study, model, state, timed, data, 0, 1)
    synchronize(device)
    barrier.wait(timeout=600)
    timed.limit, timed.passes = None, []
    start = time.perf_counter()
    timed.deadline = start + seconds
    while time.perf_counter() < timed.deadline:
        epoch += 1
        train_epoch(epoch, study, model, state, timed, data, 0, 1)
    synchronize(device)
    results.put((rank, sum(p["images"] for p in timed.passes) / (time.perf_counter() - start)))


def pack_rate(processes: int, parquet: Path, cache_dir: str | None, extra: tuple[str, ...], mode: str, warmup: int,
              seconds: float, deadline: float) -> dict:  # fmt: skip
    """Aggregate images/s of `processes` trial processes training at the same time on one device."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    threads = max(1, (os.cpu_count() or 1) // processes)
    workers = [
        context.Process(target=_pack_worker, args=(r, str(parquet), cache_dir, extra, mode, warmup, seconds, threads, barrier, results))
        for r in range(processes)
    ]
    for worker in workers:
        worker.start()
    rates: list[float] = []
    try:
        while len(rates) < processes:
            try:
                rates.append(results.get(timeout=2)[1])
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError(f"a trial process failed: exit codes {[w.exitcode for w in workers]}") from None
                if time.perf_counter() > deadline:
                    raise TimeoutError("out of budget while trial processes ran") from None
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    return {"processes": processes, "mode": mode, "per_process_images_per_s": rates, "aggregate_images_per_s": sum(rates)}


# ---------------------------------------------------------------- the run


class Report:
    """The JSON record, rewritten after every stage (so a cut-off run still leaves its results)."""

    def __init__(self, name: str, record: dict):
        self.name, self.record = name, record

    def save(self) -> None:
        path = write_result(self.name, self.record)
        if os.environ.get("OUT"):
            shutil.copy(path, Path(os.environ["OUT"]) / f"{self.name}.json")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default: ncstudy's, ~/.cache/ncstudy)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs from the loader, per mode")
    parser.add_argument("--warmup-epochs", type=int, default=2, help="untimed epochs first (compilation)")
    parser.add_argument("--resident-epochs", type=int, default=1, help="timed epochs of resident batches after them")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None, help="train.compile modes; default: all on CUDA, none on the CPU")
    parser.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4, 8, 16], help="trial processes sharing the GPU")
    parser.add_argument("--pack-mode", choices=MODES, default="none", help="train.compile of the packed trial processes")
    parser.add_argument("--pack-warmup", type=int, default=30, help="untimed batches of each packed process")
    parser.add_argument("--pack-seconds", type=float, default=10.0)
    parser.add_argument("--budget-s", type=float, default=360.0, help="start no stage that would end past this")
    parser.add_argument("--smoke", action="store_true", help="242 training images, 2 epochs a trial, evaluation cut, pack 1 and 2 (runs on the CPU)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs: at least 1 timed epoch")
    started = time.perf_counter()
    eval_cut, data_overrides = None, ()
    if args.smoke:
        args.epochs, args.warmup_epochs, args.resident_epochs = 1, 0, 1
        args.pack, args.pack_warmup, args.pack_seconds = [1, 2], 2, 2.0
        eval_cut, data_overrides = 1024 // EVAL_BATCH, SMOKE_DATA
    parquet = args.parquet if (args.parquet / "train.parquet").exists() else CIFAR_PARQUET
    device = pick_device()
    modes = args.modes or (list(MODES) if device.type == "cuda" else ["none"])
    plan = ["loader"] * (args.warmup_epochs + args.epochs) + ["resident"] * args.resident_epochs
    base = study_from(CIFAR_LT, [f"data.root={parquet}"])  # the study's own epochs and metrics.every, for the projection

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    report = Report("gpu-smoke" if args.smoke else "gpu", {
        "device": str(device), "cuda": torch.version.cuda, "machine_gpu": machine().get("gpu"), "parquet": str(parquet),
        "epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "resident_epochs": args.resident_epochs,
        "data_overrides": list(data_overrides), "batch": base.train.batch_size,
        "lambda_within": base.regularizer.lambda_within, "lambda_between": base.regularizer.lambda_between,
        "bf16": use_bf16(base.train, device), "channels_last": device.type == "cuda" and base.model.channels_last,
        "smoke": args.smoke, "trials": {}, "rates": {}, "errors": {}, "skipped": [],
    })  # fmt: skip
    record = report.record
    start = time.perf_counter()
    data, splits = load_data(trial_study(parquet, args.cache_dir, "none", data_overrides), device)
    record["data_s"] = time.perf_counter() - start
    record["train_images"] = len(data.train)
    print(f"data: {len(data.train):,} training images on {device} in {record['data_s']:.1f} s", flush=True)
    record["loader_only_images_per_s"] = loader_rate(splits[0], data.train.labels, base.train.batch_size, 3 if args.smoke else 200, device)
    report.save()

    context: int | None = None
    variants = [(mode, ()) for mode in MODES if mode in modes]
    if "none" in modes:
        variants.insert(1, ("none", tuple(CE_ONLY)))  # eager CE alone, right after the eager trial
    for mode, extra in variants:
        name = f"{MODE_NAMES[mode]} | {'ce' if extra else 'ce+lw+lb'}"
        if mode != "none" and left() < COMPILE_ESTIMATE_S:
            record["skipped"].append(f"{name}: budget")
            continue
        try:
            if mode != "none":
                reset_compiler()
            study = trial_study(parquet, args.cache_dir, mode, (*data_overrides, *extra))
            result = run_trial(study, data, splits, device, plan, args.warmup_epochs, eval_cut, context, nc=not extra)
            if "memory" in result and context is None:
                context = result["memory"]["cuda_context_bytes"]
            if not extra:
                result["projected_200_epoch_trial_s"] = projected_trial_s(result, len(data.train), base.train.total_epochs, base.metrics.every)
            record["trials"][name] = result
            record["rates"][name] = {"images_per_s": result["loader_images_per_s"], "first_epoch_s": result["first_epoch_s"]}
            if "resident_images_per_s" in result:
                record["rates"][f"{MODE_NAMES[mode]}, resident batches | {'ce' if extra else 'ce+lw+lb'}"] = {
                    "images_per_s": result["resident_images_per_s"]
                }
            resident = f", resident {result['resident_images_per_s']:,.0f}" if "resident_images_per_s" in result else ""
            print(f"{name:<28}{result['loader_images_per_s']:>12,.0f} images/s{resident}  (first epoch {result['first_epoch_s']:.1f} s, "
                  f"validation {result['val_pass_s']:.2f} s, checkpoint {result['checkpoint_s']:.3f} s)", flush=True)  # fmt: skip
        except Exception as error:  # a mode that fails here (compiler, graphs) is reported, not fatal
            record["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{name}: failed: {record['errors'][name][:300]}", flush=True)
        if mode != "none":
            record.setdefault("compile_counters", {})[name] = compile_counters()
        report.save()

    trials = record["trials"]
    eager = trials.get("eager | ce+lw+lb")
    if eager:
        record["memory"] = eager.get("memory", {"note": "no CUDA: GPU memory not measured"})
        record["evaluation"] = {k: eager[k] for k in ("val_pass_s", "nc_measurement_s", "checkpoint_s")}
    record["projected_200_epoch_trial_s"] = {
        name.split(" | ")[0]: trial["projected_200_epoch_trial_s"] for name, trial in trials.items() if "projected_200_epoch_trial_s" in trial
    }
    if eager and "eager | ce" in trials:
        record["regularizer_time_ratio_eager"] = trials["eager | ce"]["loader_images_per_s"] / eager["loader_images_per_s"]
    report.save()

    record["pack"] = []
    for processes in args.pack:
        if left() < 60 + 10 * processes + args.pack_seconds:
            record["skipped"].append(f"pack {processes}: budget")
            continue
        try:
            deadline = started + args.budget_s + 60
            record["pack"].append(pack_rate(processes, parquet, args.cache_dir, data_overrides, args.pack_mode, args.pack_warmup,
                                            args.pack_seconds, deadline))  # fmt: skip
            print(f"{processes} trial processes: {record['pack'][-1]['aggregate_images_per_s']:,.0f} images/s in all", flush=True)
        except Exception as error:
            record["errors"][f"pack {processes}"] = f"{type(error).__name__}: {error}"[:2000]
        report.save()

    record["foreign_modules"] = [m for m in FOREIGN if m in sys.modules]
    record["wall_s"] = time.perf_counter() - started
    report.save()
    summarize(record)
    return record


def summarize(record: dict) -> None:
    for name, trial in record["trials"].items():
        memory = trial.get("memory", {})
        if "per_trial_bytes" in memory:
            print(f"memory per trial, {name}: {memory['per_trial_bytes'] / 2**20:,.0f} MiB (peak allocated "
                  f"{memory['peak_allocated_bytes'] / 2**20:,.0f}, reserved {memory['peak_reserved_bytes'] / 2**20:,.0f}, "
                  f"context {memory['cuda_context_bytes'] / 2**20:,.0f}); {memory['trials_fit_by_memory']} fit by memory")  # fmt: skip
    for mode, seconds in record.get("projected_200_epoch_trial_s", {}).items():
        print(f"projected 200-epoch trial, {mode}: {seconds / 60:.1f} min")
    if "regularizer_time_ratio_eager" in record:
        print(f"eager step time (CE + L_W + L_B) / CE: {record['regularizer_time_ratio_eager']:.3f}")
    print(f"loader only: {record['loader_only_images_per_s']:,.0f} images/s; evaluation: {json.dumps(record.get('evaluation'))}")
    for pack in record.get("pack", []):
        print(f"pack {pack['processes']:>2} ({pack['mode']}): {pack['aggregate_images_per_s']:,.0f} images/s in all")
    if record["skipped"] or record["errors"]:
        print(f"skipped: {record['skipped']}; errors: {list(record['errors'])}")
    if record["foreign_modules"]:
        print(f"warning: imported {record['foreign_modules']}, which this script must not need")
    print(f"wall: {record['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
