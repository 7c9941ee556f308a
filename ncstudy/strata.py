"""The strata of a study (`search.strata`): the combinations of fixed values that split a study into
independent searches, e.g. one per imbalance ratio (and per variant, with search.split_by_variant),
and the names they go by (Optuna studies, file names, trial columns). Light on purpose: the search
(ncstudy.study.search) and the report (ncstudy.outputs.report) both name strata the same way, and
the report does not import the search.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from ncstudy.config import StudyConfig


def strata(study: StudyConfig) -> list[dict[str, Any]]:
    """The study's strata, each a {setting: value} mapping: the cartesian product of search.strata
    in the order written (the first key varies slowest); one empty stratum when there are none."""
    keys = list(study.search.strata)
    return [dict(zip(keys, values)) for values in itertools.product(*study.search.strata.values())]


def searches(study: StudyConfig) -> list[dict[str, Any]]:
    """The study's independent searches, each the fixed values it adds to its trials: one per
    stratum, and with search.split_by_variant one per stratum and variant (`{..., "variant": NAME}`),
    so that each variant is searched with the same budget by a sampler of its own."""
    if not study.search.split_by_variant:
        return strata(study)
    return [{**stratum, "variant": variant} for stratum in strata(study) for variant in study.search.variants]


def stratum_label(stratum: dict[str, Any]) -> str:
    """`data.imbalance.ratio=10` (several keys joined by commas); empty for the empty stratum."""
    return ",".join(f"{key}={value}" for key, value in stratum.items())


def stratum_slug(stratum: dict[str, Any]) -> str:
    """A short name for file names: `ratio=10`, `ratio=10_name=ce`."""
    text = "_".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in stratum.items())
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", text)


def optuna_study_names(study: StudyConfig) -> list[str]:
    """The Optuna studies of the search in the study's Optuna storage: the study's name, or one per
    search (`searches`), `NAME[data.imbalance.ratio=10]`, `NAME[variant=LA]`, in the order of `searches`."""
    if not study.search.strata and not study.search.split_by_variant:
        return [study.name]
    return [f"{study.name}[{stratum_label(search)}]" for search in searches(study)]


def strata_columns(study: StudyConfig) -> list[str]:
    """The trial-table columns that hold a trial's stratum (`param.data.imbalance.ratio`)."""
    return [f"param.{key}" for key in study.search.strata]
