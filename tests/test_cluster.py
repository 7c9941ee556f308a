"""Which Ray a study uses, and how many trials it runs at once (ncstudy.study.cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ncstudy.study.cluster as cluster
from ncstudy.config import load_study
from ncstudy.errors import StudyError

QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


class FakeRay:
    """Records ray.init's arguments instead of starting Ray."""

    def __init__(self):
        self.calls = []

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.calls.append(kwargs)

        class Context:
            dashboard_url = "127.0.0.1:8265"

        return Context()

    def nodes(self):
        return [{"Alive": True}]

    def cluster_resources(self):
        return {"CPU": 2.0}


@pytest.fixture
def fake_ray(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(cluster, "ray", fake)
    monkeypatch.setattr(cluster, "unreachable", lambda address: None)  # the addresses here name no real cluster
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return fake


def test_without_an_address_a_private_local_ray_is_started_on_loopback_and_said(fake_ray, capsys):
    assert cluster.init_ray(None) is False
    (call,) = fake_ray.calls
    assert call["address"] == "local" and call["dashboard_host"] == "127.0.0.1"
    assert capsys.readouterr().out.startswith("ray: a private local instance started by ncstudy; dashboard http://127.0.0.1:8265 (1 node, 2 CPUs, 0 GPUs)")


@pytest.mark.parametrize("configured, env", [("auto", None), (None, "ray://head:10001"), (None, "auto")])
def test_a_cluster_is_joined_only_when_named(fake_ray, monkeypatch, capsys, configured, env):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert cluster.init_ray(configured) is True
    assert fake_ray.calls[0]["address"] == (configured or env)
    assert f"ray: joined the cluster at {configured or env}" in capsys.readouterr().out


def test_an_address_where_nothing_answers_is_one_line_naming_it(fake_ray, monkeypatch):
    monkeypatch.setattr(cluster, "unreachable", lambda address: "Connection refused")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    with pytest.raises(StudyError, match=r"RAY_ADDRESS=10.0.0.9:6379: no Ray cluster answers there \(Connection refused\)"):
        cluster.init_ray(None)
    assert fake_ray.calls == []  # ray.init, which retries for minutes, is never called
    with pytest.raises(StudyError, match="resources.address 10.0.0.9:6379: no Ray cluster"):
        cluster.check_reachable(load_study(QUICKSTART, ["resources.address=10.0.0.9:6379"]))


def test_unreachable_tells_a_refused_port_from_a_listening_one():
    import socket

    from ncstudy.machine import unreachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert unreachable(f"127.0.0.1:{port}") is None and unreachable(f"ray://127.0.0.1:{port}") is None
    assert unreachable(f"127.0.0.1:{port}") is not None
    assert unreachable("auto") is None  # Ray finds that one itself


def test_ray_address_local_means_a_private_instance(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster.init_ray(None) is False and fake_ray.calls[0]["address"] == "local"


def test_concurrency_beyond_what_a_fixed_cluster_holds_is_capped_with_a_note(fake_ray, capsys):
    study = load_study(QUICKSTART, ["search.max_concurrent=4", "resources.cpus_per_worker=2"])
    assert cluster.check_resources(study, may_grow=False) == 1
    assert "note: search.max_concurrent 4 lowered to 1: a trial holds 2 CPU" in capsys.readouterr().out
    assert cluster.check_resources(study, may_grow=True) == 4  # an autoscaler may add nodes
    fitting = load_study(QUICKSTART, ["search.max_concurrent=2", "resources.cpus_per_worker=1"])
    assert cluster.check_resources(fitting, may_grow=False) == 2
    assert "lowered" not in capsys.readouterr().out
