"""Faults a user meets before any trial runs (docs/reliability.md, "Faults of real machines"): each is
one line and exit status 2 before Ray starts, naming the file, folder or address and the way out,
and writes nothing. Read-only and full disks are real mounts (tmpfs; skipped where mounting is not
allowed). The faults that need a running study are in tests/test_faults.py and
tests/test_interrupt.py (slow)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncstudy.cli import main
from ncstudy.config import dump_yaml
from ncstudy.outputs.results import write_text
from ncstudy.outputs.study_folder import study_paths, write_state
from ncstudy.outputs.study_record import write_record
from ncstudy.study_file import load_study, read_study, refuse_searched_overrides

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.yaml"


def fingerprints(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def interrupted_study(results: Path, name: str = "quickstart", *overrides: str) -> Path:
    """A study folder as `run` leaves it when interrupted before its search saved anything."""
    study = load_study(QUICKSTART, [f"name={name}", *overrides])
    paths = study_paths(results, name)
    paths.folder.mkdir(parents=True)
    write_text(dump_yaml(study), paths.config_file)
    write_record(paths, study.model_dump(mode="json"))
    write_state(paths, "interrupted")
    return paths.folder


def test_an_unreachable_ray_address_is_one_line_before_the_data_is_read(tmp_path):
    """In a process of its own, as a user meets it (this test process may run a Ray of its own)."""
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "ncstudy", "run", str(QUICKSTART), "--results", str(tmp_path / "results")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: RAY_ADDRESS=127.0.0.1:1: no Ray cluster answers there"), line
    assert "ray start --head" in line and "`local`" in line
    assert not (tmp_path / "results").exists()


def test_a_corrupt_optuna_store_is_named_with_the_way_out_and_nothing_is_touched(tmp_path, capsys):
    folder = interrupted_study(tmp_path / "results")
    (folder / "optuna.db").write_bytes(b"SQLite format 3\0" + os.urandom(3000))
    before = fingerprints(tmp_path / "results")
    assert main(["resume", "quickstart", "--results", str(tmp_path / "results")]) == 2
    line = one_error(capsys)
    assert f"{folder / 'optuna.db'}: unreadable" in line and "--restart" in line and "backup" in line
    assert fingerprints(tmp_path / "results") == before


def test_a_corrupt_tune_state_is_named_too(tmp_path, capsys):
    folder = interrupted_study(tmp_path / "results")
    state = folder / "ray" / "tune" / "experiment_state-2026-12-06_08-00-00.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"trial_data": [')
    assert main(["resume", "quickstart", "--results", str(tmp_path / "results")]) == 2
    assert f"{state}: unreadable" in one_error(capsys)


def test_an_edited_study_record_is_refused_naming_what_changed(tmp_path, capsys):
    folder = interrupted_study(tmp_path / "results")
    saved = folder / "study.yaml"
    saved.write_text(saved.read_text().replace("epochs: 12", "epochs: 50"))
    before = fingerprints(tmp_path / "results")
    assert main(["resume", "quickstart", "--results", str(tmp_path / "results")]) == 2
    line = one_error(capsys)
    assert "edited after the study started (train.epochs: 12 -> 50)" in line and "--restart" in line
    assert fingerprints(tmp_path / "results") == before


def test_run_of_a_changed_study_file_says_what_differs(tmp_path, capsys):
    interrupted_study(tmp_path / "results")
    assert main(["run", str(QUICKSTART), "--set", "train.epochs=50", "--results", str(tmp_path / "results")]) == 2
    line = one_error(capsys)
    assert "differs from the saved study (train.epochs: 12 -> 50)" in line and "resume quickstart" in line


def test_a_set_of_a_searched_setting_is_refused_naming_the_search_entry(capsys):
    assert main(["validate", str(QUICKSTART), "--set", "regularizer.lambda_within=1000"]) == 2
    line = one_error(capsys)
    assert "search.space.regularizer.lambda_within" in line and "not used" in line
    # some variants only: the others use the value, so it is kept, with a note naming the variants
    ablation = ROOT / "studies" / "ablation_cifar10_lt_cpu.yaml"
    read = read_study(ablation, ["regularizer.lambda_within=0.5"])
    assert refuse_searched_overrides(read) == [
        "note: --set regularizer.lambda_within: variants '+ L_W', '+ L_W & L_B' set it (search.variants), "
        "so this value is not used there; change the variants instead"
    ]
    # `train` and `data describe` use the base config: there a --set is how to pick one value
    assert main(["data", "describe", str(QUICKSTART), "--set", "data.imbalance.ratio=50"]) == 0


def test_a_read_only_results_folder_is_refused_before_ray(mount, capsys):
    results = mount(1, read_only=True)
    assert main(["run", str(QUICKSTART), "--results", str(results)]) == 2
    line = one_error(capsys)
    assert f"--results {results}" in line and "Read-only file system" in line


def test_report_on_a_read_only_folder_is_one_line(mount, tmp_path, capsys):
    results = mount(4)
    interrupted_study(results)
    subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
    assert main(["report", "quickstart", "--results", str(results)]) == 2
    line = one_error(capsys)
    assert "Read-only file system" in line and "copy the folder" in line


def test_a_full_disk_is_refused_up_front(mount, capsys):
    results = mount(4)
    assert main(["run", str(QUICKSTART), "--results", str(results)]) == 2
    line = one_error(capsys)
    assert "MB free" in line and f"--results {results}" in line
    assert not any(results.iterdir())
