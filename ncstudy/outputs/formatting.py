"""A parameter's value as text, one rule for the report's labels (ncstudy.outputs.report), the tables'
configuration cells (ncstudy.outputs.tables) and the live progress lines (ncstudy.study.progress): a float to
`digits` significant digits, a missing value as "none", anything else as `str` gives it.

A missing value is a parameter set to None (e.g. the hard-min temperature), which comes back from a
DataFrame or Parquet as NaN (or pandas' NA in a nullable column); "none" names the setting.
"""

from __future__ import annotations

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
