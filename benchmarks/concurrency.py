"""Study throughput: trials per hour with search.max_concurrent 1 against 2, on the same CPUs.

The study is the quick start (studies/quickstart.yaml: digits, a 3-block CNN, 12 epochs per trial,
Optuna TPE), each trial a single-worker one of `resources.cpus_per_worker` 1, trained by the engine
inside its Tune trial actor (ncstudy.study.in_trial), on a private local Ray of `--cpus` CPUs (2), run
through `ncstudy.study.driver.run_study` into its own temporary results folder, once with max_concurrent 1
and once with 2 (the order alternates between `--repeats`), Ray shut down in between. The imbalance
ratio is taken out of the search space so every trial trains the same number of images (ratio 10)
and both runs do the same work; the remaining keys (lambda_W, lambda_B, temperature) do not change
a trial's cost. Wall time of `run_study` (without `ray.init`, reported separately) gives trials per
hour; the claim is the ratio of concurrency 2 to 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.harness import QUICKSTART, study_from, study_on_local_ray
from ncstudy.config import StudyConfig


def concurrency_study(trials: int, epochs: int, concurrent: int) -> StudyConfig:
    overrides = [
        "name=concurrency", f"search.num_samples={trials}", f"search.max_concurrent={concurrent}",
        f"train.epochs={epochs}", "resources.cpus_per_worker=1", "resources.num_workers=1",
    ]  # fmt: skip
    return study_from(QUICKSTART, overrides, drop_space=("data.imbalance.ratio",))


def trial_errors(results: Path) -> str:
    """The first lines of Tune's error files under a results folder."""
    return "\n".join(path.read_text()[-2000:] for path in sorted(results.rglob("error.txt"))[:2])


def run(study: StudyConfig, cpus: int) -> dict:
    with study_on_local_ray(study, cpus, "bench-concurrency-") as run:
        outcome = run.outcome
        if outcome.failed or not outcome.finished:
            raise RuntimeError(f"{len(outcome.failed)} of {outcome.planned} trials failed:\n{trial_errors(run.folder)}")
    return {"ray_init_s": run.ray_init_s, "wall_s": run.wall_s, "finished": outcome.finished, "failed": len(outcome.failed),
            "trials_per_hour": outcome.finished / run.wall_s * 3600}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="search.num_samples of each study")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of studies, order alternating")
    parser.add_argument("--smoke", action="store_true", help="2 trials of 1 epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.epochs = 2, 1

    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for concurrent in (1, 2) if repeat % 2 == 0 else (2, 1):
            runs[concurrent].append(run(concurrency_study(args.trials, args.epochs, concurrent), args.cpus))

    best = {c: max(r["trials_per_hour"] for r in rs) for c, rs in runs.items()}
    ratio = best[2] / best[1]
    print(f"{f'{args.trials} quick-start trials x {args.epochs} epochs, {args.cpus} CPUs':<44}{'trials/h (best)':>16}{'wall s':>9}{'ray.init s':>11}")
    for concurrent, rs in runs.items():
        fastest = max(rs, key=lambda r: r["trials_per_hour"])
        print(f"{f'max_concurrent {concurrent}':<44}{best[concurrent]:>16,.0f}{fastest['wall_s']:>9.1f}{fastest['ray_init_s']:>11.1f}")
    print(f"ratio (concurrency 2 / 1): {ratio:.2f}x")
    record = {
        "trials": args.trials, "epochs": args.epochs, "cpus": args.cpus, "cpus_per_worker": 1, "repeats": args.repeats,
        "smoke": args.smoke, "runs": {str(c): rs for c, rs in runs.items()},
        "trials_per_hour": {str(c): v for c, v in best.items()}, "ratio": ratio,
    }  # fmt: skip
    print(f"written: {write_result('concurrency-smoke' if args.smoke else 'concurrency', record)}")
    return record


if __name__ == "__main__":
    main()
