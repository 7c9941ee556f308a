"""A copied or moved study folder resumes into itself, never into the folder it was copied from.

Users copy results folders all the time (rsync from a cluster, a backup, a new disk). Three stores
kept the old place as an absolute path, so a resume of a copy wrote into the original (and a moved
folder could not resume at all):

- Ray Tune's saved search state (search_gen_state-*.json, basic-variant-state-*.json in the Tune
  experiment folder) pickles the `Experiment`, whose `StorageContext` names the old storage path.
  `Tuner.restore(path)` points the trials it restores at the new path
  (ray.tune.execution.tune_controller.TuneController._restore_trials) but not the experiment the
  search generator keeps, so every trial created after the resume was written under the old path.
  `repoint_tune_search_state` gives those storage contexts the new path, as Tune does for trials.
- The Optuna storage: ncstudy.study.search.StudyOptunaStorage pickles no path at all.
- MLflow's sqlite store (the default one, RESULTS/mlflow.db) keeps each experiment's artifact
  location and each run's artifact URI as absolute file URIs, and has no API to change them:
  `repoint_mlflow_artifacts` rewrites the old results folder's prefix in those two columns.

record.json (ncstudy.outputs.study_record) holds where the folder was when the study started; a
driver finding it elsewhere repoints the stores first, says so, and records the new place.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from ray import cloudpickle
from ray.train._internal.storage import StorageContext

from ncstudy.atomic import replaced_atomically
from ncstudy.outputs.study_folder import StudyPaths
from ncstudy.outputs.study_record import moved_from, note_new_place

# Tune's saved search-generator states (ray.tune.search.search_generator / basic_variant: CKPT_FILE_TMPL)
SEARCH_STATE_FILES = ("search_gen_state-*.json", "basic-variant-state-*.json")


def relocate(paths: StudyPaths, default_store: bool) -> str | None:
    """Point every store of a copied or moved study folder at where it is now; returns the line to
    print, or None when the folder is where its study started. `default_store`: the study tracks to
    RESULTS/mlflow.db (no tracking.uri), whose artifact paths move with it."""
    old_folder = moved_from(paths)
    if old_folder is None:
        return None
    repoint_tune_search_state(paths.tune_experiment, paths.ray_storage.resolve())
    if default_store:
        repoint_mlflow_artifacts(paths.results / "mlflow.db", old_folder.parent / "mlartifacts", paths.results / "mlartifacts")
    note_new_place(paths)
    return f"note: this study folder was started at {old_folder}; it continues here, in {paths.folder}, and writes nothing there"


def repoint_tune_search_state(experiment: Path, ray_storage: Path) -> int:
    """Give every storage context in Tune's saved search state the storage path `ray_storage`;
    returns how many pointed elsewhere. Files are rewritten atomically, and only when changed."""
    changed = 0
    for pattern in SEARCH_STATE_FILES:
        for file in experiment.glob(pattern):
            state = cloudpickle.loads(file.read_bytes())
            found = _repoint(state, ray_storage.as_posix(), set())
            if found:
                with replaced_atomically(file) as temporary:
                    temporary.write_bytes(cloudpickle.dumps(state))
                changed += found
    return changed


def _repoint(node: object, storage_path: str, seen: set[int]) -> int:
    """Walk dicts, sequences and Ray's own objects (an Experiment, its spec, a trial iterator) for
    StorageContexts; set their storage path."""
    if id(node) in seen:
        return 0
    seen.add(id(node))
    if isinstance(node, StorageContext):
        if node.storage_fs_path == storage_path:
            return 0
        node.storage_fs_path = storage_path
        return 1
    if isinstance(node, dict):
        children = list(node.values())
    elif isinstance(node, (list, tuple, set, frozenset)):
        children = list(node)
    elif type(node).__module__.startswith("ray.") and hasattr(node, "__dict__"):
        children = list(vars(node).values())
    else:
        return 0
    return sum(_repoint(child, storage_path, seen) for child in children)


def repoint_mlflow_artifacts(database: Path, old_root: Path, new_root: Path) -> int:
    """In MLflow's sqlite store, artifact locations under `old_root` move under `new_root` (the
    experiments' artifact_location and the runs' artifact_uri, MLflow's only two path columns of
    runs and experiments); returns the rows changed. The artifact files were copied with the folder."""
    if not database.exists():
        return 0
    old, new = old_root.resolve().as_uri(), new_root.resolve().as_uri()
    columns = {"experiments": "artifact_location", "runs": "artifact_uri"}
    changed = 0
    with closing(sqlite3.connect(database)) as connection, connection:
        for table, column in columns.items():
            changed += connection.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                (new, len(old) + 1, old, _like_prefix(old + "/")),
            ).rowcount
    return changed


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with `text`."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
