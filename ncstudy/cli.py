"""Command line: run | resume | validate | report | data describe. Thin: parse, call, print.

Every error a user can cause (a bad study file, an override, a data folder) is a StudyError: one
line on stderr naming the key or file, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from ncstudy.errors import StudyError

EXIT_USER_ERROR = 2


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
    run.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")

    resume = commands.add_parser("resume", help="continue an interrupted study", description="Continue an interrupted study to its planned trial count.")
    resume.add_argument("name", help="the study name (a folder under --results)")
    resume.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    resume.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs")

    validate = commands.add_parser("validate", help="check a study file and print the resolved config", description="Validate a study file (and overrides) and print the resolved config; writes nothing.")
    validate.add_argument("study", type=Path, help="the study YAML file")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")

    report = commands.add_parser("report", help="tables and figures of one or more studies", description="Write report.md, tables (Markdown, LaTeX, CSV) and figures of one study, or of several merged (ablation columns per study and ratio). Works on running and interrupted studies.")
    report.add_argument("names", nargs="+", metavar="NAME", help="study names (folders under --results)")
    report.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results/)")
    report.add_argument("--format", default="md,latex,csv", help="table formats, comma-separated (default: md,latex,csv)")
    report.add_argument("--baseline", metavar="ROW", help='differences against this configuration: a variant name ("CE") or key=value pairs')

    data = commands.add_parser("data", help="inspect a study's data", description="Inspect the data a study would train on.")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    describe = data_commands.add_parser("describe", help="per-class train/val/test counts, groups and profile", description="Print per-class train / val / test counts, the many/medium/few groups and the long-tailed profile.")
    describe.add_argument("study", type=Path, help="the study YAML file")
    describe.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a setting (repeatable)")
    describe.add_argument("--plot", type=Path, metavar="FILE.png", help="also save the profile as a PNG")
    return parser


def _report(args: argparse.Namespace) -> int:
    from ncstudy.report import build_report
    from ncstudy.tables import FORMATS

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise StudyError(f"--format: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(FORMATS)}")
    out = build_report(args.names, args.results, formats, args.baseline)
    print((out / "report.md").read_text())
    print(f"written: {out / 'report.md'}, {out / 'tables'}/, {out / 'figures'}/")
    return 0


def _data(args: argparse.Namespace) -> int:
    from ncstudy.config import load_study
    from ncstudy.data.build import build_data
    from ncstudy.data.describe import describe_text, plot_profile

    study = load_study(args.study, args.overrides)
    data = build_data(study.data)
    print(describe_text(data, study.data))
    if args.plot:
        plot_profile(data, args.plot)
        print(f"profile plot: {args.plot}")
    return 0


def _quiet_libraries(verbose: bool) -> None:
    """MLflow's schema migrations and Optuna's study creation log at INFO; keep them for -v."""
    if not verbose:
        for name in ("mlflow", "alembic", "optuna"):
            logging.getLogger(name).setLevel(logging.WARNING)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(args: argparse.Namespace) -> int:
    from ncstudy.config import load_study
    from ncstudy.study import run_study

    study = load_study(args.study, args.overrides)
    _quiet_libraries(args.verbose)
    outcome = run_study(study, args.results, restart=args.restart, verbose=args.verbose, fail_fast=args.fail_fast)
    _print_outcome(outcome)
    return 0 if outcome.finished else 1


def _resume(args: argparse.Namespace) -> int:
    from ncstudy.study import resume_study

    _quiet_libraries(args.verbose)
    outcome = resume_study(args.name, args.results, verbose=args.verbose)
    _print_outcome(outcome)
    return 0 if outcome.finished else 1


def _validate(args: argparse.Namespace) -> int:
    from ncstudy.config import dump_yaml, load_study
    from ncstudy.study import preflight

    study = load_study(args.study, args.overrides)
    preflight(study)
    print(dump_yaml(study), end="")
    print(f"# {args.study}: valid", file=sys.stderr)
    return 0


def _print_outcome(outcome) -> None:
    print(f"\n{outcome.finished} trials finished, {outcome.failed} failed")
    print(f"report:   {outcome.folder / 'report.md'} (tables/ and figures/ beside it)")
    print(f"results:  {outcome.folder / 'trials.parquet'}, {outcome.folder / 'epochs.parquet'}")
    print(f"tracking: mlflow ui --backend-store-uri {outcome.tracking_uri}")
    report = outcome.folder / "report.md"
    if report.exists():
        print()
        print(report.read_text())


def _stop_on_sigterm(signum, frame) -> None:
    """`ray job stop` and schedulers send SIGTERM: stop like Ctrl-C, so runs are marked KILLED."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    handlers = {"run": _run, "resume": _resume, "validate": _validate, "data": _data, "report": _report}
    try:
        return handlers[args.command](args)
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
