"""The watch over trials that wait for nodes (ncstudy.study.capacity), on made-up cluster views: when
it speaks, how often, and when it stops the study. tests/test_autoscaler.py plays it on Ray's own
autoscaler (slow)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from ncstudy.study import capacity
from ncstudy.study.capacity import CapacityWatch, ClusterView

NEED = {"CPU": 2.0, "GPU": 0.0}
ADDING = ClusterView(waiting_groups=1, adding={"ray.worker.gpu": 1}, nodes=1)
NOTHING = ClusterView(waiting_groups=1, adding={}, nodes=1)


@pytest.fixture
def signals(monkeypatch):
    """The signals the watch sends to this process (none really sent), and a fresh record."""
    sent = []
    monkeypatch.setattr(capacity.os, "kill", lambda pid, signum: sent.append(signum))
    monkeypatch.setattr(capacity, "NODE_WAIT", capacity.NodeWait(watching=True))
    return sent


def test_while_nodes_are_added_it_says_so_at_once_then_every_interval_and_never_stops(signals):
    watch, said = CapacityWatch(NEED, wait_s=60, every_s=30), []
    for now in range(0, 300, 2):
        watch.observe(now, pending=2, running=False, view=ADDING, say=said.append)
    assert said[0] == "waiting for nodes: 2 trials need 2 CPU each; the autoscaler is adding 1 ray.worker.gpu node"
    assert len(said) == 10  # at 0, 30, ..., 270 s: not per poll
    assert signals == [] and capacity.NODE_WAIT.reason is None


def test_each_wait_is_said_at_its_start(signals):
    watch, said = CapacityWatch(NEED, wait_s=60, every_s=30), []
    for now, view in [(0, ADDING), (2, ADDING), (4, ClusterView(0, {}, nodes=2)), (10, ADDING), (12, ADDING)]:
        watch.observe(now, pending=1, running=False, view=view, say=said.append)
    assert len(said) == 2  # at 0 and at 10 s (a node lost, another added), not at 2 and 12


def test_trials_waiting_with_no_node_added_stop_the_study_after_the_wait(signals):
    watch, said = CapacityWatch(NEED, wait_s=10, every_s=30, poll_s=2), []
    watch.observe(0, pending=1, running=False, view=NOTHING, say=said.append)
    assert said == []  # a placement group being placed is not yet waiting
    watch.observe(2, pending=1, running=False, view=NOTHING, say=said.append)
    assert said == [
        (
            "waiting for nodes: 1 trial needs 2 CPU each; no node is being added: the study stops in 8 s unless one "
            "comes (resources.node_wait_s)"
        )
    ]
    watch.observe(8, pending=1, running=False, view=NOTHING, say=said.append)
    assert signals == []
    watch.observe(10, pending=1, running=False, view=NOTHING, say=said.append)
    assert signals == [signal.SIGUSR1]  # Tune stops and saves, as on an interruption
    assert capacity.NODE_WAIT.reason.startswith("resources.node_wait_s: trials waited 10 s for nodes")
    assert "a trial needs 2 CPU, the largest node of the cluster has no CPU or GPU" in capacity.NODE_WAIT.reason


def test_a_running_trial_a_joining_node_or_a_node_being_added_restarts_the_wait(signals):
    watch, said = CapacityWatch(NEED, wait_s=10), []
    watch.observe(0, pending=1, running=False, view=NOTHING, say=said.append)
    watch.observe(8, pending=1, running=True, view=NOTHING, say=said.append)
    watch.observe(16, pending=1, running=False, view=NOTHING, say=said.append)
    watch.observe(24, pending=1, running=False, view=ClusterView(1, {}, nodes=2, largest={"CPU": 1.0}), say=said.append)
    watch.observe(32, pending=1, running=False, view=ADDING, say=said.append)
    watch.observe(40, pending=1, running=False, view=NOTHING, say=said.append)
    assert signals == []
    watch.observe(50, pending=1, running=False, view=NOTHING, say=said.append)
    assert signals == [signal.SIGUSR1]


def test_no_placement_group_waiting_means_trials_are_starting_not_waiting(signals):
    watch, said = CapacityWatch(NEED, wait_s=10), []
    for now in range(0, 100, 2):
        watch.observe(now, pending=1, running=False, view=ClusterView(0, {}, nodes=2), say=said.append)
    assert said == [] and signals == []


def test_on_a_cluster_that_cannot_grow_the_cluster_is_never_read(signals):
    capacity.NODE_WAIT.watching = False
    watch = CapacityWatch(NEED, wait_s=10, read=lambda: pytest.fail("read the cluster"))
    watch.check([SimpleNamespace(status="PENDING")], print)
    capacity.NODE_WAIT.watching = True
    read = []
    watch = CapacityWatch(NEED, wait_s=10, read=lambda: read.append(1) or NOTHING)
    watch.check([SimpleNamespace(status="RUNNING")], print)  # no trial pending: nothing to ask
    watch.check([SimpleNamespace(status="PENDING")], print)
    watch.check([SimpleNamespace(status="PENDING")], print)  # within poll_s of the last read
    assert read == [1]
