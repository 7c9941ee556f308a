"""Which terms of a trial's loss act, and from when: the refusal of settings that make a term inert,
and the compact recipe a report row states (docs/design.md, "What each setting means": "No inert rows").

A setting that leaves a term without any effect would let a table row train something other than its
name says, without an error. `refuse_inert_terms` raises ValueError (a one-line validation error that
names the keys and the fix) for:

- L_B on learnable centres with lambda_W = lambda_center = 0: L_B moves only the centres, nothing ties
  them to the features, so the network receives no gradient from it (the "+ L_B" row would train
  the base loss alone). EMA or batch centres are class means of the features and carry L_B's
  gradient into the network.
- a regularizer weight whose start epoch is not before the last epoch, and DRW whose epoch is not
  (with `before_start: frozen_centres` L_W still pulls towards the frozen centres; L_B is refused);
- a temperature with lambda_B = 0 (the soft-min is never computed);
- LDAM on a linear or a scaled cosine head (logits that are not cosines): LDAM multiplies the
  logits by its own s = 30, which assumes cosines (Cao et al., NeurIPS 2019: kaidic/LDAM-DRW's train
  scripts and the released NCfeature code set `use_norm = True if args.loss_type == 'LDAM'`, a
  NormedLinear classifier). A scaled cosine head's logits would be scaled twice, a linear head's
  unbounded ones 30-fold;
- `before_start: frozen_centres` without learnable centres (only those can be frozen).

The study is read by attribute only (a StudyConfig), so this module imports nothing of the schema.
"""

from __future__ import annotations

from typing import Any

LOSS_NAMES = {"ce": "CE", "focal": "focal", "ldam": "LDAM", "logit_adjusted": "LA", "balanced_softmax": "BS",
              "dot_regression": "DR"}  # fmt: skip


def refuse_inert_terms(study: Any) -> None:
    """Raise ValueError naming the keys when a setting makes a loss term inert (module docstring):
    every such setting at once, a line each, so a user fixes them in one go."""
    problems = inert_term_problems(study)
    if problems:
        raise ValueError("\n".join(problems))


def inert_term_problems(study: Any) -> list[str]:
    """One line per setting that makes a loss term inert, each starting with the key it refuses."""
    r, train, loss, model = study.regularizer, study.train, study.loss, study.model
    problems = []
    weighted = r.lambda_within > 0 or r.lambda_between > 0 or r.lambda_center > 0
    if r.centers == "learnable" and r.lambda_between > 0 and r.lambda_within == 0 and r.lambda_center == 0:
        problems.append(
            "regularizer: lambda_between > 0 with centers learnable and lambda_within = lambda_center = 0 trains "
            "the base loss alone (L_B then moves only the centres, no gradient reaches the network); set "
            "regularizer.centers: ema (class means of the features), or give lambda_within a weight"
        )
    if weighted and r.start_epoch >= train.epochs and r.before_start == "none":
        problems.append(
            f"regularizer.start_epoch: {r.start_epoch} is not before the last epoch (train.epochs {train.epochs}), "
            "so the regularizer never acts; lower start_epoch (0-based) or set its weights to 0"
        )
    if r.lambda_between > 0 and r.start_epoch >= train.epochs and r.before_start != "none":  # frozen: L_B only moves them
        problems.append(
            f"regularizer.start_epoch: {r.start_epoch} is not before the last epoch (train.epochs {train.epochs}), "
            "so L_B never acts (before start_epoch the centres are frozen); lower start_epoch or set lambda_between 0"
        )
    if r.temperature is not None and r.lambda_between == 0:
        problems.append(
            f"regularizer.temperature: {r.temperature} has no effect with lambda_between 0; set it to null"
        )
    if r.before_start == "frozen_centres" and r.centers != "learnable":
        problems.append(
            f"regularizer.before_start: frozen_centres needs centers learnable (centers {r.centers} are class means)"
        )
    if loss.reweight == "drw" and loss.drw_epoch >= train.epochs:
        problems.append(
            f"loss.drw_epoch: {loss.drw_epoch} is not before the last epoch (train.epochs {train.epochs}), so DRW "
            "never switches on; lower drw_epoch (0-based) or set loss.reweight: none"
        )
    if loss.name == "ldam" and model.head == "linear":
        problems.append(
            f"loss.name ldam scales the logits by loss.ldam_scale ({loss.ldam_scale:g}), which assumes cosines, and "
            "model.head linear's are unbounded; set model.head: cosine with model.head_scale: 1 (LDAM-DRW's "
            "normalized classifier)"
        )
    if loss.name == "ldam" and model.head == "cosine" and model.head_scale != 1:
        problems.append(
            f"loss.name ldam scales the logits by loss.ldam_scale ({loss.ldam_scale:g}) and model.head cosine "
            f"already scales them by model.head_scale ({model.head_scale:g}); set model.head_scale: 1"
        )
    return problems


def recipe_label(study: Any) -> str:
    """The active terms of one trial with their weights and start epochs, e.g.
    `CE, DRW@160 + L_W 0.01 + L_B 0.1 (T 0.5) @0, learnable centres; mixup 0.2 (both labels)`; the
    logit-adjusted loss states its tau and focal its gamma (at 0 both are plain CE). Epochs
    are the config's 0-based values (`start_epoch`, `drw_epoch`), written `@e`. `(both labels)` is
    `regularizer.mixup_labels: both` (a mixed image counts for both its labels in the terms), stated
    only where it acts: with mixup and an active term; the default (`dominant`) is not written."""
    r, train, loss = study.regularizer, study.train, study.loss
    base = LOSS_NAMES.get(loss.name, loss.name)
    if loss.name == "logit_adjusted":
        base += f" (tau {loss.tau:g})"
    elif loss.name == "focal":  # gamma 0 is plain CE: the label says which point of the family ran
        base += f" (gamma {loss.focal_gamma:g})"
    if loss.reweight == "drw":
        base += f", DRW@{loss.drw_epoch}"
    elif loss.reweight == "class_balanced":
        base += ", CB"
    parts = [base]
    if r.lambda_within > 0:
        parts.append(f"L_W {r.lambda_within:.3g}")
    if r.lambda_between > 0:
        parts.append(f"L_B {r.lambda_between:.3g}" + (f" (T {r.temperature:g})" if r.temperature is not None else ""))
    if r.lambda_center > 0:
        parts.append(f"centre loss {r.lambda_center:.3g}")
    text = " + ".join(parts)
    if len(parts) > 1:
        text += f" @{r.start_epoch}, {r.centers} centres"
        if r.before_start == "frozen_centres" and r.start_epoch > 0:
            text += ", frozen pull before"
    if train.mixup_alpha > 0:
        text += f"; mixup {train.mixup_alpha:g}"
        if r.mixup_labels == "both" and len(parts) > 1:
            text += " (both labels)"
    if train.crt_epochs:
        text += f"; cRT {train.crt_epochs}"
    return text
