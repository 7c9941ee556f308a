"""ncstudy: hyperparameter studies of the neural-collapse regularizers of Liu et al., "Inducing Neural
Collapse in Deep Long-tailed Learning" (AISTATS 2023, arXiv 2302.12453), on Ray Tune + Optuna + Ray
Train + MLflow."""

__version__ = "0.1.0"
