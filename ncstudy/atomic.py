"""Every output file is written whole or not at all: to a temporary name in the same folder, then
renamed over the target (a rename within a folder is atomic on POSIX file systems, NFS included), so
an interrupted study, report or cache write never leaves half a file for a reader."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_atomically(path: Path):
    """Yields a temporary path beside `path` to write; renames it over `path` when the block ends
    without an error, and removes it in any case."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
