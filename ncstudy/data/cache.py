"""Decode-once cache: an image table decoded to uint8 arrays is saved as .npy files keyed by a hash
of the source file's bytes, so every later trial, study and rerun memory-maps it instead of decoding
50,000 JPEGs again. The folder is `data.cache_dir` (default ~/.cache/ncstudy, or $NCSTUDY_CACHE).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ncstudy.atomic import replaced_atomically
from ncstudy.errors import StudyError

FORMAT_VERSION = "1"  # bump when the decoded layout changes


def default_cache_dir() -> Path:
    return Path(os.environ.get("NCSTUDY_CACHE", Path.home() / ".cache" / "ncstudy"))


def content_key(path: Path) -> str:
    """sha256 of the file's bytes (and the cache format), 16 hex digits."""
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cached_arrays(
    source: Path, cache_dir: Path, decode: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of `source`, decoded by `decode()` on a miss and memory-mapped on a hit.
    Entries are written only after `decode()` returned, so a table it refuses leaves none; a damaged
    entry (a disk that filled up, say) counts as a miss."""
    key = content_key(source)
    images_file = cache_dir / f"{source.stem}-{key}-images.npy"
    labels_file = cache_dir / f"{source.stem}-{key}-labels.npy"
    if images_file.exists() and labels_file.exists():
        try:
            return np.load(images_file, mmap_mode="r"), np.load(labels_file)
        except (OSError, ValueError):
            pass  # damaged: decode again and replace it
    images, labels = decode()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path, array in ((images_file, images), (labels_file, labels)):
            _save_atomic(path, array)
    except OSError as error:
        raise StudyError(
            f"data.cache_dir: cannot write the decode cache in {cache_dir} ({error.strerror or error}); "
            "set data.cache_dir or $NCSTUDY_CACHE to a writable folder"
        ) from None
    return images, labels


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Concurrent trials never read half a file, and a failed write leaves nothing behind."""
    with replaced_atomically(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)
