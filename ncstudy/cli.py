"""Command line: run | train | resume | validate | report | data describe. Thin: parse, call, print.

Exit status (docs/cli.md, "Exit status"): 0 when every planned trial finished; 1 when a trial
failed (each is listed with its error); 2 for an error a user can cause (a bad study file, an
override, a data folder, a study folder in use, read-only, full or corrupt, a Ray address where
nothing answers), one line on stderr naming the key or file, nothing written; 75 when the disk
filled up (or the folder turned read-only) during the study, which `resume` continues; 128 + the
signal when interrupted (130 Ctrl-C, 143 SIGTERM / `ray job stop`, 129 SIGHUP: the terminal closed).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from ncstudy.errors import StorageFault, StudyError
from ncstudy.outputs.commands import ncstudy_command
from ncstudy.study.interrupt import INTERRUPTION

EXIT_TRIALS_FAILED = 1
EXIT_USER_ERROR = 2
UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}
EXIT_STORAGE_FAULT = 75  # sysexits' EX_TEMPFAIL: stopped for now, `resume` continues once there is room


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ncstudy",
        description="Hyperparameter studies of neural-collapse regularizers for long-tailed classification.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a study from a YAML file", description="Run a study: Ray Tune + Optuna over Ray Train trials, tracked in MLflow.")
    run.add_argument("study", type=Path, help="the study YAML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting, e.g. --set train.epochs=2 (repeatable; VALUE is read as YAML)")
    run.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    run.add_argument("--restart", action="store_true", help="replace an existing study of the same name")
    run.add_argument("--fail-fast", action="store_true", help="stop the study at the first failed trial (default: record it and go on)")
    _add_cluster(run)
    _add_smoke(run)
    run.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")

    train = commands.add_parser("train", help="train one configuration, without Ray", description="Train the study's base config (with --set overrides) once, in this process: no Ray, no Optuna. Writes RESULTS/<name>/ as a one-trial study (`report` reads it) and one MLflow run.")
    train.add_argument("study", type=Path, help="the study YAML file")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable; VALUE is read as YAML)")
    train.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    train.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when one is visible, else cpu")
    train.add_argument("--no-tracking", dest="tracking", action="store_false", help="no MLflow run (MLflow need not be installed)")
    train.add_argument("--restart", action="store_true", help="replace an earlier `train` folder of the same name")
    train.add_argument("--no-figures", dest="figures", action="store_false", help="no figures/ at the end (matplotlib need not be installed)")
    _add_smoke(train)

    resume = commands.add_parser("resume", help="continue an interrupted study", description="Continue an interrupted study to its planned trial count.")
    resume.add_argument("name", help="the study name (a folder under --results)")
    resume.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    resume.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")

    validate = commands.add_parser("validate", help="check a study file and print the resolved config", description="Validate a study file (and overrides) and print the resolved config; writes nothing, except that with data.download: true a missing CIFAR is downloaded into data.root.")
    validate.add_argument("study", type=Path, help="the study YAML file")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    _add_cluster(validate)
    _add_smoke(validate)

    report = commands.add_parser("report", help="tables and figures of one or more studies", description="Write report.md, tables (Markdown, LaTeX, CSV) and figures of one study, or of several merged (ablation columns per study and ratio). Works on running and interrupted studies.")
    report.add_argument("names", nargs="+", metavar="NAME", help="study names (folders under --results)")
    report.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    report.add_argument("--format", default="md,latex,csv", help="table formats, comma-separated (default: md,latex,csv)")
    report.add_argument("--baseline", metavar="ROW", help='differences against this configuration: a variant name ("CE") or key=value pairs')

    data = commands.add_parser("data", help="inspect a study's data", description="Inspect the data a study would train on.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    describe = data_commands.add_parser("describe", help="per-class train/val/test counts, groups and profile", description="Print per-class train / val / test counts, the many/medium/few groups and the long-tailed profile. With data.download: true a missing CIFAR is downloaded into data.root first.")
    describe.add_argument("study", type=Path, help="the study YAML file")
    describe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    describe.add_argument("--plot", type=Path, metavar="FILE.png", help="also save the profile as a PNG")
    _add_smoke(describe)
    return parser


def _add_smoke(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--smoke", action="store_true",
        help="a smaller copy of the study, NAME-smoke: at most 4 epochs with every epoch setting scaled, fewer images "
             "and configurations, resources fitted to this machine (--set applies after it)",
    )  # fmt: skip


def _add_cluster(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cluster", type=Path, metavar="CLUSTER.yaml",
        help="a Ray cluster-launcher file (cluster/aws-gpu.yaml): refuse a trial that none of its node types can hold, "
             "warn when search.max_concurrent trials never fit at once",
    )  # fmt: skip


def _check_cluster(args: argparse.Namespace, study, out) -> None:
    """--cluster: refuse (StudyError) a trial the file's largest cluster cannot place, before Ray
    starts and before anything is written; print its warnings (ncstudy.study.cluster_capacity)."""
    from ncstudy.study.cluster_capacity import check_cluster_file

    if args.cluster is None:
        return
    summary, warnings = check_cluster_file(study, args.cluster)
    if args.command == "validate":
        print(f"# {summary}", file=out)
    for warning in warnings:
        print(warning, file=out, flush=True)


def _read(args: argparse.Namespace):
    """The study of the command's file, --smoke and --set; with --smoke, says in one line what changed."""
    from ncstudy.smoke import describe
    from ncstudy.study_file import read_study

    read = read_study(args.study, args.overrides, smoke=args.smoke)
    if read.smoke is not None:
        print(describe(read.full_name, read.smoke), file=sys.stderr if args.command == "validate" else sys.stdout, flush=True)
    return read


def _report(args: argparse.Namespace) -> int:
    from ncstudy.outputs.report import build_report
    from ncstudy.outputs.tables import FORMATS

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise StudyError(f"--format: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(FORMATS)}")
    try:
        out = build_report(args.names, args.results, formats, args.baseline)
    except OSError as error:
        if error.errno not in UNWRITABLE:
            raise
        raise StudyError(
            f"report: cannot write {error.filename or args.results} ({error.strerror}); the report is written into the "
            "study folder: copy the folder somewhere writable and report it there (--results)"
        ) from None
    print((out / "report.md").read_text())
    print(f"written: {out / 'report.md'}, {out / 'tables'}/, {out / 'figures'}/")
    return 0


def _data(args: argparse.Namespace) -> int:
    from ncstudy.config import get_dotted
    from ncstudy.data.build import build_data
    from ncstudy.data.describe import describe_text, plot_profile

    study = _read(args).study
    data = build_data(study.data)
    print(describe_text(data, study.data))
    for key, values in _searched_data_settings(study).items():
        shown = get_dotted(study.model_dump(mode="json"), key)
        print(f"note: the study sets {key} per trial ({values}); shown is {shown}: "
              f"describe another with --set {key}=VALUE")  # fmt: skip
    if args.plot:
        plot_profile(data, args.plot)
        print(f"profile plot: {args.plot}")
    return 0


def _searched_data_settings(study) -> dict[str, str]:
    """The data settings a study's trials set themselves (strata, search space, variants): each with
    the values it takes, so `data describe` can say that it shows one of them."""
    search = study.search
    found = {key: ", ".join(map(str, values)) for key, values in search.strata.items()}
    for key, param in search.space.items():
        found[key] = ", ".join(map(str, param.values)) if hasattr(param, "values") else f"{param.low} to {param.high}"
    for bundle in search.variants.values():
        for key in bundle:
            found.setdefault(key, "set by variants")
    return {key: values for key, values in found.items() if key.startswith("data.")}


def _quiet_libraries(verbose: bool) -> None:
    """MLflow's schema migrations and Optuna's study creation log at INFO; Ray Tune prints a
    configuration box and a TensorBoard hint (its "new output" engine) and its own resume advice.
    Keep them for -v."""
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        for name in ("mlflow", "alembic", "optuna"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # On an interrupt Tune warns "Resume experiment with: Tuner.restore(...)"; ncstudy says how instead.
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    from ncstudy.study_file import refuse_searched_overrides

    read = _read(args)
    for note in refuse_searched_overrides(read):
        print(note, flush=True)
    _check_cluster(args, read.study, sys.stdout)  # before Ray's (slow) import, as in _validate
    from ncstudy.study.driver import run_study

    args.name = read.study.name  # for the interruption message
    _quiet_libraries(args.verbose)
    outcome = run_study(read.study, args.results, restart=args.restart, verbose=args.verbose, fail_fast=args.fail_fast, smoke=read.smoke_record())
    return _print_outcome(outcome)


def _train(args: argparse.Namespace) -> int:
    from ncstudy.engine.loop import TrialDiverged
    from ncstudy.single_run import train_single

    study = _read(args).study
    for name in ("mlflow", "alembic"):  # schema migrations log at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        outcome = train_single(study, args.results, args.device, args.tracking, args.restart, args.figures)
    except TrialDiverged as error:  # a result of the settings, not a bug: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    last = outcome.last
    groups = "  ".join(f"{g} {100 * last[f'test_acc_{g}']:.1f}" for g in ("all", "many", "medium", "few"))
    print(f"test accuracy  {groups}")
    figures = f", {outcome.folder / 'figures'}/" if args.figures else ""
    print(f"results:  {outcome.folder / 'trials.parquet'}, {outcome.folder / 'epochs.parquet'}{figures}")
    if outcome.tracking_uri:
        print("\n".join(_tracking_lines(outcome.tracking_uri)))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from ncstudy.config import check_study_name
    from ncstudy.study.driver import resume_study

    check_study_name(args.name)
    _quiet_libraries(args.verbose)
    return _print_outcome(resume_study(args.name, args.results, verbose=args.verbose))


def _validate(args: argparse.Namespace) -> int:
    from ncstudy.config import dump_yaml
    from ncstudy.study_file import refuse_searched_overrides

    read = _read(args)
    for note in refuse_searched_overrides(read):
        print(f"# {note}", file=sys.stderr)
    _check_cluster(args, read.study, sys.stderr)  # before Ray's (slow) import: a refusal takes a second
    from ncstudy.study.cluster import check_local_resources
    from ncstudy.study.driver import preflight

    preflight(read.study)
    print(dump_yaml(read.study), end="")
    if read.bases:
        print(f"# base files, applied in this order: {', '.join(map(str, read.bases))}", file=sys.stderr)
    print(f"# {args.study}: valid", file=sys.stderr)
    if args.cluster:  # a study checked against a cluster file: this machine's size is beside the point
        return 0
    try:
        check_local_resources(read.study)
    except StudyError as error:  # the file is valid; this machine cannot run it with a local Ray
        print(f"# note: `run` here would refuse it: {error}", file=sys.stderr)
    return 0


def _print_outcome(outcome) -> int:
    """The head/medium/tail table (a multi-objective study's: its fronts) and where everything is;
    the exit status of the outcome."""
    name = outcome.folder.name
    tables = outcome.folder / "tables"
    table = _table(tables / "front.md") or _table(tables / "shot.md")
    if table:
        print(f"\n{table}")
    print(f"report:   {outcome.folder / 'report.md'} (tables/ and figures/ beside it)")
    print(f"results:  {outcome.folder / 'trials.parquet'}, {outcome.folder / 'epochs.parquet'}")
    print("\n".join(_tracking_lines(outcome.tracking_uri, outcome.runs_page)))
    if outcome.interrupted:
        print(
            f"interrupted: {outcome.finished} finished, {outcome.unfinished} unfinished; "
            f"`{ncstudy_command('resume', name, outcome.folder.parent)}` continues it",
            file=sys.stderr,
        )
        return INTERRUPTION.exit_status
    for trial_id, epochs, error in outcome.failed:
        print(f"trial {trial_id} failed after {epochs} epochs: {error}", file=sys.stderr)
    if outcome.failed:
        print(f"{len(outcome.failed)} of {outcome.planned} trials failed, {outcome.finished} finished", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    print(f"{outcome.finished} of {outcome.planned} trials finished")
    return 0


def _tracking_lines(uri: str, page: str = "") -> list[str]:
    """How to see the runs: a tracking server's page; or `mlflow ui` over the local store, then the
    study's page (MLflow 3 opens an experiment in its GenAI view unless the link asks for model
    training: ncstudy.study.tracking.experiment_page)."""
    if uri.startswith(("http://", "https://")):
        return [f"tracking: {page or uri}"]
    lines = [f"tracking: mlflow ui --backend-store-uri {uri}"]
    return lines + [f"          then open {page}"] if page else lines


def _table(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    INTERRUPTION.install()
    handlers = {"run": _run, "train": _train, "resume": _resume, "validate": _validate, "data": _data, "report": _report}
    try:
        return handlers[args.command](args)
    except StudyError as error:
        for line in str(error).splitlines():  # several refused settings: a line each
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except StorageFault as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STORAGE_FAULT
    except KeyboardInterrupt:
        name = getattr(args, "name", None) or ""
        again = f"; `{ncstudy_command('resume', name, args.results)}` continues it" if name else ""
        print(f"\ninterrupted{again}", file=sys.stderr)
        return INTERRUPTION.exit_status
