"""Ray: the study driver (driver: Tune + Optuna), a trial's function (trial) and its two paths, inside
the Tune trial actor (in_trial) or Ray Train workers for DDP (train_worker); the search space and
samplers (search), the cluster (cluster), MLflow tracking (tracking), live progress (progress) and
Ctrl-C handling (interrupt). It composes the rest of ncstudy; nothing below it imports it."""
