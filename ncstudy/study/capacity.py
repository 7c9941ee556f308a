"""Trials that wait for nodes on a cluster that may grow: say so on the console, and stop the study
instead of waiting forever when no node comes.

On a joined cluster (`resources.address`) a trial larger than what the nodes offer now is not
refused (ncstudy.study.cluster.check_resources): an autoscaler may add nodes. Ray Tune holds each
trial's resources in a placement group, which waits in Ray until a node can hold it, without a word
and without an end; Tune's own "No trial is running ... insufficient resources" warning (ray.tune
.execution.insufficient_resources_manager) only guesses, and never stops. Here the driver reads
what the cluster says about itself, every `poll_s` seconds while some trial is PENDING (a GCS request or two):

- the placement groups that wait for resources and the alive nodes, from the GCS through Ray's
  autoscaler SDK (`ray.autoscaler.v2.sdk.get_cluster_status`, which `ray status` uses; its demand
  and node parts come from the GCS and hold with either autoscaler);
- the nodes being added: the same status's pending launches and nodes (autoscaler v2), or, under
  the v1 autoscaler that `ray up` runs by default in Ray 2.60, the report its monitor writes to the
  GCS key `__autoscaling_status` (ray.autoscaler._private.monitor, read by `ray status` through
  ray.autoscaler._private.commands.debug_status): `pending_launches` and `pending_nodes`.

While trials wait for resources the console says `waiting for nodes: ...` every `every_s` seconds.
When they have waited `resources.node_wait_s` seconds with no trial running, no node being added and
no node joining, the study stops as an interruption stops it (SIGUSR1: Tune saves its state; see
ncstudy.study.interrupt), and the driver ends it with one `error:` line (exit status 2) that says
how `resume` continues once the cluster is fixed. That covers a request no node type can hold: Ray
2.60 reports an infeasible placement group nowhere a driver can read it (the v1 autoscaler skips
placement groups in its infeasibility warnings, `StandardAutoscaler._report_pending_infeasible`,
and the v2 status leaves infeasible requests out, ray.autoscaler.v2.schema), so such a trial is
seen as one for which the autoscaler adds nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from ncstudy.study.console import STUDY_LOG

V1_STATUS_KEY = "__autoscaling_status"  # ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS
V1_STATUS_MAX_AGE_S = 60.0  # a report older than this is a monitor that stopped: it adds nothing


@dataclass(frozen=True)
class ClusterView:
    """What the cluster says about itself at one moment."""

    waiting_groups: int  # placement groups waiting for resources (a Tune trial holds its resources in one)
    adding: dict[str, int] = field(default_factory=dict)  # node type -> nodes being launched or started
    nodes: int = 0  # alive nodes
    largest: dict[str, float] = field(default_factory=dict)  # CPU and GPU of the alive node with the most CPUs


def read_cluster() -> ClusterView:
    """The view of the cluster this driver has joined (module docstring)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    adding: Counter[str] = Counter()
    for launch in status.pending_launches:
        adding[launch.ray_node_type_name] += launch.count
    for node in status.pending_nodes:
        adding[node.ray_node_type_name] += 1
    adding.update(_v1_adding())
    nodes = [*status.active_nodes, *status.idle_nodes]
    sizes = [
        {u.resource_name: u.total for u in node.resource_usage.usage if u.resource_name in ("CPU", "GPU")}
        for node in nodes
        if node.resource_usage
    ]
    largest = max(sizes, key=lambda size: (size.get("CPU", 0.0), size.get("GPU", 0.0)), default={})
    return ClusterView(len(status.resource_demands.placement_group_demand), dict(adding), len(nodes), largest)


def _v1_adding() -> Counter[str]:
    """The nodes the v1 autoscaler is launching or starting, from its latest report (none if it is stale)."""
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(V1_STATUS_KEY)
    report = json.loads(raw) if raw else {}
    if not report or time.time() - float(report.get("time", 0)) > V1_STATUS_MAX_AGE_S:
        return Counter()
    summary = report.get("autoscaler_report") or {}
    adding = Counter({str(kind): int(count) for kind, count in (summary.get("pending_launches") or {}).items()})
    for _ip, kind, _status in summary.get("pending_nodes") or []:
        adding[str(kind)] += 1
    return adding


@dataclass
class NodeWait:
    """This process's record of the watch (one per driver, like ncstudy.study.interrupt.INTERRUPTION):
    whether the cluster may grow (set once Ray is joined), and why the watch stopped the study."""

    watching: bool = False
    reason: str | None = None


NODE_WAIT = NodeWait()


def _amount(need: dict[str, float]) -> str:
    return " and ".join(f"{amount:g} {kind}" for kind, amount in need.items() if amount) or "no CPU or GPU"


class CapacityWatch:
    """Called by the study's Tune callback (ncstudy.study.progress) at every step of Tune's loop; it
    reads the cluster at most every `poll_s` seconds, and only while a trial is PENDING. Tune pickles
    the callback with the experiment, so nothing here holds a connection."""

    def __init__(self, need: dict[str, float], wait_s: float, every_s: float = 30.0, poll_s: float = 2.0,
                 read: Callable[[], ClusterView] = read_cluster):  # fmt: skip
        self.need = need
        self.wait_s = wait_s
        self.every_s = every_s
        self.poll_s = poll_s
        self.read = read
        self.reset()

    def reset(self) -> None:
        self._polled = -math.inf
        self._waiting_since: float | None = None  # first poll that saw trials waiting for resources
        self._stalled_since: float | None = None  # since then no trial ran, no node came or was being added
        self._nodes = -1
        self._said = -math.inf

    def check(self, trials: list, say: Callable[[str], None]) -> None:
        if not NODE_WAIT.watching or NODE_WAIT.reason:
            return
        pending = sum(1 for t in trials if t.status == "PENDING")
        if not pending:
            self._waiting_since = self._stalled_since = None
            self._said = -math.inf
            return
        now = time.monotonic()
        if now - self._polled < self.poll_s:
            return
        self._polled = now
        try:
            view = self.read()
        except Exception as error:  # the GCS busy or restarting: ask again at the next poll
            STUDY_LOG.warning("could not read the cluster's status: %s", error)
            return
        self.observe(now, pending, any(t.status == "RUNNING" for t in trials), view, say)

    def observe(self, now: float, pending: int, running: bool, view: ClusterView, say: Callable[[str], None]) -> None:
        """One poll's conclusions: a line while trials wait for resources (at once when nodes are
        being added, else from the second poll that sees them waiting: a placement group being
        placed is not yet waiting), and the stop."""
        if not view.waiting_groups:  # the wait is over: the next one is news, said at once
            self._waiting_since = self._stalled_since = None
            self._nodes = view.nodes
            self._said = -math.inf
            return
        if self._waiting_since is None:
            self._waiting_since = now
        if running or view.adding or view.nodes != self._nodes or self._stalled_since is None:
            self._stalled_since = now
        self._nodes = view.nodes
        if (view.adding or now - self._waiting_since >= self.poll_s) and now - self._said >= self.every_s:
            self._said = now
            say(self.line(pending, view, now))
        if now - self._stalled_since >= self.wait_s:
            NODE_WAIT.reason = self.reason(view)
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune stops and saves its state (ncstudy.study.interrupt)

    def line(self, pending: int, view: ClusterView, now: float) -> str:
        trials = f"{pending} trial{'s' if pending != 1 else ''} need{'s' if pending == 1 else ''} {_amount(self.need)} each"
        if view.adding:
            kinds = ", ".join(f"{count} {kind} node{'s' if count != 1 else ''}" for kind, count in sorted(view.adding.items()))
            return f"waiting for nodes: {trials}; the autoscaler is adding {kinds}"
        since = now if self._stalled_since is None else self._stalled_since
        left = max(0.0, self.wait_s - (now - since))
        return (
            f"waiting for nodes: {trials}; no node is being added: the study stops in {left:.0f} s "
            "unless one comes (resources.node_wait_s)"
        )

    def reason(self, view: ClusterView) -> str:
        largest = _amount({kind: view.largest.get(kind, 0.0) for kind in ("CPU", "GPU")})
        return (
            f"resources.node_wait_s: trials waited {self.wait_s:g} s for nodes while none ran and the autoscaler "
            f"added no node; a trial needs {_amount(self.need)}, the largest node of the cluster has {largest} "
            "(no node type of the cluster may hold the trial, or the cluster is at its max_workers or the "
            "cloud's quota: `ray status` shows what it waits for)"
        )
