"""The data root: where a study's relative data paths point.

`NCSTUDY_DATA` (an environment variable) names the folder that holds the data sets; unset, it is
`data` in the directory you run from. A relative `data.root`, `data.train_list`, `data.val_list` or
`data.test_list` resolves against it; an absolute one (or one starting with `~`) is used as is. For
`dataset: cifar10` / `cifar100`, `data.root: null` means the data root itself: the loader looks
there for the data set in each format it reads (ncstudy.data.sources.locate_cifar).

The driver resolves these paths once, when it loads the study (ncstudy.study_file), and the
resolved config (absolute paths) is what the trials receive and what study.yaml records, so Ray
workers on other machines never read the variable themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "NCSTUDY_DATA"
DEFAULT_DATA_ROOT = "data"
DATA_PATH_KEYS = ("root", "train_list", "val_list", "test_list")
FOLDER_DATASETS = ("cifar10", "cifar100")  # root None = the data root itself


def data_root() -> Path:
    """$NCSTUDY_DATA, else ./data, as an absolute path (not necessarily existing)."""
    return Path(os.path.abspath(Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT).expanduser()))


def resolve_data_path(path: str | None) -> str | None:
    """`path` as an absolute path: relative ones are under the data root."""
    if path is None:
        return None
    expanded = Path(path).expanduser()
    return os.path.abspath(expanded if expanded.is_absolute() else data_root() / expanded)


def resolved_data_paths(dataset: str, values: dict[str, str | None]) -> dict[str, str | None]:
    """The data section's path settings (`DATA_PATH_KEYS`) with every path made absolute; for the
    CIFAR data sets a missing root becomes the data root. Digits reads no files: left alone."""
    if dataset == "digits":
        return dict(values)
    resolved = {key: resolve_data_path(value) for key, value in values.items()}
    if dataset in FOLDER_DATASETS and resolved.get("root") is None:
        resolved["root"] = str(data_root())
    return resolved


def data_root_hint() -> str:
    """How the data root was chosen, for error messages."""
    chosen = os.environ.get(DATA_ENV)
    return f"${DATA_ENV} is {chosen}" if chosen else f"${DATA_ENV} is unset, so the data root is ./{DEFAULT_DATA_ROOT}"
