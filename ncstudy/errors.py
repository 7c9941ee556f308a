"""The one exception a user can cause: the CLI prints its message on one line and exits with status 2."""

from __future__ import annotations

import reprlib
from typing import Any


class StudyError(Exception):
    """Bad input (a study file, an override, a data folder): the message names the key or file."""


def excerpt(value: Any, limit: int = 80) -> str:
    """A short one-line repr of a user's value for an error message: containers show their first
    items only (a list of millions of elements is never rendered), the text is cut to `limit`."""
    shorten = reprlib.Repr()
    shorten.maxlevel, shorten.maxlist, shorten.maxtuple, shorten.maxdict = 3, 6, 6, 4
    shorten.maxstring = shorten.maxother = shorten.maxlong = limit
    text = shorten.repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
