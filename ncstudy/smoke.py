"""`--smoke`: a study as a smaller copy of itself, to try any shipped study on a laptop in minutes.

The copy keeps what the study's rows mean and shrinks what only costs time:

- epochs: at most SMOKE_EPOCHS, and every epoch-indexed setting scaled in proportion (warm-up,
  milestones, DRW's epoch, the regularizers' start, cRT's epochs, ASHA's grace period; NC measured
  every half of the run, so twice), wherever it is set: the base config, the search space, the variants, the strata. A point
  that was before the last epoch stays before it, and one that was not 0 stays above 0, so a
  "DRW" row still switches DRW on and a "+ L_B @100" row still starts L_B late (ncstudy.terms
  refuses rows that would not);
- data: the largest class at most SMOKE_N_MAX training images (the long-tailed profile kept;
  frequency thresholds scaled with it where the full size is known), validation and test images
  capped at SMOKE_EVAL_PER_CLASS per class, file-list images at most SMOKE_IMAGE_SIZE pixels;
- configurations: at most SMOKE_SAMPLES for optuna and random searches, one per stratum where
  strata split the search, the first training seed only; every variant and every stratum is kept
  (each row of the study still runs);
- resources, when Ray would be local (ncstudy.machine): no GPU asked for where none is visible,
  at most as many workers as cores and one CPU each, trials at once fitted to the cores, and
  without a GPU no torch.compile and no DataLoader processes for a file list.

The copy is named NAME-smoke, so its folder and MLflow experiment never mix with the full study's.
`--set` applies after `--smoke`. What changed is returned as (old, new) pairs, printed as one line
and recorded in the study folder (smoke.json).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ncstudy.config import NAME_MAX_LENGTH, get_dotted, set_dotted
from ncstudy.machine import cluster_address, local_cpus, local_gpus

SMOKE_EPOCHS = 4
SMOKE_N_MAX = 100
SMOKE_EVAL_PER_CLASS = 20
SMOKE_SAMPLES = 2
SMOKE_IMAGE_SIZE = 64
SUFFIX = "-smoke"
SMOKE_FILE = "smoke.json"

# Epoch-indexed settings. A point is an epoch (or a count of epochs from the start) before which
# something differs; a period repeats or lasts that many epochs and stays at least 1 when set.
EPOCH_POINTS = ("train.warmup_epochs", "loss.drw_epoch", "regularizer.start_epoch")
EPOCH_LISTS = ("train.milestones",)
EPOCH_PERIODS = ("metrics.every", "train.crt_epochs", "search.asha.grace_period")
# The pool of the largest class where a source's is fixed (n_max None means this many).
KNOWN_POOLS = {"cifar10": 5000, "cifar100": 500}

Changes = dict[str, tuple[Any, Any]]


class EpochScale:
    """Maps the full study's epochs onto the copy's: e -> round(e * new / old), with a point before
    the last epoch kept before it and a non-zero value kept non-zero."""

    def __init__(self, old_epochs: int, new_epochs: int):
        self.old, self.new = old_epochs, new_epochs

    def point(self, epoch: int) -> int:
        """An epoch at or past the end (a switch that never acts) stays as it is: past the end still."""
        if self.old == self.new or epoch == 0 or epoch >= self.old:
            return epoch
        return min(max(1, round(epoch * self.new / self.old)), self.new - 1)

    def period(self, epochs: int) -> int:
        return epochs if self.old == self.new or epochs == 0 else max(1, round(epochs * self.new / self.old))

    def points(self, epochs: list[int]) -> list[int]:
        return sorted(set(self.point(e) for e in epochs))

    def value(self, key: str, value: Any) -> Any:
        """`value` of setting `key` scaled, if `key` is epoch-indexed (else unchanged)."""
        if isinstance(value, bool) or value is None:
            return value
        if key in EPOCH_LISTS and isinstance(value, list):
            return self.points([int(v) for v in value])
        if key in EPOCH_POINTS and isinstance(value, int):
            return self.point(value)
        if key in EPOCH_PERIODS and isinstance(value, int):
            return self.period(value)
        if key == "train.epochs" and isinstance(value, int):
            return min(value, SMOKE_EPOCHS)
        return value


def smoke_tree(tree: dict) -> Changes:
    """Shrink `tree` (a validated study's `model_dump(mode="json")`, every setting spelled out) in
    place into its smoke copy (module docstring); returns {setting: (old, new)} of what changed."""
    before = copy.deepcopy(tree)
    epochs = tree["train"]["epochs"]
    scale = EpochScale(epochs, min(epochs, SMOKE_EPOCHS))
    tree["name"] = smoke_name(tree["name"])
    if tree["tracking"].get("experiment"):
        tree["tracking"]["experiment"] = smoke_name(tree["tracking"]["experiment"])
    _scale_epochs(tree, scale)
    _shrink_data(tree["data"])
    _shrink_search(tree["search"], scale)
    _fit_resources(tree)
    return _differences(before, tree)


def smoke_name(name: str) -> str:
    if name.endswith(SUFFIX):
        return name
    return name[: NAME_MAX_LENGTH - len(SUFFIX)] + SUFFIX


def _scale_epochs(tree: dict, scale: EpochScale) -> None:
    """The epochs and every epoch-indexed setting; NC and test accuracy measured at least twice but
    not every epoch (a measurement passes over the training and test images: in a 4-epoch copy it
    would cost as much as the training)."""
    tree["train"]["epochs"] = scale.new
    for key in (*EPOCH_POINTS, *EPOCH_LISTS, *EPOCH_PERIODS):
        try:
            value = get_dotted(tree, key)
        except KeyError:  # search.asha is null
            continue
        set_dotted(tree, key, scale.value(key, value))
    if tree["metrics"]["every"] and scale.new != scale.old:
        tree["metrics"]["every"] = max(tree["metrics"]["every"], scale.new // 2)


def _shrink_data(data: dict) -> None:
    """Fewer images per class, the profile's shape kept (ncstudy.data.build applies n_max to file
    lists too); the frequency thresholds shrink with the largest class where its full size is known."""
    if data["dataset"] == "digits":  # 10 classes of at most 180 images: already small
        return
    full = data["imbalance"]["n_max"] or KNOWN_POOLS.get(data["dataset"])
    n_max = min(full or SMOKE_N_MAX, SMOKE_N_MAX)
    data["imbalance"]["n_max"] = n_max
    split = data["shot_split"]
    if full and n_max < full and split["rule"] == "threshold":
        split["many_gt"] = max(1, math.floor(split["many_gt"] * n_max / full))
        split["few_lt"] = max(1, math.ceil(split["few_lt"] * n_max / full))
    data["eval_per_class"] = min(data["eval_per_class"] or SMOKE_EVAL_PER_CLASS, SMOKE_EVAL_PER_CLASS)
    data["val_per_class"] = min(data["val_per_class"], SMOKE_EVAL_PER_CLASS)
    if data["dataset"] == "filelist":
        data["image_size"] = min(data["image_size"], SMOKE_IMAGE_SIZE)


def _shrink_search(search: dict, scale: EpochScale) -> None:
    if search["algorithm"] != "grid":  # strata multiply the configurations already: one in each
        split = search["strata"] or search.get("split_by_variant")  # one configuration per search
        search["num_samples"] = min(search["num_samples"], 1 if split else SMOKE_SAMPLES)
    if search["seeds"]:
        search["seeds"] = search["seeds"][:1]
    for key, entry in search["space"].items():
        if "values" in entry:
            entry["values"] = _unique([scale.value(key, v) for v in entry["values"]])
        elif key in (*EPOCH_POINTS, *EPOCH_PERIODS, "train.epochs"):  # an int range of epochs
            low, high = scale.value(key, entry["low"]), scale.value(key, entry["high"])
            entry.update(low=low, high=max(high, low + 1))
        if entry.get("when"):
            entry["when"] = {k: scale.value(k, v) for k, v in entry["when"].items()}
    for bundle in search["variants"].values():
        bundle.update({key: scale.value(key, value) for key, value in bundle.items()})
    for key, values in search["strata"].items():
        search["strata"][key] = _unique([scale.value(key, v) for v in values])


def _unique(values: list[Any]) -> list[Any]:
    kept: list[Any] = []
    for value in values:
        if value not in kept:
            kept.append(value)
    return kept


def _fit_resources(tree: dict) -> None:
    """Resources of this machine, when the run would start a local Ray (a cluster keeps its own)."""
    res = tree["resources"]
    if cluster_address(res["address"]):
        return
    cpus = local_cpus()
    if res["gpus_per_worker"] and not local_gpus():
        res["gpus_per_worker"] = 0.0
    if not res["gpus_per_worker"]:
        tree["train"]["compile"] = "none"
        if tree["data"]["dataset"] == "filelist":  # DataLoader processes decode a file list's images
            tree["data"]["loader_workers"] = 0
    res["num_workers"] = min(res["num_workers"], cpus)
    # One CPU a worker at most: a smoke copy's small model and batches use a core better beside
    # another trial than as a second thread of one.
    res["cpus_per_worker"] = min(res["cpus_per_worker"], cpus / res["num_workers"], 1.0)
    per_trial = res["num_workers"] * res["cpus_per_worker"]
    tree["search"]["max_concurrent"] = max(1, min(tree["search"]["max_concurrent"], int(cpus / per_trial + 1e-9)))


def _differences(before: Any, after: Any, at: str = "") -> Changes:
    """{dotted setting: (old, new)} where `after` differs from `before`; space entries, variants
    and strata are compared whole (their keys are dotted names themselves)."""
    if isinstance(before, dict) and isinstance(after, dict) and at not in ("search.space", "search.variants", "search.strata"):
        found: Changes = {}
        for key in after:
            found.update(_differences(before.get(key), after[key], f"{at}.{key}" if at else key))
        return found
    if isinstance(before, dict) and isinstance(after, dict):
        return {f"{at}.{key}": (before.get(key), value) for key, value in after.items() if before.get(key) != value}
    return {} if before == after else {at: (before, after)}


def describe(of: str, changes: Changes) -> str:
    """One line: `smoke: cifar_lt-smoke, a smaller copy of cifar_lt: train.epochs 200 -> 4, ...`."""
    name = changes.get("name", (of, of))[1]
    listed = ", ".join(f"{key} {_short(old)} -> {_short(new)}" for key, (old, new) in changes.items() if key != "name")
    return f"smoke: {name}, a smaller copy of {of}: {listed or 'nothing else to shrink'}"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items() if k != "type") + "}"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value) if value is not None else "null"
