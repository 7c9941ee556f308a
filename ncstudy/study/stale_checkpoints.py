"""Before `resume`: give each trial back the checkpoint Tune's saved experiment state names.

Tune keeps one checkpoint per single-worker trial (`CheckpointConfig(num_to_keep=1)`): when a trial
reports checkpoint_000001 the driver deletes checkpoint_000000 at once, but writes its experiment
state (experiment_state-*.json, which names each trial's latest checkpoint) only every few seconds.
A driver killed in between leaves a state that names a checkpoint no longer on disk, and
`Tuner.restore` then fails that trial: "Could not recover from checkpoint as it does not exist on
storage anymore" (seen in CI's driver-kill test). The trial's newer checkpoint is there, so it is
moved to the name the state expects: the trial resumes from its newest epoch (its checkpoint carries
its epoch and reports, ncstudy.engine.state), and Tune's next checkpoint index, also from the state,
is free again.

The state's format is Ray Tune's (2.x): `trial_data` holds per trial its JSON state (with
`relative_logdir`, the trial's folder) and its runtime metadata, whose `checkpoint_manager` is a
cloudpickle, as hex, that holds the checkpoint's path; the name `checkpoint_NNNNNN` is read from
those bytes rather than unpickled, so nothing here depends on Ray's classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CHECKPOINT_NAME = re.compile(rb"checkpoint_\d{6}")


def restore_named_checkpoints(experiment: Path) -> list[str]:
    """Move each trial's newest checkpoint to the name the newest experiment state gives it, where
    that one is missing; returns a line per trial so repaired (none when the state is consistent)."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return []
    repaired = []
    for folder, named in named_checkpoints(states[-1]):
        wanted = experiment / folder / named
        present = sorted((experiment / folder).glob("checkpoint_[0-9]*"))
        newer = [path for path in present if path.name > named]
        if wanted.exists() or not newer:
            continue
        newer[-1].rename(wanted)
        repaired.append(f"{folder}: the saved state names {named}, which Tune had already replaced; it resumes from {newer[-1].name}")
    return repaired


def named_checkpoints(state_file: Path) -> list[tuple[str, str]]:
    """(trial folder, checkpoint name) for each trial with a checkpoint in the experiment state."""
    named = []
    for trial_json, metadata_json in json.loads(state_file.read_text())["trial_data"]:
        trial, metadata = _json(trial_json), _json(metadata_json)
        manager = _json(metadata.get("checkpoint_manager") or {})
        names = CHECKPOINT_NAME.findall(bytes.fromhex(manager.get("value", "")))
        if names and trial.get("relative_logdir"):
            named.append((trial["relative_logdir"], max(names).decode()))
    return named


def _json(value: str | dict) -> dict:
    return json.loads(value) if isinstance(value, str) else value
