"""Names of the files inside a trial's checkpoint, shared by the worker that writes them and by the
MLflow callback and the report that read them. A module of its own so that the readers do not import
the training code (and torch's model stack) to learn three names."""

CHECKPOINT_FILE = "checkpoint.pt"  # model, centres, optimizers, NC history, next epoch
FIGURES = "figures"  # the final checkpoint's PNGs; the MLflow callback logs them as artifacts
COLLAPSE_FILE = "collapse.npz"  # the final checkpoint's per-class test accuracy, norms and angles
