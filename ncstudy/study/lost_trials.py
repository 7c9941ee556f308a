"""Before `resume`: a trial whose process was lost (or that could not write) continues; a trial that
raised stays failed.

A trial's process can die under it: kill -9, the kernel's OOM killer, a node the autoscaler or the
cloud took away. With `resources.max_failures: 0` Tune ends such a trial ERROR, as it ends a trial
whose code raised (a diverged loss), and `Tuner.restore(resume_errored=False)` keeps both failed.
The first is the machine's fault, not the configuration's: `resume` continues it from its last
checkpoint (docs/reliability.md, "A lost trial process"). Tune's restore cannot tell the two apart,
so the trial's saved status is set back to RUNNING here, before the restore, which then continues
it like an interrupted trial; Tune's saved state sometimes already has it RUNNING (a process lost
while its checkpoint was being saved). The driver's Tune callback ReportLog records each failure
and its cause (ncstudy.outputs.failures), which decides.

The experiment state's format is Ray Tune's (2.x), as in ncstudy.study.stale_checkpoints: per trial
a JSON state, with `trial_id` and `status`, and its runtime metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

from ncstudy.outputs.failures import recorded_failure
from ncstudy.outputs.results import write_text


def requeue_lost_trials(experiment: Path) -> list[str]:
    """Give each ERROR trial of the newest experiment state whose process was lost the status
    RUNNING; returns a line per trial requeued."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return []
    saved = json.loads(states[-1].read_text())
    requeued = []
    for pair in saved["trial_data"]:
        trial = json.loads(pair[0])
        failure = recorded_failure(experiment.parents[1], trial.get("trial_id", ""))
        if trial.get("status") != "ERROR" or failure is None or failure["cause"] == "raised":
            continue
        trial["status"] = "RUNNING"
        pair[0] = json.dumps(trial, indent=2)
        lost = "lost its process" if failure["cause"] == "lost_process" else "could not write"
        requeued.append(f"trial {trial['trial_id']} {lost} ({failure['error'][:120]}); it continues from its last checkpoint")
    if requeued:
        write_text(json.dumps(saved), states[-1])
    return requeued
