"""GPU throughput and memory of one CIFAR-10-LT trial (one run on one NVIDIA H200, under 8 minutes).

What runs: the worker's training step on ResNet-32 / CIFAR-10-LT r=100 (12,406 images, batch 128,
SGD), replicated here from ncstudy.train.train_epoch because ncstudy.train imports Ray (this script
needs no ray, optuna or mlflow): batches from ncstudy's tensor-resident loader (`TensorImages` on the
GPU, batched random crop + flip by index), bf16 autocast and channels_last (ncstudy's CUDA defaults),
cross-entropy, optionally L_W + L_B with learnable centres (lambda_W 0.01, lambda_B 0.1, the paper's
CIFAR-10-LT row) and their own SGD step, then the model's SGD step.

Measured, each as images/s over `--steps` timed steps after `--warmup` untimed ones (CUDA
synchronized at both ends), for CE and for CE + L_W + L_B:

- `eager (as train_epoch)`: the step exactly as ncstudy runs it today, including its per-batch
  `.cpu()` of the loss terms (a host-device synchronization every step);
- `eager, losses on GPU`: the same with the loss terms summed on the device instead;
- `compile`: `torch.compile(model)` (inductor, default mode), losses on the GPU;
- `reduce-overhead`: `torch.compile(model, mode="reduce-overhead")`, which replays the model's
  forward and backward as CUDA graphs, losses on the GPU;
- each of the last three also with `resident batches`: 8 augmented batches made beforehand and
  cycled, so the step runs without the loader (whose per-batch copies of the index and of the
  augmentation draws from the CPU also wait for the GPU); L_W's boolean indexing and bincount
  synchronize too, which the CE/CE + L_W + L_B pairs show;
- `loader only`: the loader's batches without a step (its ceiling);
and first-call (compile) times. Also: GPU memory of one trial (torch.cuda.max_memory_allocated and
max_memory_reserved over the eager CE + L_W + L_B steps, a validation pass and the NC measurement on
train and test features, data on the GPU included, plus the CUDA context measured from
mem_get_info), the number of such trials that fit in the GPU's memory, the time of the validation
pass and of the NC measurement (ncstudy.engine.evaluation.evaluate_split), the projected wall time of a
200-epoch trial (200 x (epoch at the measured rate + validation) + 20 NC measurements, the every-10
default; Ray's per-epoch report and checkpoint not included), and, last and only if time is left,
the aggregate images/s of 1, 2, 4, ... trial processes sharing the GPU (`--pack`, each the eager
step as train_epoch runs it, started together).

The stages run in that order, each only if `--budget-s` leaves time for it; the JSON is rewritten
after every stage, to results/bench/gpu.json and, if $OUT is set, $OUT/gpu.json. Without CUDA the
script warns and runs on the CPU (bf16 and channels_last off, compile skipped unless `--modes` names
it), which is what `--smoke` is for.

On the device machine its python3 (3.12) has torch, numpy, pyarrow, pillow and pyyaml but not
pydantic, which ncstudy.config needs. Carry it as wheels; in the repository root here, once:

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
import json
import math
import multiprocessing as mp
import os
import queue
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from benchmarks.common import CIFAR_PARQUET, ROOT, machine, write_result

DEFAULT_PARQUET = ROOT / ".data" / "cifar10-jpeg"
BATCH = 128
EPOCHS = 200
NC_EVERY = 10
LAMBDA_W, LAMBDA_B = 0.01, 0.1
MODES = ("eager", "compile", "reduce-overhead")
COMPILE_ESTIMATE_S = 120  # what a compile stage is assumed to need when checking the budget


# ---------------------------------------------------------------- setup


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    warnings.warn("CUDA is not available: running on the CPU (numbers are not GPU numbers)", stacklevel=2)
    return torch.device("cpu")


def load_data(parquet: Path, device: torch.device, cache_dir: str | None):
    """CIFAR-10-LT r=100 as ncstudy cuts it, and its train/val/test splits on the device."""
    from ncstudy.config import DataConfig
    from ncstudy.data.build import build_data, device_splits

    config = DataConfig(dataset="parquet", root=str(parquet), imbalance={"ratio": 100}, cache_dir=cache_dir)
    data = build_data(config)
    return data, device_splits(data, config, device)


class Trainer:
    """One trial's model, centres and optimizers on the device, with the worker's step."""

    def __init__(self, data, device: torch.device, mode: str = "eager"):
        from ncstudy.config import ModelConfig, RegularizerConfig
        from ncstudy.losses import build_loss
        from ncstudy.models import build_model
        from ncstudy.regularizers import NeuralCollapseRegularizer

        torch.manual_seed(0)
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = build_model(ModelConfig(arch="resnet32"), data.in_channels, data.num_classes).to(device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        config = RegularizerConfig(lambda_within=LAMBDA_W, lambda_between=LAMBDA_B)
        generator = torch.Generator().manual_seed(1)
        self.regularizer = NeuralCollapseRegularizer(config, data.num_classes, self.model.feature_dim, generator).to(device)
        self.loss = build_loss("ce", data.train_counts).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        self.mode = mode
        self.forward = self.model
        if mode == "compile":
            self.forward = torch.compile(self.model)
        elif mode == "reduce-overhead":
            self.forward = torch.compile(self.model, mode="reduce-overhead")

    def step(self, images: torch.Tensor, labels: torch.Tensor, regularized: bool) -> torch.Tensor:
        """train_epoch's step: forward in bf16 autocast, CE (+ L_W + L_B), backward, both SGD steps."""
        from ncstudy.engine.recipe import autocast

        if self.mode == "reduce-overhead" and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        if self.cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.cuda, self.device):
            logits, features = self.forward(images)
        logits, features = logits.float(), features.float()
        loss_sup = self.loss(logits, labels)
        zero = loss_sup.new_zeros(())
        terms = {"loss_within": zero, "loss_between": zero, "loss_center": zero}
        loss = loss_sup
        if regularized:
            terms = self.regularizer(features, labels)
            loss = loss + self.regularizer.weighted(terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.regularizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if regularized:
            self.regularizer.step()
        return torch.stack([v.detach().float() for v in (loss, loss_sup, terms["loss_within"], terms["loss_between"], terms["loss_center"])])


def batches(train, labels, count: int, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` full training batches from ncstudy's loader, epoch after epoch (seeded orders)."""
    from ncstudy.data.loader import epoch_order

    produced = 0
    while True:
        order = epoch_order(labels, 0, epoch)
        for _, images, batch_labels in train.train_batches(order, BATCH, 0, 1, 0, epoch, True):
            if len(batch_labels) < BATCH:
                continue
            yield images, batch_labels
            produced += 1
            if produced == count:
                return
        epoch += 1


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- measurements


def resident(train, labels, count: int, distinct: int = 8) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` batches cycled from `distinct` augmented batches made beforehand and kept on the
    device: the step without the loader (no per-batch index copies or augmentation draws)."""
    made = list(batches(train, labels, distinct, epoch=5))
    for i in range(count):
        yield made[i % distinct]


def train_rate(trainer: Trainer, stream: Iterator, steps: int, warmup: int, regularized: bool, host_sync: bool) -> dict:
    """Images/s of `steps` steps after `warmup` (the first step timed on its own: compile);
    `stream` yields 1 + warmup + steps batches. With `host_sync` the loss terms go to the CPU
    every step, as train_epoch's bookkeeping does; without, they are summed on the device."""
    device = trainer.device
    synchronize(device)
    start = time.perf_counter()
    trainer.step(*next(stream), regularized)
    synchronize(device)
    first = time.perf_counter() - start
    totals = torch.zeros(5, dtype=torch.float64, device="cpu" if host_sync else device)
    for _ in range(warmup):
        values = trainer.step(*next(stream), regularized)
        totals += values.double().cpu() if host_sync else values.double()
    synchronize(device)
    start = time.perf_counter()
    for images, batch_labels in stream:
        values = trainer.step(images, batch_labels, regularized)
        totals += values.double().cpu() if host_sync else values.double()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {"images_per_s": steps * BATCH / elapsed, "first_step_s": first, "finite": bool(torch.isfinite(totals).all())}


def loader_rate(train, labels, steps: int, device: torch.device) -> float:
    for _ in batches(train, labels, 5):
        pass
    synchronize(device)
    start = time.perf_counter()
    for images, _ in batches(train, labels, steps, epoch=2):
        images.sum()  # touch the batch, as a step would
    synchronize(device)
    return steps * BATCH / (time.perf_counter() - start)


def evaluation_times(trainer: Trainer, data, val, train, test, nc: bool = True) -> dict:
    """Seconds of a validation pass and of one NC measurement (train and test features), as the
    worker runs them (ncstudy.engine.evaluation.evaluate_split, eval batches of 1024)."""
    from ncstudy.engine.evaluation import evaluate_split

    bf16 = trainer.cuda
    evaluate_split(trainer.model, val, data, bf16)  # warm-up
    synchronize(trainer.device)
    start = time.perf_counter()
    evaluate_split(trainer.model, val, data, bf16)
    synchronize(trainer.device)
    val_s = time.perf_counter() - start
    if not nc:
        return {"val_pass_s": val_s, "nc_measurement_s": 0.0, "note": "NC measurement skipped (--smoke)"}
    start = time.perf_counter()
    evaluate_split(trainer.model, train, data, bf16, collapse=True)
    evaluate_split(trainer.model, test, data, bf16, collapse=True)
    synchronize(trainer.device)
    return {"val_pass_s": val_s, "nc_measurement_s": time.perf_counter() - start}


def memory_stage(data, splits, device: torch.device, steps: int) -> tuple[Trainer, dict]:
    """Peak GPU memory of one trial: eager CE + L_W + L_B steps, a validation pass, an NC measurement."""
    from ncstudy.engine.evaluation import evaluate_split

    train, val, test = splits
    if device.type != "cuda":
        trainer = Trainer(data, device)
        return trainer, {"note": "no CUDA: GPU memory not measured"}
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(data, device)
    for images, labels in batches(train, data.train.labels, steps):
        trainer.step(images, labels, True).cpu()
    evaluate_split(trainer.model, val, data, True)
    evaluate_split(trainer.model, train, data, True, collapse=True)
    evaluate_split(trainer.model, test, data, True, collapse=True)
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    reserved_now = torch.cuda.memory_reserved()
    context = max(total - free - reserved_now, 0)  # this process's CUDA context and libraries (dedicated GPU)
    peak_allocated, peak_reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    data_bytes = sum(s.images.numel() * s.images.element_size() for s in splits)
    per_trial = peak_reserved + context
    return trainer, {
        "gpu_total_bytes": total, "data_on_gpu_bytes": data_bytes, "peak_allocated_bytes": peak_allocated,
        "peak_reserved_bytes": peak_reserved, "cuda_context_bytes": context, "per_trial_bytes": per_trial,
        "trials_fit_by_memory": int(0.95 * total // per_trial),
    }  # fmt: skip


def compile_counters() -> dict:
    """Dynamo/inductor counters so far (graph breaks, recompiles, cudagraph skips): whether a
    compiled mode really ran as one graph, and with CUDA graphs."""
    try:
        from torch._dynamo.utils import counters

        return {group: dict(values) for group, values in counters.items() if group in ("stats", "graph_break", "inductor")}
    except Exception as error:  # private API: report its absence, never fail on it
        return {"unavailable": repr(error)}


# ---------------------------------------------------------------- several trial processes on one GPU


def _pack_worker(rank: int, parquet: str, cache_dir: str | None, steps: int, seconds: float, barrier, results) -> None:
    """One trial process: set up, warm up, wait for the others, then step for `seconds`."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data, (train, _, _) = load_data(Path(parquet), device, cache_dir)
    trainer = Trainer(data, device)
    labels = data.train.labels
    for images, batch_labels in batches(train, labels, steps):
        trainer.step(images, batch_labels, True).cpu()
    synchronize(device)
    barrier.wait(timeout=300)
    done, start = 0, time.perf_counter()
    stream = batches(train, labels, 10**9, epoch=3)
    while time.perf_counter() - start < seconds:
        trainer.step(*next(stream), True).cpu()  # with train_epoch's per-step sync
        done += 1
    synchronize(device)
    results.put((rank, done * BATCH / (time.perf_counter() - start)))


def pack_rate(processes: int, parquet: Path, cache_dir: str | None, warmup: int, seconds: float, deadline: float) -> dict:
    """Aggregate images/s of `processes` trial processes stepping at the same time on one device."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_pack_worker, args=(r, str(parquet), cache_dir, warmup, seconds, barrier, results))
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
    return {"processes": processes, "per_process_images_per_s": rates, "aggregate_images_per_s": sum(rates)}


# ---------------------------------------------------------------- the run


class Report:
    """The JSON record, rewritten after every stage (so a cut-off run still leaves its results)."""

    def __init__(self, name: str, record: dict):
        self.name, self.record = name, record

    def save(self) -> None:
        path = write_result(self.name, self.record)
        if os.environ.get("OUT"):
            shutil.copy(path, Path(os.environ["OUT"]) / f"{self.name}.json")


def projected_trial_s(rate: float, train_images: int, times: dict) -> float:
    epoch = train_images / rate + times["val_pass_s"]
    return EPOCHS * epoch + math.ceil(EPOCHS / NC_EVERY) * times["nc_measurement_s"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parquet", type=Path, default=DEFAULT_PARQUET)
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default: ncstudy's, ~/.cache/ncstudy)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps after the first")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=None, help="default: all on CUDA, eager on the CPU")
    parser.add_argument("--pack", type=int, nargs="*", default=[1, 2, 4, 8], help="trial processes sharing the GPU")
    parser.add_argument("--pack-seconds", type=float, default=10.0)
    parser.add_argument("--budget-s", type=float, default=360.0, help="start no stage that would end past this")
    parser.add_argument("--smoke", action="store_true", help="a few steps, no NC measurement, pack 1 and 2 (runs on the CPU)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        import pydantic  # noqa: F401  (ncstudy.config needs it; the device image lacks it)
    except ImportError:
        raise SystemExit("pydantic is missing: carry its wheels (see this module's docstring)") from None
    if args.smoke:
        args.steps, args.warmup, args.pack, args.pack_seconds = 3, 1, [1, 2], 2.0
    parquet = args.parquet if (args.parquet / "train.parquet").exists() else CIFAR_PARQUET
    device = pick_device()
    modes = args.modes or (list(MODES) if device.type == "cuda" else ["eager"])
    cache_dir = args.cache_dir

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    report = Report("gpu-smoke" if args.smoke else "gpu", {
        "device": str(device), "cuda": torch.version.cuda, "machine_gpu": machine().get("gpu"), "parquet": str(parquet),
        "steps": args.steps, "warmup": args.warmup, "batch": BATCH, "lambda_within": LAMBDA_W, "lambda_between": LAMBDA_B,
        "bf16": device.type == "cuda", "channels_last": device.type == "cuda", "smoke": args.smoke, "rates": {},
        "errors": {}, "skipped": [],
    })  # fmt: skip
    record = report.record
    start = time.perf_counter()
    data, splits = load_data(parquet, device, cache_dir)
    train, val, test = splits
    labels = data.train.labels
    record["data_s"] = time.perf_counter() - start
    record["train_images"] = len(data.train)
    print(f"data: {len(data.train):,} training images on {device} in {record['data_s']:.1f} s", flush=True)

    eager, record["memory"] = memory_stage(data, splits, device, max(args.warmup, 5))
    record["loader_only_images_per_s"] = loader_rate(train, labels, args.steps, device)
    record["evaluation"] = evaluation_times(eager, data, val, train, test, nc=not args.smoke)
    report.save()

    # (name, mode, losses to the CPU every step, batches from the loader); compiled modes last
    variants = [("eager (as train_epoch)", "eager", True, True), ("eager, losses on GPU", "eager", False, True),
                ("eager, losses on GPU, resident batches", "eager", False, False)]  # fmt: skip
    for mode in (m for m in MODES if m != "eager" and m in modes):
        variants += [(mode, mode, False, True), (f"{mode}, resident batches", mode, False, False)]
    trainers = {"eager": eager}
    for name, mode, host_sync, loader in variants:
        if mode not in modes:
            continue
        if mode not in trainers and left() < COMPILE_ESTIMATE_S:
            record["skipped"].append(f"{name}: budget")
            continue
        try:
            if mode not in trainers:
                trainers[mode] = Trainer(data, device, mode)
            for regularized in (False, True):
                key = f"{name} | {'ce+lw+lb' if regularized else 'ce'}"
                count = 1 + args.warmup + args.steps
                stream = batches(train, labels, count, epoch=1) if loader else resident(train, labels, count)
                record["rates"][key] = train_rate(trainers[mode], stream, args.steps, args.warmup, regularized, host_sync)
                print(f"{key:<60}{record['rates'][key]['images_per_s']:>12,.0f} images/s  "
                      f"(first step {record['rates'][key]['first_step_s']:.1f} s)", flush=True)  # fmt: skip
        except Exception as error:  # a mode that fails here (compiler, graphs) is reported, not fatal
            record["errors"][name] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{name}: failed: {record['errors'][name][:300]}", flush=True)
        if mode != "eager":
            record.setdefault("compile_counters", {})[name] = compile_counters()
        report.save()

    reg_rates = {k: v["images_per_s"] for k, v in record["rates"].items() if k.endswith("ce+lw+lb") and "resident" not in k}
    as_is = record["rates"].get("eager (as train_epoch) | ce+lw+lb", {}).get("images_per_s")
    if as_is:
        best_name = max(reg_rates, key=reg_rates.get)
        record["projected_200_epoch_trial_s"] = {
            "as train_epoch runs today": projected_trial_s(as_is, len(data.train), record["evaluation"]),
            f"best: {best_name}": projected_trial_s(reg_rates[best_name], len(data.train), record["evaluation"]),
        }
        ce, reg = record["rates"]["eager (as train_epoch) | ce"]["images_per_s"], as_is
        record["regularizer_time_ratio_eager"] = ce / reg
    report.save()

    record["pack"] = []
    for processes in args.pack:
        if left() < 60 + 10 * processes + args.pack_seconds:
            record["skipped"].append(f"pack {processes}: budget")
            continue
        try:
            deadline = started + args.budget_s + 60
            record["pack"].append(pack_rate(processes, parquet, cache_dir, args.warmup, args.pack_seconds, deadline))
            print(f"{processes} trial processes: {record['pack'][-1]['aggregate_images_per_s']:,.0f} images/s in all", flush=True)
        except Exception as error:
            record["errors"][f"pack {processes}"] = f"{type(error).__name__}: {error}"[:2000]
        report.save()

    record["wall_s"] = time.perf_counter() - started
    report.save()
    summarize(record)
    return record


def summarize(record: dict) -> None:
    memory = record.get("memory", {})
    if "per_trial_bytes" in memory:
        print(f"memory per trial: {memory['per_trial_bytes'] / 2**20:,.0f} MiB (peak allocated "
              f"{memory['peak_allocated_bytes'] / 2**20:,.0f}, reserved {memory['peak_reserved_bytes'] / 2**20:,.0f}, "
              f"context {memory['cuda_context_bytes'] / 2**20:,.0f}); {memory['trials_fit_by_memory']} fit by memory")  # fmt: skip
    for name, seconds in record.get("projected_200_epoch_trial_s", {}).items():
        print(f"projected 200-epoch trial, {name}: {seconds / 60:.1f} min")
    print(f"loader only: {record['loader_only_images_per_s']:,.0f} images/s; evaluation: {json.dumps(record['evaluation'])}")
    if record["skipped"] or record["errors"]:
        print(f"skipped: {record['skipped']}; errors: {list(record['errors'])}")
    print(f"wall: {record['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
