"""The exceptions the CLI turns into one line: a user's bad input (exit status 2) and a storage fault
that stopped a study (exit status 75, docs/cli.md, "Exit status")."""

from __future__ import annotations

import reprlib
from typing import Any


class StudyError(Exception):
    """Bad input (a study file, an override, a data folder): the message names the key or file."""


class StorageFault(Exception):
    """The study folder's disk filled up or became read-only while a driver worked: the study stopped
    as an interruption, which `resume` continues once there is room (ncstudy.outputs.storage)."""


def excerpt(value: Any, limit: int = 80) -> str:
    """A short one-line repr of a user's value for an error message: containers show their first
    items only (a list of millions of elements is never rendered), the text is cut to `limit`."""
    shorten = reprlib.Repr()
    shorten.maxlevel, shorten.maxlist, shorten.maxtuple, shorten.maxdict = 3, 6, 6, 4
    shorten.maxstring = shorten.maxother = shorten.maxlong = limit
    text = shorten.repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
