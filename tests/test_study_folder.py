"""The study folder's safety rules without Ray: the driver's lock (a second driver refused, a dead
one's lock taken over), --restart deleting only this study's folder, never a link, and names that
cannot leave --results; the tracking record relative to the results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ncstudy.config import check_study_name
from ncstudy.errors import StudyError
from ncstudy.outputs.study_folder import (
    StudyLock, clear_for_restart, is_unfinished, read_tracking, study_paths, write_state, write_tracking,
)  # fmt: skip

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ncstudy.outputs.study_folder import StudyLock
    with StudyLock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def hold_lock(folder: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_driver_is_refused_with_one_line_naming_the_holder(tmp_path):
    folder = tmp_path / "study"
    holder = hold_lock(folder, 30)
    try:
        with pytest.raises(StudyError, match=rf"another ncstudy driver \(pid {holder.pid} on .*is working on this study"):
            StudyLock.refuse_if_held(folder)
        with pytest.raises(StudyError, match="another ncstudy driver"):
            with StudyLock(folder):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_driver_is_taken_over_and_said(tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "study.yaml").write_text("name: study\n")
    holder = hold_lock(folder, 30)
    holder.kill()  # SIGKILL: no chance to release anything; its lock file still names it
    holder.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == holder.pid
    StudyLock.refuse_if_held(folder)
    with StudyLock(folder):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert f"took over the lock of process {holder.pid}" in capsys.readouterr().out
    assert (folder / ".lock").read_text() == ""


def test_a_folder_the_lock_created_and_nothing_else_filled_is_removed_again(tmp_path):
    with StudyLock(tmp_path / "new"):
        pass
    assert not (tmp_path / "new").exists()


def test_restart_deletes_only_a_folder_whose_study_yaml_names_the_study(tmp_path):
    paths = study_paths(tmp_path, "mine")
    paths.folder.mkdir()
    (paths.folder / "precious.txt").write_text("not a study")
    with pytest.raises(StudyError, match="holds no study named 'mine'"):
        clear_for_restart(paths)
    (paths.folder / "study.yaml").write_text("name: other\n")
    with pytest.raises(StudyError, match="holds no study named 'mine'"):
        clear_for_restart(paths)
    assert (paths.folder / "precious.txt").exists()

    (paths.folder / "study.yaml").write_text("name: mine\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (paths.folder / "link").symlink_to(outside)
    (paths.folder / "ray").mkdir()
    clear_for_restart(paths)
    assert list(paths.folder.iterdir()) == [] and (outside / "keep.txt").exists()


def test_a_study_folder_that_is_a_link_or_a_results_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "linked").symlink_to(target)
    with pytest.raises(StudyError, match="not a study folder"):
        study_paths(tmp_path / "results", "linked")
    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match="--results .*is a file, not a folder"):
        study_paths(tmp_path / "file", "x")


@pytest.mark.parametrize("name", ["../elsewhere/x", "/abs/path", "..", "a/b", "", "x" * 65, "name\n"])
def test_names_given_to_resume_and_report_never_leave_results(name):
    with pytest.raises(StudyError, match="a study name is"):
        check_study_name(name)


def test_report_and_resume_refuse_a_name_outside_results_with_exit_2(tmp_path, capsys):
    from ncstudy.cli import main

    for command in (["report", "../elsewhere/x"], ["resume", str(tmp_path / "abs")]):
        assert main([*command, "--results", str(tmp_path / "results")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "a study name is" in err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "results").exists()


def test_the_default_tracking_store_is_recorded_relative_to_the_results_folder(tmp_path):
    paths = study_paths(tmp_path / "results", "s")
    paths.folder.mkdir(parents=True)
    write_tracking(paths, "abc", None)
    assert str(tmp_path) not in paths.tracking_file.read_text()
    assert read_tracking(paths) == ("abc", None)
    write_tracking(paths, "abc", "http://10.0.0.1:5000")
    assert read_tracking(paths) == ("abc", "http://10.0.0.1:5000")


def test_a_corrupt_tracking_record_is_one_line_not_a_traceback(tmp_path):
    paths = study_paths(tmp_path, "s")
    paths.folder.mkdir()
    for content in ("{not json", '{"tracking_uri": null}', "[1, 2]", "\xff"):
        paths.tracking_file.write_text(content)
        with pytest.raises(StudyError, match="tracking.json: unreadable .*--restart"):
            read_tracking(paths)


def test_a_study_is_unfinished_until_a_driver_wrote_finished(tmp_path):
    paths = study_paths(tmp_path, "s")
    paths.folder.mkdir()
    assert not is_unfinished(paths)
    paths.config_file.write_text("name: s\n")
    assert is_unfinished(paths)  # interrupted before the search started
    write_state(paths, "interrupted")
    assert is_unfinished(paths)
    write_state(paths, "finished", planned=2, finished=2, failed=0)
    assert not is_unfinished(paths)


def test_a_second_run_of_a_study_in_use_exits_2_before_ray_starts(tmp_path, capsys):
    from ncstudy.cli import main

    quickstart = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
    holder = hold_lock(tmp_path / "results" / "quickstart", 30)
    try:
        for command in (["run", str(quickstart)], ["resume", "quickstart"]):
            if command[0] == "resume":
                (tmp_path / "results" / "quickstart" / "study.yaml").write_text(quickstart.read_text())
            assert main([*command, "--results", str(tmp_path / "results")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"another ncstudy driver (pid {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (tmp_path / "results" / "quickstart").iterdir()) == [".lock", "study.yaml"]
