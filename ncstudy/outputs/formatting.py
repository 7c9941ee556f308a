"""A parameter's value as text, one rule for the report's labels (ncstudy.outputs.report), the tables'
configuration cells (ncstudy.outputs.tables) and the live progress lines (ncstudy.study.progress): a float to
`digits` significant digits, a missing value as "none", anything else as `str` gives it.

A missing value is a parameter set to None (e.g. the hard-min temperature), which comes back from a
DataFrame or Parquet as NaN (or pandas' NA in a nullable column); "none" names the setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd


def missing(value: Any) -> bool:
    """None, NaN or pandas' NA/NaT; never true of a list or other container."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def value_text(value: Any, digits: int = 3) -> str:
    """"none" for a missing value, a float to `digits` significant digits (`g`), else `str(value)`."""
    if missing(value):
        return "none"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of an error's text (a traceback's is `module.Error: message`), the
    error's class without its module, at most `limit` characters; "" if the text has none."""
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    if not lines:
        return ""
    last = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Z]\w*(?:\([\w.]*\))?: )", "", lines[-1])
    return last if len(last) <= limit else last[: limit - 3] + "..."


def trial_error_text(trial) -> str:
    """A failed trial's whole error, from Tune's error.txt: the driver's copy (`error_file`, written
    before Tune calls back), else the one in the study folder (`path`); "" where neither reads."""
    candidates = [getattr(trial, "error_file", None)]
    if getattr(trial, "path", None):
        candidates.append(Path(trial.path) / "error.txt")
    for candidate in filter(None, candidates):
        try:
            return Path(candidate).read_text(errors="replace")
        except OSError:
            continue
    return ""


def trial_error_line(trial) -> str:
    """The last line of a failed trial's error (`trial_error_text`, `error_line`)."""
    return error_line(trial_error_text(trial)) or "error (no message saved)"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
