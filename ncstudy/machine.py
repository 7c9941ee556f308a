"""This machine, as a study sees it before Ray starts: whether the driver would join a cluster or
start a private local Ray (the guide's conventions: join only when told, through
`resources.address` or `$RAY_ADDRESS`), and the CPUs and GPUs a local Ray would have. Both the
refusal of a trial this machine cannot hold (ncstudy.study.cluster) and `--smoke`'s fitting of
resources (ncstudy.smoke) ask here, so they agree on which Ray a run would use.
"""

from __future__ import annotations

import os

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def cluster_address(configured: str | None) -> str | None:
    """The cluster a study joins (`resources.address`, else `$RAY_ADDRESS`), or None for a private local
    Ray (also when the address is `local`)."""
    address = configured or os.environ.get(RAY_ADDRESS_ENV)
    return address if address and address != "local" else None


def local_cpus() -> int:
    return os.cpu_count() or 1


def local_gpus() -> int:
    """CUDA devices this process sees (torch imported only here, when asked)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
