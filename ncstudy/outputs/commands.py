"""Commands that run when pasted (the guide's principles): every command ncstudy prints for a user to
run (the interrupt line's resume, an error's fix) carries `--results DIR` when the study is not
under the default folder; and the "no study named X" error says where studies are. Light (no Ray),
so the command line imports it at start.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ncstudy.errors import StudyError

DEFAULT_RESULTS = Path("results")  # the CLI's default --results, relative to where the command runs


def results_option(results: Path) -> str:
    """` --results DIR` (absolute, shell-quoted) unless `results` is the default folder seen from
    here: a printed command must run when pasted (the guide's principles), wherever the study lives."""
    if Path(results).resolve() == DEFAULT_RESULTS.resolve():
        return ""
    return f" --results {shlex.quote(str(Path(results).resolve()))}"


def ncstudy_command(verb: str, name: str, results: Path) -> str:
    """`python -m ncstudy VERB NAME [--results DIR]`, as a user pastes it."""
    return f"python -m ncstudy {verb} {shlex.quote(name)}{results_option(results)}"


def study_names(results: Path) -> list[str]:
    """The studies under a results folder: its sub-folders that hold a study.yaml."""
    try:
        return sorted(entry.name for entry in Path(results).iterdir() if (entry / "study.yaml").is_file())
    except OSError:
        return []


def no_study_error(name: str, results: Path) -> StudyError:
    """`no study named NAME under DIR`, with where it may be instead: the studies that DIR holds, the
    default results folder when DIR is another one, and a DIR that is itself the study's folder."""
    results = Path(results)
    found = study_names(results)
    where = f"{results.resolve()} holds {', '.join(found)}" if found else f"{results.resolve()} holds no study"
    hints = []
    if (results / "study.yaml").is_file() and results.name == name:
        hints.append(f"that folder is the study itself: pass --results {shlex.quote(str(results.resolve().parent))}")
    elif name in study_names(DEFAULT_RESULTS) and results.resolve() != DEFAULT_RESULTS.resolve():
        hints.append(f"./{DEFAULT_RESULTS} has it: drop --results")
    else:
        hints.append("a study run with --results DIR is found with the same --results DIR")
    return StudyError(f"no study named {name!r} under {results}: {where}; {'; '.join(hints)}")
