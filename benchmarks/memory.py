"""Host memory of a study: the driver, the process that trains a trial, and the data set with 1 and 2 trials.

Each scenario runs `ncstudy.study.driver.run_study` in a fresh child process (its own private local Ray of
2 CPUs, a temporary results folder). Every scenario's trial is a single-worker one, which the engine
trains inside its Tune trial actor (ncstudy.study.in_trial; the `ray::ImplicitFunc` process): that actor is
the trial's "worker" below. (A multi-worker trial would train in Ray Train workers, with a Train
controller and the trial actor beside them; the script tells them apart by process title and counts
those two as the trial's other actors.) This process polls /proc every `--interval` seconds for the
child (the study driver) and everything below it (Ray's processes and the trials' actors) and
keeps, per process, the largest values seen of:

- VmHWM: peak resident set (RSS) since the process started; for the driver it is read by the child
  itself at the end, so it is exact; for a worker it is the last value polled before the worker
  exited (anything in its last `--interval` seconds can be missed);
- RssAnon: private (anonymous) resident memory, what the process holds that no other process can
  share; RssShmem: resident shared memory, here Ray's object store mapped into the process;
- Pss (and Pss_Anon, Pss_Shmem) from /proc/PID/smaps_rollup: resident memory with every shared page
  divided among the processes that map it, so the sum over processes counts a shared page once.
  "study PSS" is the largest such sum over the driver and all its descendants (Ray included).

The driver decodes the data set once (a memory-mapped cache of the decoded arrays), `ray.put`s it
once (ncstudy.study.driver._trainable) and every trial on the node reads it zero-copy from the object
store. The claim, that the data set is resident once per node and not once per trial, rests on two
readings: (1) a worker's RssShmem (object-store pages it maps) is about the size of the data it
touches, while its Pss_Shmem is that divided among the processes that map the same pages (with two
trials: the two workers and the object store); (2) the study PSS of the two-trial CIFAR run exceeds
the one-trial run's by about one worker's private memory plus any other per-trial actors
("trial_actors": none for a single-worker trial), not by another "data". A worker's private memory
(RssAnon) is mostly compute: the Python runtime, Ray's and Tune's libraries, model, optimizer, the
activations of 256-image evaluation batches (ncstudy.engine.evaluation.EVAL_BATCH) and the allocator's caches, plus its own gather of the
long-tailed subset (12,406 x 3 KiB = 36 MiB at full size). No timing is involved; the machine's load
does not change these numbers much, but the polling can miss a worker's last fraction of a second.

Targets (README's "GB" are thousands of MiB: 3,426 MiB was "3.4 GB"): the memory one more
concurrent trial adds (study PSS of `cifar2` minus `cifar`) <= 1,300 MiB (2,665 MiB on 2026-11-29,
when a trial ran in a Ray Train worker beside a Train controller); the study PSS peak of the
quick-start scenario < 3,000 MiB (3,426 MiB then).

Scenarios: `quickstart` (the quick-start trial on digits, 1 worker, 1 CPU), `cifar` (CIFAR-10-LT
r=100 on the CPU, ResNet-32, `--cifar-epochs` epochs, `--cifar-n-max` images in the head class
(default: all 5,000, the 12,406-image set), one worker with 2 CPUs) and `cifar2` (the same trial
twice at max_concurrent 2, 1 CPU each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import CIFAR_PARQUET, ROOT, write_result
from benchmarks.harness import (
    CIFAR_LT,
    QUICKSTART,
    cifar_overrides,
    command_line,
    descendants,
    mib,
    process_memory,
    start_local_ray,
    stop_ray,
    study_from,
)

SCENARIOS = ("quickstart", "cifar", "cifar2")
# Process titles: a Ray Train worker and controller (multi-worker trials only) and the Tune trial actor,
# which trains a single-worker trial itself (ncstudy.study.in_trial) and drives a multi-worker trial's TorchTrainer.
KINDS = {"ray::RayTrainWorker": "train_worker", "ray::TrainController": "train_controller", "ray::ImplicitFunc": "trial_actor"}
TRAINING_KINDS = ("train_worker", "trial_actor")  # where a trial trains: its Train workers if it has any, else its actor
ADDED_TRIAL_TARGET_MIB = 1300  # the study PSS one more concurrent CIFAR trial adds (README: 1.3 GB)
QUICKSTART_PEAK_TARGET_MIB = 3000  # the quick-start scenario's study PSS peak, below (README: 3 GB)


def scenario_study(name: str, args: argparse.Namespace):
    if name == "quickstart":
        overrides = ["name=memory", f"train.epochs={args.quick_epochs}", "search.num_samples=1", "search.max_concurrent=1",
                     "search.space={}", "resources.cpus_per_worker=1"]  # fmt: skip
        return study_from(QUICKSTART, overrides)
    trials, cpus = (2, 1) if name == "cifar2" else (1, 2)
    overrides = cifar_overrides(args.parquet, args.cifar_epochs, args.cifar_n_max, cpus)
    return study_from(CIFAR_LT, ["name=memory", *overrides, f"search.num_samples={trials}", f"search.max_concurrent={trials}"])


def source_bytes(study) -> int:
    """Size of the decoded data set the driver puts in the object store (pool + test images and labels)."""
    from ncstudy.data.build import load_source

    source = load_source(study.data)
    return sum(a.nbytes for split in (source.pool, source.test) for a in (split.images, split.labels))


def child(name: str, args: argparse.Namespace) -> None:
    """Run one scenario's study here; write the driver's memory and the data size as JSON."""
    from ncstudy.study.driver import run_study

    study = scenario_study(name, args)
    start_local_ray(2)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
            outcome = run_study(study, Path(folder))
    finally:
        stop_ray()
    record = {"driver": process_memory(os.getpid()), "data_bytes": source_bytes(study), "finished": outcome.finished,
              "failed": len(outcome.failed)}  # fmt: skip
    Path(args.child_json).write_text(json.dumps(record))


class Poller(threading.Thread):
    """Samples /proc for a process tree until stopped: per-process maxima (status every `interval`,
    PSS of the trials' processes too) and, every `pss_interval`, the PSS sum over the whole tree."""

    def __init__(self, root: int, interval: float, pss_interval: float):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_interval = root, interval, pss_interval
        self.stopped = threading.Event()
        self.peaks: dict[int, dict[str, int]] = {}
        self.kinds: dict[int, str] = {}
        self.total_pss = 0
        self.last_total = -float("inf")

    def sample(self) -> None:
        whole_tree = time.monotonic() - self.last_total >= self.pss_interval
        total = 0
        for pid in [self.root, *descendants(self.root)]:
            title = command_line(pid)
            kind = "driver" if pid == self.root else next((k for p, k in KINDS.items() if title.startswith(p)), None)
            if kind:
                self.kinds[pid] = kind
            memory = process_memory(pid, pss=whole_tree or kind in ("driver", "train_worker"))
            peak = self.peaks.setdefault(pid, {})
            for key, value in memory.items():
                peak[key] = max(peak.get(key, 0), value)
            total += memory.get("Pss", 0)
        if whole_tree:
            self.total_pss = max(self.total_pss, total)
            self.last_total = time.monotonic()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.interval)


def run_scenario(name: str, argv: list[str], interval: float, pss_interval: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        out = Path(folder) / "child.json"
        command = [sys.executable, "-m", "benchmarks.memory", "--child", name, "--child-json", str(out), *argv]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        poller = Poller(process.pid, interval, pss_interval)
        poller.start()
        _, stderr = process.communicate()
        poller.stopped.set()
        poller.join()
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"scenario {name} failed ({process.returncode}):\n{stderr[-3000:]}")
        result = json.loads(out.read_text())
    by_kind: dict[str, list[dict[str, int]]] = {}
    for pid, kind in poller.kinds.items():
        if kind != "driver":
            by_kind.setdefault(kind, []).append(poller.peaks[pid])
    result.update({"processes": by_kind, "study_pss_peak": poller.total_pss})
    return result


def summarize(name: str, result: dict) -> dict:
    processes = result["processes"]
    kind = next((k for k in TRAINING_KINDS if processes.get(k)), TRAINING_KINDS[-1])
    workers = processes.get(kind, [])  # the processes that train: one per single-worker trial
    largest = max(workers, key=lambda w: w.get("VmHWM", 0), default={})
    others = [k for k in ("train_controller", "trial_actor") if k != kind]  # Ray's other per-trial actors, if any
    actors = sum(p.get("Pss", 0) for k in others for p in processes.get(k, []))
    return {
        "scenario": name, "trials": len(workers), "worker_kind": kind, "data_mib": mib(result["data_bytes"]),
        "driver_peak_mib": mib(result["driver"].get("VmHWM", 0)),
        "worker_peak_mib": mib(largest.get("VmHWM", 0)), "worker_private_mib": mib(largest.get("RssAnon", 0)),
        "worker_shared_mib": mib(largest.get("RssShmem", 0)), "worker_pss_shmem_mib": mib(largest.get("Pss_Shmem", 0)),
        "trial_actors_pss_mib": mib(actors / max(len(workers), 1)),
        "study_pss_peak_mib": mib(result["study_pss_peak"]),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--quick-epochs", type=int, default=12, help="epochs of the quick-start trial")
    parser.add_argument("--cifar-epochs", type=int, default=1)
    parser.add_argument("--cifar-n-max", type=int, default=None, help="head-class images; default all (12,406 in all)")
    parser.add_argument("--parquet", type=Path, default=CIFAR_PARQUET)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between /proc/PID/status samples")
    parser.add_argument("--pss-interval", type=float, default=2.0, help="seconds between PSS sums over all processes")
    parser.add_argument("--smoke", action="store_true", help="quickstart (1 epoch) and cifar2 (n_max 100, 1 epoch)")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--child-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args)
        return {}
    if args.smoke:
        args.scenarios, args.quick_epochs, args.cifar_n_max = ["quickstart", "cifar2"], 1, 100

    forwarded = ["--quick-epochs", str(args.quick_epochs), "--cifar-epochs", str(args.cifar_epochs), "--parquet", str(args.parquet)]
    if args.cifar_n_max is not None:
        forwarded += ["--cifar-n-max", str(args.cifar_n_max)]
    results = {name: run_scenario(name, forwarded, args.interval, args.pss_interval) for name in args.scenarios}
    rows = [summarize(name, result) for name, result in results.items()]

    columns = ("trials", "data_mib", "driver_peak_mib", "worker_peak_mib", "worker_private_mib", "worker_shared_mib",
               "worker_pss_shmem_mib", "trial_actors_pss_mib", "study_pss_peak_mib")  # fmt: skip
    print(f"{'MiB':<12}" + "".join(f"{c.removesuffix('_mib'):>{len(c) + 1}}" for c in columns))
    for row in rows:
        print(f"{row['scenario']:<12}" + "".join(f"{row[c]:>{len(c) + 1},.0f}" for c in columns))
    record: dict = {"interval_s": args.interval, "pss_interval_s": args.pss_interval, "smoke": args.smoke, "rows": rows, "raw": results}
    by_name = {row["scenario"]: row for row in rows}
    if "cifar2" in by_name:
        row = by_name["cifar2"]
        print(f"cifar2: the decoded data set is {row['data_mib']:,.0f} MiB; a worker maps {row['worker_shared_mib']:,.0f} MiB "
              f"of it shared (its PSS share {row['worker_pss_shmem_mib']:,.0f} MiB) and holds {row['worker_private_mib']:,.0f} MiB privately")
    if "cifar" in by_name and "cifar2" in by_name:
        added = by_name["cifar2"]["study_pss_peak_mib"] - by_name["cifar"]["study_pss_peak_mib"]
        record["second_trial_adds_mib"] = added
        record["second_trial_target_mib"] = ADDED_TRIAL_TARGET_MIB
        print(f"a second concurrent trial adds {added:,.0f} MiB of study PSS (data set: {by_name['cifar']['data_mib']:,.0f} MiB; "
              f"target <= {ADDED_TRIAL_TARGET_MIB:,} MiB: {'met' if added <= ADDED_TRIAL_TARGET_MIB else 'missed'})")  # fmt: skip
    if "quickstart" in by_name:
        peak = by_name["quickstart"]["study_pss_peak_mib"]
        record["quickstart_study_pss_peak_mib"] = peak
        record["quickstart_peak_target_mib"] = QUICKSTART_PEAK_TARGET_MIB
        note = "" if args.quick_epochs == 12 else f"; measured with {args.quick_epochs} epoch(s), the target is for 12"
        print(f"quick start: study PSS peak {peak:,.0f} MiB (target < {QUICKSTART_PEAK_TARGET_MIB:,} MiB: "
              f"{'met' if peak < QUICKSTART_PEAK_TARGET_MIB else 'missed'}{note})")  # fmt: skip
    print(f"written: {write_result('memory-smoke' if args.smoke else 'memory', record)}")
    return record


if __name__ == "__main__":
    main()
