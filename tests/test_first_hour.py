"""A newcomer's first hour (docs/cli.md): every refused setting named at once; refusals that need no
Ray come before Ray starts and leave nothing in the user's folders; "no study named X" says where
studies are; printed commands carry --results. The resume line pasted verbatim after an interrupt
is played in tests/test_interrupt.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ncstudy.cli import main
from ncstudy.outputs.commands import ncstudy_command

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


def test_validate_names_every_refused_setting_at_once(capsys):
    """Four refusals that used to come one per attempt: two of the schema (a field each), two across
    settings (terms that would be inert), each on its own line blamed on --set."""
    overrides = ["data.imbalance.ratio=-1", "train.lr=-1"]
    assert main(["validate", str(QUICKSTART), *[a for o in overrides for a in ("--set", o)]]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 2 and all(line.startswith("error: --set ") for line in lines), lines
    assert "data.imbalance.ratio" in lines[0] and "train.lr" in lines[1]

    inert = ["train.epochs=3", "loss.reweight=drw", "loss.drw_epoch=5", "regularizer.lambda_between=0",
             "regularizer.temperature=0.5"]  # fmt: skip
    assert main(["validate", str(QUICKSTART), *[a for o in inert for a in ("--set", o)]]) == 2
    lines = error_lines(capsys)
    assert any("regularizer.temperature" in line for line in lines), lines
    assert any("loss.drw_epoch" in line for line in lines), lines
    assert all(line.startswith("error: ") for line in lines)


def test_search_space_refusals_are_named_at_once(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(
        QUICKSTART.read_text().replace(
            "  space:\n",
            "  space:\n    train.lerning_rate: {type: choice, values: [0.1]}\n    model.widht: {type: choice, values: [4]}\n",
        )
    )
    assert main(["validate", str(study)]) == 2
    lines = error_lines(capsys)
    assert any("train.lerning_rate" in line for line in lines) and any("model.widht" in line for line in lines), lines


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a laptop: Ray would be local
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "ncstudy", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_refusals_that_need_no_ray_come_before_it_and_leave_nothing(tmp_path):
    """A GPU this machine lacks, and --restart over a folder that holds no study: refused in one
    line each before the `ray:` line, with no .lock left behind (the two run side by side)."""
    results = tmp_path / "results"
    (results / "quickstart").mkdir(parents=True)
    (results / "quickstart" / "precious.txt").write_text("mine")
    commands = {
        "gpu": ["run", str(QUICKSTART), "--set", "resources.gpus_per_worker=1", "--results", str(tmp_path / "gpu")],
        "restart": ["run", str(QUICKSTART), "--restart", "--results", str(results)],
    }
    env = {"CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    processes = {name: subprocess.Popen([sys.executable, "-m", "ncstudy", *args], cwd=tmp_path, text=True,
                                        env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, args in commands.items()}  # fmt: skip
    for name, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, (name, out, err)
        assert "ray:" not in out and "Traceback" not in err, (name, out, err)
        assert len(err.splitlines()) == 1, (name, err)
    assert not (tmp_path / "gpu").exists()
    assert sorted(p.name for p in (results / "quickstart").iterdir()) == ["precious.txt"]  # no .lock


def test_no_study_named_lists_what_the_folder_holds_and_points_at_results(tmp_path, capsys):
    results = tmp_path / "runs"
    for name in ("alpha", "beta"):
        (results / name).mkdir(parents=True)
        (results / name / "study.yaml").write_text(f"name: {name}\n")
    assert main(["resume", "gamma", "--results", str(results)]) == 2
    (line,) = error_lines(capsys)
    assert "no study named 'gamma'" in line and "alpha, beta" in line and "--results" in line

    assert main(["report", "alpha", "--results", str(results / "alpha")]) == 2  # the study folder itself given
    (line,) = error_lines(capsys)
    assert f"pass --results {results.resolve()}" in line


def test_printed_commands_carry_results_unless_it_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ncstudy_command("resume", "cifar_lt", Path("results")) == "python -m ncstudy resume cifar_lt"
    elsewhere = tmp_path / "my runs"
    command = ncstudy_command("resume", "cifar_lt", elsewhere)
    assert shlex.split(command) == ["python", "-m", "ncstudy", "resume", "cifar_lt", "--results", str(elsewhere)]


def test_an_existing_study_s_refusal_prints_a_resume_command_with_results(tmp_path):
    """A finished study's folder, run again: the hint is a command that names where the study is."""
    results = tmp_path / "elsewhere"
    folder = results / "quickstart"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text("name: quickstart\n")
    (folder / "state.json").write_text('{"state": "finished"}')
    done = run_cli("run", str(QUICKSTART), "--results", str(results), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"python -m ncstudy resume quickstart --results {results.resolve()}" in done.stderr
    assert "ray:" not in done.stdout


@pytest.mark.parametrize("command", ["validate", "data"])
def test_smoke_says_what_it_changed_in_one_line(command, capsys):
    args = ["data", "describe"] if command == "data" else ["validate"]
    assert main([*args, str(QUICKSTART), "--smoke"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.startswith("smoke:")]
    assert len(lines) == 1 and "quickstart-smoke, a smaller copy of quickstart" in lines[0]
    assert "train.epochs 12 -> 4" in lines[0]
