"""Shared fixtures: one small local Ray instance for every Ray test of the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CIFAR_PARQUET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"

# Fail fast instead of hanging when a worker group cannot be scheduled.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from ncstudy.cluster import RAY_ENV

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
    if not (CIFAR_PARQUET / "train.parquet").exists():
        pytest.skip(f"CIFAR-10 Parquet tables not found at {CIFAR_PARQUET}")
    return CIFAR_PARQUET, tmp_path_factory.mktemp("decoded")
