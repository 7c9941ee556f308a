"""Table 7 of Liu et al., "Inducing Neural Collapse in Deep Long-tailed Learning" (AISTATS 2023), the
ablation on CIFAR-10-LT r=100, as `ncstudy train` processes packed on one GPU (one run on one NVIDIA
H200, under 8 minutes, on a machine with torch but no Ray).

What runs: the rows of studies/ablation_cifar10_lt.yaml (its `search.variants`) that issue 15 asks
for: CE (CE-DRW: the study's recipe switches DRW on), + L_W, + L_B, + L_W & L_B and + centre loss,
each once per training seed of the study (`search.seeds`: 0, 1, 2), 15 trials. The study's sixth row,
+ centre loss & L_B, is left out by default (it is not one of those five, and three more processes
would cut the epochs that fit); `--variants` runs any of the study's rows. A trial is

    python -m ncstudy train studies/ablation_cifar10_lt.yaml --device cuda --no-tracking --no-figures
        --restart --results DIR/trials --set name=L_W-seed0 --set train.seed=0
        --set data.imbalance.ratio=100 --set regularizer.lambda_within=0.01 --set train.epochs=E ...

with the variant's settings read from the study file (never written here) and the schedule below;
all trials run at once (`--parallel`, default all) on the one GPU, each process with
cpu_count / parallel threads and its own folder. A line per finished trial (elapsed time, its wall
time and test accuracy); a failed trial's stderr tail is printed and recorded and the others go on;
a trial still running when the budget ends is stopped and counts as failed. Exit status 1 if any
trial failed, 2 for bad arguments or missing data.

Epochs. The study's recipe (recipes/released_code_cifar.yaml: 200 epochs, 5 warm-up, cosine, DRW
from epoch 160) runs whole if it fits in `--budget-s`, else the most epochs that fit. To know which,
the trials first run packed the same way for 3 epochs (DIR/calibration; no NC measurement but the
last). From their epochs.parquet (`epoch_time_s`: training + validation, plus the NC measurement
and test pass in the last epoch): a packed epoch is the second epoch's time (the first holds cuDNN's
autotuning), a measurement the third's excess over it, each the slowest trial's. A run of E epochs
is predicted to take the calibration's wall time (start-up included, counted once per wave of
`--parallel` trials) plus, per wave, (E - 3) packed epochs and the measurements beyond the last; E
is the largest, up to the recipe's 200 and `--max-epochs`, predicted within 90% of the budget left
(less 20 s for the report). The start-up is overestimated when the decode cache was cold (the
calibration fills it). The choice is printed and recorded as said, e.g. "200-epoch trials do not fit
in 420 s: ran E epochs"; `--epochs E` skips the calibration. A shortened run scales the recipe's
epoch settings by E / 200 (rounded) so it keeps the recipe's shape, as
studies/ablation_cifar10_lt_cpu.yaml does by hand: train.warmup_epochs (at least 1),
train.milestones, loss.drw_epoch and regularizer.start_epoch (kept before the last epoch), and
metrics.every (at least 1: the recipe's number of NC measurements).

Outputs, under DIR (`--results`, default results/table7): trials/<name>/ (each `ncstudy train`
folder), calibration/, trials.parquet (the finished trials' rows, one each, with param.variant,
param.train.seed and param.data.imbalance.ratio added, as a study's trials have them), tables/
(Markdown, LaTeX, CSV) and report.md: the ablation in Table 7's layout (test accuracy, mean ± std over
seeds), head/medium/tail accuracy and the NC metrics, each made by ncstudy.outputs.tables as
`ncstudy report` makes them for a study with variants, under a header giving the device, epochs,
seeds, wall time and whether the recipe was shortened. The JSON record (per-trial final numbers,
epochs, wall times, the GPU's name, the calibration, the trials' predicted and actual time) goes to results/bench/table7.json and, if $OUT is
set, to $OUT/table7.json with $OUT/table7-report.md and $OUT/table7-trials.parquet.

`--smoke` runs on the CPU through the same code: CIFAR-10-LT with n_max 100 (242 training images), a
digits_cnn of width 8 (features 16) instead of ResNet-32 (whose 10,000-image test pass takes a
minute on a CPU core), the study's first 2 seeds (10 trials), 5 at a time, at most 4 epochs; written
to results/table7-smoke and table7-smoke.json. Its numbers are not CIFAR-10-LT results.

On the device machine python3 (3.12) has torch, numpy, pyarrow, pillow and pyyaml; this script and
`ncstudy train --no-tracking --no-figures` also need pydantic and pandas (ncstudy.outputs.tables
imports scipy only for paired differences, which this script does not write). The device notes'
package list (2026-11-17) names pandas too; the carried wheel pins the version tested here. Carry
them as wheels; in the repository root here, once:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
        pandas==3.1.1 python-dateutil==2.9.0.post0 six==1.17.0
    mkdir -p .data && cp -r "$NCSTUDY_DATA"/cifar10-jpeg .data/    # 18 MB; .data/ is git-ignored

(15 MB of wheels; pandas 3.1.1 needs numpy >= 2.0.2) and run (carry [".whl", ".data"], timeout_s 480;
the default --budget-s is 420):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site NCSTUDY_DATA=$PWD/.data || exit; \
        PYTHONUNBUFFERED=1 python3 -m benchmarks.table7_device
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine, write_result

CARRIED = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions", "pandas", "dateutil", "six")
try:  # the device machine's python lacks these unless their wheels are carried
    import pandas as pd

    from ncstudy.config import StudyConfig
except ModuleNotFoundError as missing:
    if missing.name not in CARRIED:
        raise
    raise SystemExit(f"{missing.name} is missing: carry its wheels (see the docstring of benchmarks/table7_device.py)") from None
from ncstudy.data.sources import locate_cifar
from ncstudy.errors import StudyError
from ncstudy.outputs.tables import ACCURACY_COLUMNS, NC_COLUMNS, Table, ablation_table, nc_table, shot_table, to_markdown, with_recipes, write_tables
from ncstudy.study_file import load_study
from ncstudy.terms import recipe_label

STUDY = Path("studies") / "ablation_cifar10_lt.yaml"  # relative to ROOT, where every process runs
TABLE7_ROWS = ("CE", "+ L_W", "+ L_B", "+ L_W & L_B", "+ centre loss")  # variant names of the study
IMBALANCE_RATIO = 100
VARIANT, SEED, RATIO = "param.variant", "param.train.seed", "param.data.imbalance.ratio"  # a study's trial columns
CALIBRATION_EPOCHS = 3  # a warm-up epoch, a steady one, and one with the NC measurement
MIN_EPOCHS = 2  # DRW must switch on before the last epoch
SAFETY = 0.9  # of the budget left, for the predicted run
REPORT_S = 20.0  # kept for gathering and the report
DEFAULT_BUDGET_S = 420.0
POLL_S = 0.5
STOP_S = 10.0  # a stopped trial's time to exit before it is killed
STDERR_LINES = 15


@dataclass(frozen=True)
class Smoke:
    """--smoke: tiny sizes on the CPU, the same code path."""

    settings: tuple[str, ...] = ("data.imbalance.n_max=100", "model.arch=digits_cnn", "model.width=8", "model.feature_dim=16")
    seeds: int = 2
    parallel: int = 5
    max_epochs: int = 4


@dataclass(frozen=True)
class Trial:
    variant: str
    seed: int
    settings: tuple[str, ...]  # the variant's `--set` values

    @property
    def name(self) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.variant).strip('-')}-seed{self.seed}"


@dataclass
class Outcome:
    trial: Trial
    returncode: int | None  # None: never started (out of budget)
    wall_s: float
    error: str | None = None  # a failed trial's stderr tail

    @property
    def failed(self) -> bool:
        return self.returncode != 0


@dataclass(frozen=True)
class Calibration:
    wall_s: float  # the calibration phase, start-up included
    epoch_s: float  # a packed epoch (training + validation), the slowest trial's
    measurement_s: float  # an NC measurement and test pass, the slowest trial's


# ---------------------------------------------------------------- the trials and their settings


def override_text(key: str, value: Any) -> str:
    """`key=value` for `--set`, the value as JSON (which YAML reads back as the same value)."""
    return f"{key}={json.dumps(value)}"


def variant_settings(study: StudyConfig, variant: str) -> tuple[str, ...]:
    return tuple(override_text(key, value) for key, value in study.search.variants[variant].items())


def table7_trials(study: StudyConfig, variants: list[str], seeds: list[int]) -> list[Trial]:
    """A trial per variant (in the study's order) and seed."""
    unknown = [v for v in variants if v not in study.search.variants]
    if unknown:
        raise StudyError(f"--variants: {unknown} not in {STUDY} (it has {list(study.search.variants)})")
    ordered = [v for v in study.search.variants if v in variants]
    return [Trial(v, seed, variant_settings(study, v)) for v in ordered for seed in seeds]


def schedule_settings(config: StudyConfig, epochs: int) -> dict[str, Any]:
    """The epoch settings the recipe uses (milestones with a multistep schedule, the DRW epoch with
    DRW), for a run of `epochs` instead of config.train.epochs, scaled in proportion: epoch indices
    stay before the last epoch, a warm-up and a measurement interval stay at least 1. `epochs` equal
    to the recipe's gives the recipe's own values."""
    recipe = config.train.epochs

    def scaled(value: int) -> int:
        return round(value * epochs / recipe)

    def index(value: int) -> int:
        return min(scaled(value), epochs - 1)

    def at_least_one(value: int) -> int:
        return max(1, scaled(value)) if value else 0

    settings: dict[str, Any] = {"train.epochs": epochs, "train.warmup_epochs": at_least_one(config.train.warmup_epochs)}
    if config.train.schedule == "multistep":
        settings["train.milestones"] = [index(m) for m in config.train.milestones]
    if config.loss.reweight == "drw":
        settings["loss.drw_epoch"] = index(config.loss.drw_epoch)
    settings["regularizer.start_epoch"] = index(config.regularizer.start_epoch)
    settings["metrics.every"] = at_least_one(config.metrics.every)
    return settings


def trial_settings(trial: Trial, epochs: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Every `--set` of the trial: its name and seed, the ratio, the variant, the schedule for
    `epochs` (scaled from the variant's own config), then `extra`."""
    config = load_study(ROOT / STUDY, [*trial.settings, *extra])
    schedule = [override_text(k, v) for k, v in schedule_settings(config, epochs).items()]
    return [f"name={trial.name}", f"train.seed={trial.seed}", f"data.imbalance.ratio={IMBALANCE_RATIO}", *trial.settings, *schedule, *extra]


def train_command(settings: list[str], device: str, results: Path) -> list[str]:
    sets = [part for setting in settings for part in ("--set", setting)]
    return [sys.executable, "-m", "ncstudy", "train", str(STUDY), "--device", device, "--no-tracking", "--no-figures",
            "--restart", "--results", str(results), *sets]  # fmt: skip


# ---------------------------------------------------------------- the epochs that fit


def measurements(epochs: int, every: int) -> int:
    """NC measurements of a run (ncstudy.engine.loop: every `every` epochs and the last)."""
    return sum(1 for e in range(epochs) if e == epochs - 1 or (every and (e + 1) % every == 0))


def calibration_from(epoch_times: list[list[float]], wall_s: float) -> Calibration:
    """From each calibration trial's `epoch_time_s` (the last epoch with the measurement)."""
    steady = [statistics.median(times[1:-1]) for times in epoch_times]
    excess = [times[-1] - epoch for times, epoch in zip(epoch_times, steady)]
    return Calibration(wall_s, max(steady), max(0.0, max(excess)))


def predicted_s(epochs: int, calibration: Calibration, waves: int, every: int) -> float:
    more = (epochs - CALIBRATION_EPOCHS) * calibration.epoch_s + (measurements(epochs, every) - 1) * calibration.measurement_s
    return calibration.wall_s + waves * more


def most_epochs_that_fit(seconds: float, longest: int, predict: Callable[[int], float]) -> int | None:
    for epochs in range(longest, MIN_EPOCHS - 1, -1):
        if predict(epochs) <= seconds:
            return epochs
    return None


def epochs_note(recipe: int, fits: int, chosen: int, budget_s: float, max_epochs: int) -> str:
    """What was chosen and why, plainly: "200-epoch trials do not fit in 420 s: ran E epochs"."""
    verdict = "fit" if fits >= recipe else "do not fit"
    capped = f" (--max-epochs {max_epochs}; {fits} would fit)" if chosen < min(fits, recipe) else ""
    return f"{recipe}-epoch trials {verdict} in {budget_s:.0f} s: ran {chosen} epochs{capped}"


# ---------------------------------------------------------------- trial processes on one device


def stderr_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-STDERR_LINES:])


def stopped(process: subprocess.Popen) -> int:
    """The exit status of a process asked to stop (SIGTERM), killed if it has not within STOP_S."""
    try:
        return process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def run_packed(commands: dict[Trial, list[str]], folder: Path, parallel: int, deadline: float,
               on_finish: Callable[[Outcome, int], None]) -> list[Outcome]:  # fmt: skip
    """Run the commands, `parallel` at a time, each with a share of the cores as its threads and its
    output in folder/<name>.out and .err; stop those still running at `deadline` (time.time())."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}
    waiting, running, outcomes = list(commands), {}, []

    def record(trial: Trial, returncode: int | None, started: float, error: str | None = None) -> None:
        if returncode:
            error = error or stderr_tail(folder / f"{trial.name}.err") or f"exit status {returncode}, nothing on stderr"
        outcomes.append(Outcome(trial, returncode, time.time() - started, error))
        on_finish(outcomes[-1], len(commands))

    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                trial = waiting.pop(0)
                with open(folder / f"{trial.name}.out", "w") as out, open(folder / f"{trial.name}.err", "w") as err:
                    running[trial] = (subprocess.Popen(commands[trial], cwd=ROOT, env=env, stdout=out, stderr=err), time.time())
            time.sleep(POLL_S)
            for trial, (process, started) in list(running.items()):
                if process.poll() is not None:
                    del running[trial]
                    record(trial, process.returncode, started)
            if time.time() > deadline:
                for process, _ in running.values():
                    process.terminate()
                for trial, (process, started) in running.items():
                    record(trial, stopped(process), started, "stopped: the budget ended")
                for trial in waiting:
                    record(trial, None, time.time(), "not started: the budget ended")
                running, waiting = {}, []
    finally:
        for process, _ in running.values():  # an interrupted script leaves no trial behind
            process.kill()
    order = list(commands)
    return sorted(outcomes, key=lambda o: order.index(o.trial))


def epoch_times(folder: Path, trial: Trial) -> list[float]:
    return pd.read_parquet(folder / trial.name / "epochs.parquet")["epoch_time_s"].tolist()


def trial_row(folder: Path, trial: Trial) -> dict[str, Any]:
    """The trial's one row of trials.parquet, with the columns a study's trials have for it."""
    row = pd.read_parquet(folder / trial.name / "trials.parquet").iloc[0].to_dict()
    return {**row, VARIANT: trial.variant, SEED: trial.seed, RATIO: IMBALANCE_RATIO}


# ---------------------------------------------------------------- the report


def report_tables(finished: pd.DataFrame, recipes: dict[str, str], study_name: str, metric: str) -> dict[str, Table]:
    """The tables `ncstudy report` writes for a study with variants (ncstudy.outputs.report): the
    ablation (Table 7's layout), head/medium/tail sorted by the study's objective, and NC metrics."""
    by = [VARIANT, RATIO]
    ablation = ablation_table({study_name: finished}, variant_column=VARIANT, ratio_column=RATIO)
    shot = shot_table(finished, by, sort_by=metric)
    return {
        "ablation": with_recipes(ablation, [recipes[v] for v in ablation.numbers[VARIANT]]),
        "shot": with_recipes(shot, [recipes[v] for v in shot.numbers[VARIANT]]),
        "nc": nc_table(finished, by, sort_by=metric),
    }


def schedule_lines(config: StudyConfig, epochs: int) -> str:
    """The recipe's epoch settings that a run of `epochs` changes, "key: run's (recipe's)"."""
    recipe, run = schedule_settings(config, config.train.epochs), schedule_settings(config, epochs)
    changed = [f"`{key}` {run[key]} ({recipe[key]})" for key in recipe if run[key] != recipe[key]]
    return ", ".join(changed)


def last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "no message"


def report_markdown(record: dict, tables: dict[str, Table], config: StudyConfig) -> str:
    """The header (device, epochs, seeds, wall time, the recipe's shape, failures), then the tables."""
    epochs, recipe = record["epochs"], config.train.epochs
    if not epochs:
        shape = "no trials ran"
    elif epochs < recipe:
        shape = f"a shortened recipe, the epoch settings scaled by {epochs}/{recipe}: {schedule_lines(config, epochs)} (the recipe's in brackets)"
    else:
        shape = f"the study's full {recipe}-epoch recipe"
    ran = [*record.get("calibration_trials", []), *record["trials"]]
    failed = [f"`{t['name']}` ({last_line(t['error'])})" for t in ran if t["returncode"] != 0]
    finished = sum(t["returncode"] == 0 for t in record["trials"])
    phases = []
    if "calibration" in record:
        phases.append(f"calibration {record['calibration']['wall_s']:.0f} s")
    if "run_s" in record:
        phases.append(f"trials {record['run_s']:.0f} s" + (f", predicted {record['predicted_s']:.0f} s" if "predicted_s" in record else ""))
    calibration = f" ({'; '.join(phases)})" if phases else ""
    lines = [
        f"# Table 7 of Liu et al. (AISTATS 2023) on one device: CIFAR-10-LT r={IMBALANCE_RATIO}", "",
        f"- device: {record['device_name']}; each trial an `ncstudy train` process, {record['parallel']} at a time",
        f"- rows: {', '.join(record['variants'])} (`{STUDY}`); seeds {record['seeds']}",
        f"- epochs: {record['epochs_note']}; {shape}",
        f"- wall time: {record['wall_s']:.0f} s{calibration}",
        f"- trials finished: {finished} of {len(record['trials'])}" + (f"; failed: {'; '.join(failed)}" if failed else ""),
    ]  # fmt: skip
    if record["smoke"]:
        lines.append(f"- a smoke run on the CPU, tiny sizes ({', '.join(record['extra_settings'])}): not CIFAR-10-LT results")
    if tables:
        lines += ["", "## Ablation (test accuracy, all classes, mean ± std over seeds)", "", to_markdown(tables["ablation"]),
                  "## Head / medium / tail accuracy (test)", "", to_markdown(tables["shot"]),
                  "## Neural collapse (training features, final epoch)", "", to_markdown(tables["nc"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def final_numbers(row: dict[str, Any], metric: str) -> dict[str, float]:
    return {c: row[c] for c in dict.fromkeys([*ACCURACY_COLUMNS, metric, *NC_COLUMNS]) if c in row}


# ---------------------------------------------------------------- the run


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(TABLE7_ROWS), help="rows of the study's search.variants")
    parser.add_argument("--parallel", type=int, default=None, help="trial processes at a time (default: all)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="the whole run, calibration and report included")
    parser.add_argument("--epochs", type=int, default=None, help="run this many epochs, without calibration")
    parser.add_argument("--max-epochs", type=int, default=None, help="at most this many epochs (default: the recipe's)")
    parser.add_argument("--results", type=Path, default=None, help="default: results/table7 (results/table7-smoke)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, 2 seeds, 5 at a time, at most 4 epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        smoke = Smoke()
        args.parallel = args.parallel or smoke.parallel
        args.max_epochs = args.max_epochs or smoke.max_epochs
    if args.epochs is not None and args.epochs < MIN_EPOCHS:
        parser.error(f"--epochs: at least {MIN_EPOCHS} (DRW switches on before the last epoch)")
    if args.parallel is not None and args.parallel < 1:
        parser.error("--parallel: at least 1")
    if not args.smoke and not _cuda():
        parser.error("no CUDA device is visible: this script is for a GPU (--smoke runs it on the CPU)")
    args.device = "cpu" if args.smoke else "cuda"
    args.results = (args.results or ROOT / "results" / ("table7-smoke" if args.smoke else "table7")).resolve()
    return args


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class Progress:
    """A line per finished trial: elapsed time, the trial, its wall time, and (`accuracy`) its result."""

    def __init__(self, started: float, phase: str, folder: Path, accuracy: bool):
        self.started, self.phase, self.folder, self.accuracy, self.done = started, phase, folder, accuracy, 0

    def __call__(self, outcome: Outcome, total: int) -> None:
        self.done += 1
        if outcome.failed:
            result = f"FAILED ({outcome.returncode})\n    " + (outcome.error or "").replace("\n", "\n    ")
        elif self.accuracy:
            column = ACCURACY_COLUMNS[0]
            result = f"{column} {100 * trial_row(self.folder, outcome.trial)[column]:.1f}"
        else:
            result = "done"
        print(f"[{time.time() - self.started:5.0f} s] {self.phase} {self.done}/{total} {outcome.trial.name}: "
              f"{outcome.wall_s:.0f} s, {result}", flush=True)  # fmt: skip


def calibrate(trials: list[Trial], args: argparse.Namespace, extra: tuple[str, ...], started: float,
              deadline: float) -> tuple[Calibration | None, list[Outcome]]:  # fmt: skip
    """The trials packed as they will run, for CALIBRATION_EPOCHS epochs, the NC measurement in the
    last only; None when one of them failed."""
    folder = args.results / "calibration"
    settings = (*extra, "metrics.every=0")
    commands = {t: train_command(trial_settings(t, CALIBRATION_EPOCHS, settings), args.device, folder) for t in trials}
    begun = time.time()
    outcomes = run_packed(commands, folder, args.parallel, deadline, Progress(started, "calibration", folder, False))
    if any(o.failed for o in outcomes):
        return None, outcomes
    return calibration_from([epoch_times(folder, t) for t in trials], time.time() - begun), outcomes


def choose_epochs(args: argparse.Namespace, config: StudyConfig, calibration: Calibration, waves: int,
                  seconds_left: float) -> tuple[int | None, str, float]:  # fmt: skip
    """(epochs, note, predicted seconds) from the calibration; epochs None when not even MIN_EPOCHS fit."""
    recipe = config.train.epochs
    longest = min(recipe, args.max_epochs or recipe)

    def predict(epochs: int) -> float:
        return predicted_s(epochs, calibration, waves, schedule_settings(config, epochs)["metrics.every"])

    fits = most_epochs_that_fit(SAFETY * seconds_left, recipe, predict)
    if fits is None:
        return None, f"not even {MIN_EPOCHS} epochs fit in the {seconds_left:.0f} s left of {args.budget_s:.0f} s", predict(MIN_EPOCHS)
    chosen = min(fits, longest)
    return chosen, epochs_note(recipe, fits, chosen, args.budget_s, longest), predict(chosen)


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    return {"name": outcome.trial.name, "returncode": outcome.returncode, "wall_s": outcome.wall_s, "error": outcome.error}


def trial_record(outcome: Outcome, row: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """A trial's JSON record: its outcome, and its epochs and final numbers when it finished."""
    done = {"epochs_done": int(row["epochs_done"]), "final": final_numbers(row, metric)} if row else {}
    return {"variant": outcome.trial.variant, "seed": outcome.trial.seed, **outcome_record(outcome), **done}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.time()
    deadline = started + args.budget_s - REPORT_S
    extra = Smoke().settings if args.smoke else ()
    try:
        study = load_study(ROOT / STUDY)
        seeds = (study.search.seeds or [study.train.seed])[: Smoke().seeds if args.smoke else None]
        trials = table7_trials(study, args.variants, seeds)
        locate_cifar(study.data.dataset, study.data.root, download=False)  # missing data: one line, before any process
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.parallel = min(args.parallel or len(trials), len(trials))
    config = load_study(ROOT / STUDY, [*trials[0].settings, *extra])  # the first row's: the time model and the header
    record: dict[str, Any] = {
        "study": str(STUDY), "variants": list(dict.fromkeys(t.variant for t in trials)), "seeds": seeds,
        "settings": {t.variant: list(t.settings) for t in trials}, "device": args.device,
        "device_name": machine().get("gpu", "cuda") if args.device == "cuda" else "cpu", "parallel": args.parallel,
        "budget_s": args.budget_s, "recipe_epochs": config.train.epochs, "smoke": args.smoke, "extra_settings": list(extra),
    }  # fmt: skip
    print(f"{len(trials)} trials ({len(record['variants'])} rows x seeds {seeds}) on {record['device_name']}, "
          f"{args.parallel} at a time; budget {args.budget_s:.0f} s", flush=True)  # fmt: skip
    if args.epochs is not None:
        epochs, record["epochs_note"] = args.epochs, f"ran {args.epochs} epochs (--epochs, no calibration)"
    else:
        calibration, outcomes = calibrate(trials, args, extra, started, deadline)
        record["calibration_trials"] = [outcome_record(o) for o in outcomes]
        if calibration is None:
            epochs, record["epochs_note"] = None, "a calibration trial failed: no trials run"
        else:
            record["calibration"] = asdict(calibration)
            print(f"calibration: a packed epoch {calibration.epoch_s:.2f} s, a measurement {calibration.measurement_s:.2f} s, "
                  f"{CALIBRATION_EPOCHS} epochs with start-up {calibration.wall_s:.0f} s", flush=True)  # fmt: skip
            waves = math.ceil(len(trials) / args.parallel)
            epochs, record["epochs_note"], record["predicted_s"] = choose_epochs(args, config, calibration, waves, deadline - time.time())
    print(record["epochs_note"], flush=True)
    outcomes = []
    if epochs is not None:
        record["schedule"] = schedule_settings(config, epochs)
        folder = args.results / "trials"
        commands = {t: train_command(trial_settings(t, epochs, extra), args.device, folder) for t in trials}
        begun = time.time()
        outcomes = run_packed(commands, folder, args.parallel, deadline, Progress(started, "trial", folder, True))
        record["run_s"] = time.time() - begun  # against predicted_s
    record["epochs"] = epochs or 0
    return write_outputs(record, outcomes, config, started, args)


def write_outputs(record: dict, outcomes: list[Outcome], config: StudyConfig, started: float, args: argparse.Namespace) -> int:
    """Gather the trials, write the tables, report.md and the JSON record; the exit status."""
    folder = args.results / "trials"
    rows = {o.trial: trial_row(folder, o.trial) for o in outcomes if not o.failed}
    record["trials"] = [trial_record(o, rows.get(o.trial), config.search.metric) for o in outcomes]
    tables: dict[str, Table] = {}
    if rows:
        finished = pd.DataFrame(list(rows.values()))
        finished.to_parquet(args.results / "trials.parquet", index=False)
        recipes = {t.variant: recipe_label(load_study(folder / t.name / "study.yaml")) for t in rows}
        tables = report_tables(finished, recipes, config.name, config.search.metric)
        write_tables(tables, args.results / "tables")
    record["wall_s"] = time.time() - started
    args.results.mkdir(parents=True, exist_ok=True)
    report = args.results / "report.md"
    report.write_text(report_markdown(record, tables, config))
    name = "table7-smoke" if args.smoke else "table7"
    path = write_result(name, record)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        shutil.copy(path, out / f"{name}.json")
        shutil.copy(report, out / f"{name}-report.md")
        if rows:
            shutil.copy(args.results / "trials.parquet", out / f"{name}-trials.parquet")
    print(f"\n{report.read_text()}\nreport: {report}; record: {path}; wall {record['wall_s']:.0f} s")
    failed = [t for t in (*record.get("calibration_trials", []), *record["trials"]) if t["returncode"] != 0]
    if failed or record["epochs"] == 0:
        print(f"{len(failed)} trials failed; {record['epochs_note']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
