"""The Pareto-front part of a multi-objective study's report (search.objectives): the figure per
stratum and the report's section, with its reading of each variant's front against a baseline
variant. The fronts, their hypervolumes and the bootstrap are ncstudy.outputs.pareto's; the study's
trials and fronts come from ncstudy.outputs.report.StudyResults; docs/pareto.md says how to read
what is written here.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncstudy.outputs.commands import ncstudy_command
from ncstudy.outputs.figures import pareto_front
from ncstudy.outputs.formatting import value_text
from ncstudy.outputs.pareto import StratumFronts, on_test
from ncstudy.outputs.tables import to_markdown
from ncstudy.strata import stratum_label, stratum_slug

if TYPE_CHECKING:  # the report imports this module
    from ncstudy.outputs.report import StudyResults

AXIS_LABELS = {
    "test_acc_all": "test accuracy, all classes (%)", "test_acc_many": "test accuracy, many-shot classes (%)",
    "test_acc_medium": "test accuracy, medium-shot classes (%)", "test_acc_few": "test accuracy, few-shot classes (%)",
    "test_loss": "test loss",
}  # fmt: skip


def pareto_figures(study: StudyResults, folder: Path) -> list[Path]:
    """figures/pareto[_<stratum>].png per stratum (ncstudy.outputs.figures.pareto_front): every
    configuration's test means on the first two objectives' test counterparts (accuracies in
    percent), each variant's front in its colour."""
    objectives = list(study.config.search.objective_directions.items())[:2]
    columns = [on_test(name) for name, _ in objectives]
    scale = np.array([100.0 if "_acc_" in c else 1.0 for c in columns])
    maximize = [mode == "max" for _, mode in objectives]
    more = len(study.config.search.objective_directions) - 2
    written = []
    for (stratum, _), front in zip(study.stratum_rows(), study.fronts.values()):
        variants = {}
        for variant in front.variants:
            rows = front.of(variant)
            label = study.name if variant is None else str(variant)
            variants[label] = (rows[columns].to_numpy(dtype=float) * scale, rows["on_front"].to_numpy())
        title = ", ".join(f"{k.rsplit('.', 1)[-1]}={value_text(v)}" for k, v in stratum.items())
        if more:
            title += f"{'; ' if title else ''}the first two of {more + 2} objectives (the front is on all of them)"
        path = folder / f"pareto{'_' + stratum_slug(stratum) if stratum else ''}.png"
        written.append(pareto_front(variants, maximize, tuple(AXIS_LABELS.get(c, c) for c in columns), path, title or None))
    return written


def front_section(study: StudyResults, tables: dict, baseline: str | None, base: Any, fronts_only: bool) -> list[str]:
    """The fronts of a multi-objective study in report.md: the front table, the hypervolume table and,
    against the baseline variant `base` (what --baseline `baseline` names, or None), a sentence per
    stratum; `fronts_only`: --baseline names a variant of several configurations, which has no paired
    differences."""
    directions = study.config.search.objective_directions
    if "front" not in tables:
        return ["", "### Pareto front", "", f"No front: the trials have no column {', '.join(study.front_columns_missing)}."]
    per = "per stratum and variant" if study.strata else "per variant" if study.variant_column else ""
    tested = ", ".join(f"`{on_test(o)}`" for o in directions)
    drawn = " against ".join(f"`{on_test(o)}`" for o in list(directions)[:2][::-1])
    lines = ["", f"### Pareto front{' ' + per if per else ''}", "",
             "A configuration is on the front when no other configuration (of its variant, in its stratum) is at least "
             "as good on every objective and better on one, by the means over its seeds on the validation split, where the "
             "search measured them; ties are all on it. Its test accuracies are below (mean ± std over seeds), best first "
             f"by `{next(iter(directions))}`. `figures/pareto*.png` draws every configuration's {drawn} (test means), "
             "each front's configurations solid and joined by the outline of what they cover, the rest faint.",
             "", to_markdown(tables["front"]),
             "### Hypervolume of each front", "",
             f"The part of the objective space that a front covers, measured on the test set ({tested}) at the "
             "configurations the validation front selected: a larger hypervolume is a front further out. Read: docs/pareto.md.",
             "", to_markdown(tables["hypervolume"])]  # fmt: skip
    notes = _front_readings(study, baseline, base)
    if len(directions) > 2:
        notes.insert(0, f"The figures draw the first two objectives; the fronts and hypervolumes use all {len(directions)}.")
    if fronts_only:
        notes.append(f"`--baseline {baseline}` names a variant that ran several configurations, so there are no paired "
                     "differences (they need one baseline configuration): the fronts above compare the variants.")  # fmt: skip
    if not notes:
        lines[-1] = lines[-1].rstrip("\n")  # the next section starts with its own blank line
    return lines + [line for note in notes for line in (note, "")][:-1]


def _front_readings(study: StudyResults, baseline: str | None, base: Any) -> list[str]:
    """A sentence per stratum comparing each variant's front with the baseline variant's: "moves the
    front by" where the interval excludes 0, "within the seed spread" where it holds 0, and no
    judgement where one seed per configuration leaves no spread; without --baseline naming a variant,
    how to get them. A paragraph each."""
    column = study.variant_column
    variants = list(dict.fromkeys(study.finished[column])) if column else []
    if base is None:
        if len(variants) < 2:
            return []
        if baseline:
            return [f"`--baseline {baseline}` names no variant of this study ({', '.join(map(str, variants))}), so the "
                    "fronts are not compared: a front is a variant's."]  # fmt: skip
        command = f"{ncstudy_command('report', study.name, study.folder.parent)} --baseline {shlex.quote(str(variants[0]))}"
        return [f"`{command}` compares each variant's front with `{variants[0]}`'s."]
    lines = []
    for (stratum, _), front in zip(study.stratum_rows(), study.fronts.values()):
        where = f"In `{stratum_label(stratum)}`: " if stratum else ""
        if base not in front.variants:
            lines += [f"{where}`{base}` has no finished trial, so nothing is compared."]
            continue
        clauses = [_reading(front, variant, base) for variant in front.variants if variant != base]
        if clauses:
            lines += [f"{where}{'; '.join(clauses)}."]
    return lines


def _reading(front: StratumFronts, variant, base) -> str:
    """`+ L_W & L_B` moves the front by +2.1 [+0.4, +3.9] hypervolume points over `CE-DRW` (or its
    honest alternatives, `_front_readings`)."""
    difference, low, high = front.difference(variant, base)
    text = f"{difference:+.1f} [{low:+.1f}, {high:+.1f}] hypervolume points"
    one_seed = (front.of(variant)["n"] == 1).all() and (front.of(base)["n"] == 1).all()
    if one_seed:
        return (f"`{variant}` differs from `{base}` by {difference:+.1f} hypervolume points, with one seed per "
                "configuration: no seed spread to judge it by")  # fmt: skip
    if low > 0:
        return f"`{variant}` moves the front by {text} over `{base}`"
    if high < 0:
        return f"`{variant}` moves the front by {text} against `{base}` (it covers less)"
    return f"`{variant}` differs from `{base}` by {text}, within the seed spread"
