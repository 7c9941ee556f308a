"""This machine, as a study sees it before Ray starts: whether the driver would join a cluster or
start a private local Ray (the guide's conventions: join only when told, through
`resources.address` or `$RAY_ADDRESS`), and the CPUs and GPUs a local Ray would have. Both the
refusal of a trial this machine cannot hold (ncstudy.study.cluster) and `--smoke`'s fitting of
resources (ncstudy.smoke) ask here, so they agree on which Ray a run would use.
"""

from __future__ import annotations

import os
import socket

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


CONNECT_TIMEOUT_S = 5.0  # a cluster's GCS answers a TCP connect at once; a wrong host may not answer at all


def where_named(configured: str | None) -> str:
    """How the user named the cluster, for an error line: the setting or the environment variable."""
    return f"resources.address {configured}" if configured else f"{RAY_ADDRESS_ENV}={os.environ.get(RAY_ADDRESS_ENV)}"


def unreachable(address: str) -> str | None:
    """Why nothing answers at a cluster address (`host:port`, `ray://host:port`), or None when a TCP
    connection opens (or the address names no host: `auto`, which Ray resolves itself). Asked before
    `ray.init`, which otherwise retries "Failed to connect to GCS" for minutes without a word."""
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    return None
