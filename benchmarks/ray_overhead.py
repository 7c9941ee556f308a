"""Ray's overhead on one trial: the same trial run bare and through `ncstudy.study.driver.run_study`.

- bare: the engine (ncstudy.engine) in this process, as `python -m ncstudy train` runs it
  (benchmarks.harness.bare_trial: data cut from the decoded data set loaded beforehand, trial state,
  every epoch's training, validation, NC metrics and checkpoint written to a temporary folder, the
  reports collected); torch limited to `--cpus` threads. This is the trial as a plain training
  script would run it, and the same training code every runner uses.
- Ray: `run_study` on a one-trial study (search.num_samples 1, max_concurrent 1, an empty search
  space so the trial's config is exactly the bare one; one worker of `--cpus` CPUs, so the trial is
  a single-worker one: the engine trains inside its Tune trial actor, ncstudy.study.in_trial, which holds
  the CPUs, and Ray gives it that many OpenMP threads): preflight, MLflow parent and child runs,
  Tune, the trial actor, the object store, per-epoch checkpoint persistence, the result tables,
  figures and report. Ray itself is started first, separately timed (a private local instance like
  the one `ncstudy.study.cluster.init_ray` starts with address "local").

Reported: wall time of each, and the ratios Ray/bare including and excluding `ray.init`; also the
sum of the trial's own per-epoch times (`epoch_time_s`) in both, which separates the cost inside the
training loop from the fixed cost around it. The fixed per-trial cost is Ray's time outside the
epoch loop minus the bare run's (wall - sum of epoch_time_s in each, medians over `--repeats`): what
Ray, Tune, MLflow and the study add around a trial's epochs (starting the trial actor and its
imports, MLflow runs, checkpoint persistence, tables and report; of a one-trial study, so the
study's own start and end count in it too). Targets: Ray/bare <= 1.10 (excluding ray.init) for the
default CIFAR trial of about two and a half minutes; fixed per-trial cost <= 8 s (both measured on 2
quiet cores; 1.21 and 22.4 s on 2026-11-29, when a trial ran in a Ray Train worker). The default
trial is the paper's setting cut to CPU size: ResNet-32 on CIFAR-10-LT r=100 with n_max 500 (1,236
images, 10 batches of 128 per epoch), `--epochs` 15, NC metrics and test accuracy every 10 epochs
and at the end (about two and a half minutes bare on 2 quiet cores). `--trial digits` runs the
12-epoch quick-start trial instead (under a second of epochs: the fixed cost alone, quickly);
`--smoke` a 2-epoch digits trial.

The fixed cost above is that of a one-trial study: the study's own start and end (preflight, the
Optuna study, the parent MLflow run, the result tables, figures and report) count in it. `--marginal
K` also runs the study with K identical trials one after another and reports what each trial after
the first adds outside its epochs, ((wall - epochs) of K trials - (wall - epochs) of 1) / (K - 1):
the per-trial cost a study of many trials pays (later trials reuse the trial actor, as in any study
whose trials run one at a time without ASHA). `--fresh-actors` measures it again with a fresh trial
actor per trial, as under ASHA (an ASHA scheduler that stops no trial).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import CIFAR_PARQUET, write_result
from benchmarks.harness import CIFAR_LT, QUICKSTART, bare_trial, cifar_overrides, study_from, study_on_local_ray
from ncstudy.config import AshaConfig, StudyConfig
from ncstudy.data.build import load_source

TARGET = 1.10  # Ray/bare wall time, excluding ray.init, of the default CIFAR trial
FIXED_TARGET_S = 8.0  # fixed per-trial cost of a single-worker trial (s)


def trial_study(trial: str, epochs: int, n_max: int, cpus: int, parquet: Path) -> StudyConfig:
    if trial == "digits":
        overrides = [f"train.epochs={epochs}", "search.num_samples=1", "search.max_concurrent=1", "search.space={}",
                     f"resources.cpus_per_worker={cpus}"]  # fmt: skip
        return study_from(QUICKSTART, ["name=ray_overhead", *overrides])
    return study_from(CIFAR_LT, ["name=ray_overhead", *cifar_overrides(parquet, epochs, n_max, cpus)])


def run_bare(study: StudyConfig, cpus: int) -> dict:
    # The engine (its models, losses, loop and checkpoint) imported untimed: a Ray trial actor imports
    # it (ncstudy.study.in_trial) inside the timed run_study, so there its imports count (conservative).
    for module in ("ncstudy.engine.loop", "ncstudy.engine.checkpoint"):
        importlib.import_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(cpus)
    try:
        start = time.perf_counter()
        reports = bare_trial(study, load_source(study.data))
        wall = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {"wall_s": wall, "epoch_time_sum_s": sum(r["epoch_time_s"] for r in reports), "val_acc_all": reports[-1]["val_acc_all"]}


def run_ray(study: StudyConfig, cpus: int, expected_trials: int = 1) -> dict:
    with study_on_local_ray(study, cpus, "bench-ray-") as run:
        if run.outcome.finished != expected_trials:
            raise RuntimeError(f"the Ray trial did not finish: {run.outcome}")
        epochs = pd.read_parquet(run.folder / study.name / "epochs.parquet")
        trials = pd.read_parquet(run.folder / study.name / "trials.parquet")
    return {"ray_init_s": run.ray_init_s, "wall_s": run.wall_s, "epoch_time_sum_s": float(epochs["epoch_time_s"].sum()),
            "val_acc_all": float(trials["val_acc_all"].iloc[0]), "trials": len(trials)}  # fmt: skip


def marginal_cost(study: StudyConfig, cpus: int, trials: int, one_trial_outside_s: float, fresh_actors: bool = False) -> dict:
    """What each trial after the first adds outside its epochs, in a study of `trials` identical
    trials. With `fresh_actors` the study runs under an ASHA scheduler whose grace period is every
    epoch (so it stops no trial), with which the driver does not reuse trial actors
    (ncstudy.study.driver.build_tuner): each trial then starts its own actor and imports."""
    search = {"num_samples": trials, "max_concurrent": 1}
    if fresh_actors:
        search["asha"] = AshaConfig(grace_period=study.train.total_epochs)
    many = study.model_copy(update={"search": study.search.model_copy(update=search)})
    run = run_ray(many, cpus, trials)
    marginal = (run["wall_s"] - run["epoch_time_sum_s"] - one_trial_outside_s) / (trials - 1)
    actors = "a fresh trial actor each" if fresh_actors else "the trial actor reused"
    print(f"{trials} trials one after another ({actors}): {run['wall_s']:.1f} s, {run['epoch_time_sum_s']:.1f} s of epochs; "
          f"each trial after the first adds {marginal:.1f} s outside its epochs (target <= {FIXED_TARGET_S:g} s: "
          f"{'met' if marginal <= FIXED_TARGET_S else 'missed'})")  # fmt: skip
    key = "marginal_fresh_actors" if fresh_actors else "marginal"
    return {f"{key}_trials": trials, f"{key}_run": run, f"{key}_per_trial_s": marginal}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial", choices=("cifar", "digits"), default="cifar")
    parser.add_argument("--epochs", type=int, default=None, help="default: 15 (cifar) or 12 (digits)")
    parser.add_argument("--n-max", type=int, default=500, help="cifar: images of the largest class")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray worker = torch threads of the bare run")
    parser.add_argument("--repeats", type=int, default=1, help="bare/Ray pairs, order alternating")
    parser.add_argument("--parquet", type=Path, default=CIFAR_PARQUET)
    parser.add_argument("--smoke", action="store_true", help="a 2-epoch digits trial")
    parser.add_argument("--marginal", type=int, default=0, metavar="K", help="also a study of K trials: the cost each adds")
    parser.add_argument("--fresh-actors", action="store_true", help="--marginal also with a fresh trial actor per trial")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trial, args.epochs = "digits", 2
    epochs = args.epochs or (15 if args.trial == "cifar" else 12)
    study = trial_study(args.trial, epochs, args.n_max, args.cpus, args.parquet)

    bare, ray_runs = [], []
    for repeat in range(args.repeats):
        for kind in ("bare", "ray") if repeat % 2 == 0 else ("ray", "bare"):
            if kind == "bare":
                bare.append(run_bare(study, args.cpus))
            else:
                ray_runs.append(run_ray(study, args.cpus))

    bare_wall = statistics.median(r["wall_s"] for r in bare)
    ray_wall = statistics.median(r["wall_s"] for r in ray_runs)
    ray_init = statistics.median(r["ray_init_s"] for r in ray_runs)
    bare_loop = statistics.median(r["epoch_time_sum_s"] for r in bare)
    ray_loop = statistics.median(r["epoch_time_sum_s"] for r in ray_runs)
    bare_outside = statistics.median(r["wall_s"] - r["epoch_time_sum_s"] for r in bare)
    ray_outside = statistics.median(r["wall_s"] - r["epoch_time_sum_s"] for r in ray_runs)
    fixed = ray_outside - bare_outside
    ratio_excl, ratio_incl = ray_wall / bare_wall, (ray_wall + ray_init) / bare_wall
    print(f"{f'one {args.trial} trial, {epochs} epochs, {args.cpus} CPUs':<52}{'wall s':>10}{'sum epoch_time_s':>18}{'outside the loop':>18}")
    print(f"{'bare (the engine in this process, no Ray)':<52}{bare_wall:>10.1f}{bare_loop:>18.1f}{bare_outside:>18.1f}")
    print(f"{'run_study (Tune + engine in the trial actor + MLflow)':<52}{ray_wall:>10.1f}{ray_loop:>18.1f}{ray_outside:>18.1f}")
    print(f"{'ray.init':<52}{ray_init:>10.1f}")
    verdict = ("met" if ratio_excl <= TARGET else "missed") if args.trial == "cifar" else "set for the cifar trial"
    print(f"ratio Ray/bare: {ratio_excl:.3f} excluding ray.init, {ratio_incl:.3f} including (target <= {TARGET} "
          f"excluding: {verdict}); inside the epoch loop {ray_loop / bare_loop:.3f}")  # fmt: skip
    print(f"fixed per-trial cost (Ray's time outside the epoch loop minus the bare run's): {fixed:.1f} s "
          f"(target <= {FIXED_TARGET_S:g} s: {'met' if fixed <= FIXED_TARGET_S else 'missed'})")  # fmt: skip
    record = {
        "trial": args.trial, "epochs": epochs, "n_max": args.n_max if args.trial == "cifar" else None, "cpus": args.cpus,
        "repeats": args.repeats, "smoke": args.smoke, "bare": bare, "ray": ray_runs,
        "bare_wall_s": bare_wall, "ray_wall_s": ray_wall, "ray_init_s": ray_init,
        "ratio_excluding_init": ratio_excl, "ratio_including_init": ratio_incl,
        "ratio_epoch_loop": ray_loop / bare_loop, "target": TARGET,
        "bare_outside_loop_s": bare_outside, "ray_outside_loop_s": ray_outside,
        "fixed_per_trial_s": fixed, "fixed_per_trial_target_s": FIXED_TARGET_S,
    }  # fmt: skip
    if args.marginal > 1:
        record.update(marginal_cost(study, args.cpus, args.marginal, ray_outside))
        if args.fresh_actors:
            record.update(marginal_cost(study, args.cpus, args.marginal, ray_outside, fresh_actors=True))
    print(f"written: {write_result('ray_overhead-smoke' if args.smoke else 'ray_overhead', record)}")
    return record


if __name__ == "__main__":
    main()
