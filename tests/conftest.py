"""Shared fixtures: one small local Ray instance for every Ray test of the session; real CIFAR-10
tables where the data root has them; tmpfs mounts for the storage faults."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

DATA_ENV = "NCSTUDY_DATA"  # the data root (ncstudy.data_root); CI points it at its data folder (.ci/run)


def cifar_parquet_folder() -> Path | None:
    """The CIFAR-10 Parquet tables under $NCSTUDY_DATA (in cifar10-jpeg/ or the root itself), or None."""
    root = os.environ.get(DATA_ENV)
    if not root:
        return None
    for folder in (Path(root) / "cifar10-jpeg", Path(root)):
        if (folder / "train.parquet").is_file() and (folder / "test.parquet").is_file():
            return folder.resolve()
    return None


# Fail fast instead of hanging when a worker group cannot be scheduled.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from ncstudy.study.cluster import RAY_ENV

    env = {**RAY_ENV, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]}
    ray.init(
        num_cpus=2,
        object_store_memory=256 * 1024**2,
        include_dashboard=True,
        logging_level="WARNING",
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cifar_parquet(tmp_path_factory):
    """(folder of the real CIFAR-10 Parquet tables, a decode cache shared by the session); skip if absent."""
    folder = cifar_parquet_folder()
    if folder is None:
        where = os.environ.get(DATA_ENV)
        pytest.skip(f"CIFAR-10 Parquet tables not found under ${DATA_ENV} ({where})" if where else f"${DATA_ENV} is not set")
    return folder, tmp_path_factory.mktemp("decoded")


@pytest.fixture
def mount(tmp_path):
    """mount(size_mb, read_only) -> a fresh tmpfs folder, unmounted after the test."""
    mounted = []

    def make(size_mb: int, read_only: bool = False) -> Path:
        folder = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        options = f"size={size_mb}m" + (",ro" if read_only else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
            pytest.skip("mounting a tmpfs is not allowed here")
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
