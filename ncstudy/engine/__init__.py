"""The Ray-free training engine: one trial's model, centres, losses and optimizers built from a
StudyConfig, its epochs run one by one, each handed to a callback with its metrics and checkpoint
state (docs/design.md, "The engine"). It imports neither Ray, nor MLflow, nor matplotlib: the Ray
Train worker (ncstudy.study.train_worker), and `python -m ncstudy train` compose it."""
