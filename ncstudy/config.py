"""The study schema: YAML -> pydantic models (extra keys forbidden) -> `--set` overrides -> validation.

Reading a file (YAML, base files, `--set`, data paths) is ncstudy.study_file's job; `load_study`
is importable from here too.

One place for each setting: the objective's metric and mode live in `search` only. Search-space keys
are dotted paths into this schema (`regularizer.lambda_within`), and every value a space can produce
is validated like the file, so a bad range fails before Ray starts. Defaults follow the paper's
CIFAR-10-LT row (Liu et al., AISTATS 2023, Table 1) where one applies.

Bad input is refused here with one line naming the file and key (docs/cli.md, "Bad input"): text that
is not UTF-8, duplicate keys, non-finite numbers, overrides naming no setting, search values Optuna
cannot store, and conditions (`when`) that name no setting or can never hold.
"""

from __future__ import annotations

import itertools
import math
import re
from functools import partial
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator
from pydantic.fields import FieldInfo

from ncstudy.errors import StudyError, excerpt
from ncstudy.terms import refuse_inert_terms

OBJECTIVE_METRICS = ("val_acc_all", "val_acc_many", "val_acc_medium", "val_acc_few", "val_loss")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_MAX_LENGTH = 64
SCALARS = (type(None), bool, int, float, str)  # what a choice or grid value may be: Optuna stores these
SEED_SETTING = "train.seed"
VARIANT = "variant"  # the searched parameter that names a bundle of search.variants


class Strict(BaseModel):
    """Extra keys are refused, and so are infinite and NaN numbers (YAML `.inf`, `.nan`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ImbalanceConfig(Strict):
    ratio: float = Field(100.0, ge=1, description="n_max / n_min; 1 is the balanced set")
    profile: Literal["exp", "step"] = Field(
        "exp", description="class counts: exp = n_max * (1/ratio)^(i/(C-1)) (LDAM-DRW); step = two levels, n_max and n_max / ratio"
    )
    minority_fraction: float = Field(0.5, ge=0, le=1, description="step profile: share of minority classes")
    n_max: int | None = Field(
        None, ge=1, description="images of the largest class; null = the smallest class's pool (a file list: as listed; below it, every class shrinks in proportion)"
    )


class ShotSplitConfig(Strict):
    """How classes are grouped into many / medium / few shot (ncstudy.data.groups.frequency_groups)."""

    rule: Literal["threshold", "index_ranges", "quantile"] | None = Field(
        None, description="null = index_ranges for 10 classes (thresholds give CIFAR-10-LT 8/2/0), else threshold"
    )
    many_gt: int = Field(100, ge=0, description="threshold: many-shot has more than this many training images")
    few_lt: int = Field(20, ge=0, description="threshold: few-shot has fewer than this many")
    boundaries: tuple[int, int] = Field((3, 7), description="index_ranges: [0, a) many, [a, b) medium, [b, K) few")
    quantiles: tuple[float, float] = Field((1 / 3, 2 / 3), description="quantile: shares of classes, by count rank")

    @model_validator(mode="after")
    def _ordered(self) -> "ShotSplitConfig":
        if not 0 <= self.boundaries[0] <= self.boundaries[1]:
            raise ValueError("boundaries must satisfy 0 <= a <= b")
        if not 0 <= self.quantiles[0] <= self.quantiles[1] <= 1:
            raise ValueError("quantiles must satisfy 0 <= q1 <= q2 <= 1")
        return self


class DataConfig(Strict):
    dataset: Literal["digits", "cifar10", "cifar100", "parquet", "filelist"] = Field(
        "digits", description="the image source: scikit-learn's bundled digits, CIFAR, Parquet image tables, or file lists"
    )
    root: str | None = Field(
        None, description="cifar: torchvision root; parquet: folder of train/test.parquet; filelist: image root"
    )
    train_list: str | None = Field(None, description="filelist: 'path label' lines of the training set")
    val_list: str | None = Field(None, description="filelist: the validation list")
    test_list: str | None = Field(None, description="filelist: the test list")
    image_size: int = Field(224, ge=8, description="filelist: crop size")
    loader_workers: int = Field(4, ge=0, description="filelist: DataLoader worker processes per Train worker")
    download: bool = Field(False, description="cifar: download through torchvision when missing")
    cache_dir: str | None = Field(None, description="decoded-image cache; null = $NCSTUDY_CACHE or ~/.cache/ncstudy")
    imbalance: ImbalanceConfig = Field(ImbalanceConfig(), description="the long-tailed profile of the training set")
    test_per_class: int = Field(50, ge=1, description="digits: balanced test images held out per class")
    val_per_class: int = Field(20, ge=1, description="validation images per class, from pool images the subset left")
    eval_per_class: int | None = Field(
        None, ge=1, description="at most this many test images per class, and validation images of a file list (a seeded draw); null = all"
    )
    seed: int = Field(0, description="data seed: which images form the long-tailed subset")
    augment: bool | None = Field(None, description="random crop (pad 4) + flip; null = on for 32x32 colour images")
    sampler: Literal["instance", "class_balanced"] = Field(
        "instance", description="batch order: every image once per epoch, or classes drawn equally often"
    )
    shot_split: ShotSplitConfig = Field(ShotSplitConfig(), description="how classes are grouped into many / medium / few shot")

    @model_validator(mode="after")
    def _lists_for_filelist(self) -> "DataConfig":
        if self.dataset == "filelist":
            missing = [k for k in ("root", "train_list", "val_list", "test_list") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"dataset filelist needs {', '.join(missing)}")
        return self


ARCHS = ("digits_cnn", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50", "resnext50_32x4d")
LOSSES = ("ce", "focal", "ldam", "logit_adjusted", "balanced_softmax", "dot_regression")
WEIGHTED_LOSSES = ("ce", "focal", "ldam", "logit_adjusted")


class ModelConfig(Strict):
    arch: Literal[ARCHS] = Field("digits_cnn", description="the backbone (random init): a small CNN for digits, CIFAR ResNets, torchvision ResNets and ResNeXt")
    head: Literal["linear", "cosine", "etf"] = Field(
        "linear", description="the classifier: linear, cosine (scaled by head_scale) or a fixed simplex ETF"
    )
    head_scale: float = Field(16.0, gt=0, description="cosine head: logits = scale * cos")
    width: int = Field(32, ge=1, description="digits_cnn: channels of the first block")
    feature_dim: int = Field(64, ge=1, description="digits_cnn: dimension of the features h")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA")
    sync_batchnorm: bool = Field(
        True, description="multi-worker trials: BatchNorm statistics of the global batch (SyncBatchNorm on GPUs, GlobalBatchNorm on CPUs)"
    )


class LossConfig(Strict):
    name: Literal[LOSSES] = Field(
        "ce", description="the base loss: cross-entropy, focal, LDAM, logit-adjusted, Balanced Softmax, dot-regression (ETF head)"
    )
    focal_gamma: float = Field(1.0, ge=0, description="focal: the focusing exponent gamma (0 = cross-entropy)")
    ldam_max_margin: float = Field(0.5, gt=0, description="ldam: the margin of the rarest class (margins scale with n^-1/4)")
    ldam_scale: float = Field(30.0, gt=0, description="ldam: the scale s of the normalized logits")
    tau: float = Field(1.0, description="logit_adjusted: weight of log prior (a searchable temperature)")
    reweight: Literal["none", "class_balanced", "drw"] = Field(
        "none", description="class-balanced weights (Cui et al. 2019) from the start, or from drw_epoch (DRW)"
    )
    drw_epoch: int = Field(160, ge=0, description="reweight=drw: the epoch the weights switch on")
    cb_beta: float = Field(0.9999, ge=0, lt=1, description="class-balanced weights: beta of the effective number (1 - beta^n) / (1 - beta)")

    @model_validator(mode="after")
    def _weights_need_a_weighted_loss(self) -> "LossConfig":
        if self.reweight != "none" and self.name not in WEIGHTED_LOSSES:
            raise ValueError(f"reweight {self.reweight!r} needs one of {', '.join(WEIGHTED_LOSSES)}, not {self.name!r}")
        return self


class RegularizerConfig(Strict):
    lambda_within: float = Field(0.01, ge=0, description="weight lambda_W of L_W, the within-class (NC1) term; 0 = off")
    lambda_between: float = Field(0.1, ge=0, description="weight lambda_B of L_B, the between-class angle (NC2) term; 0 = off")
    lambda_center: float = Field(0.0, ge=0, description="centre loss (Wen et al. 2016), the ablation baseline")
    temperature: float | None = Field(None, gt=0, description="soft-min temperature of L_B; null = hard min")
    start_epoch: int = Field(0, ge=0, description="the epoch the regularizers start (0 = the first); must be before the last epoch")
    centers: Literal["learnable", "ema", "batch"] = Field(
        "learnable", description="class centres: learnable parameters with their own SGD (released code), EMA class means, or the batch's class means"
    )
    center_lr: float = Field(0.5, gt=0, description="learnable: SGD learning rate of the centres")
    ema_momentum: float = Field(0.9, ge=0, lt=1, description="ema: c <- m c + (1 - m) batch mean")
    before_start: Literal["none", "frozen_centres"] = Field(
        "none", description="before start_epoch: no regularizer, or the released code's L_W pull towards the frozen initial centres"
    )
    mixup_labels: Literal["dominant", "both"] = Field(
        "dominant", description="mixed samples in L_W and the class means: the larger share's label, or both weighted by lambda"
    )


class TrainConfig(Strict):
    epochs: int = Field(200, ge=1, description="epochs of the main stage (cRT epochs come after)")
    batch_size: int = Field(128, ge=1, description="images per batch per worker; the global batch is batch_size x num_workers")
    lr: float = Field(0.1, gt=0, description="SGD learning rate reached after the warm-up")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (main stage and cRT)")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay")
    warmup_epochs: int = Field(5, ge=0, description="epochs of linear learning-rate warm-up")
    schedule: Literal["multistep", "cosine"] = Field(
        "multistep", description="after the warm-up: x gamma at each milestone, or a cosine decay to 0 over the remaining epochs"
    )
    milestones: list[int] = Field(default_factory=lambda: [160, 180], description="multistep: the epochs at which the learning rate is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, description="multistep: the learning-rate factor at each milestone")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup (Zhang et al. 2018); 0 = off")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value; null = no clipping")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    compile: Literal["none", "default", "reduce-overhead"] = Field(
        "none", description="torch.compile mode of the training forward and backward (none = eager; a GPU gains, a CPU rarely)"
    )
    crt_epochs: int = Field(0, ge=0, description="cRT second stage (Kang et al. 2020): epochs; 0 = off")
    crt_lr: float = Field(0.1, gt=0, description="cRT: starting learning rate of the classifier (cosine decay over the stage)")
    seed: int = Field(0, description="training seed: initialization, batch order and augmentation")

    @property
    def total_epochs(self) -> int:
        """Every epoch a trial runs: the main stage, then cRT."""
        return self.epochs + self.crt_epochs


class _Param(Strict):
    when: dict[str, Any] | None = Field(
        None,
        description="conditional: sample only when these settings have these values (optuna, random); "
        "`variant: NAME` samples it in that variant of search.variants only",
    )


class LogUniform(_Param):
    type: Literal["loguniform"] = Field(description="a float drawn on a log scale")
    low: float = Field(gt=0, description="the smallest value")
    high: float = Field(gt=0, description="the largest value")


class Uniform(_Param):
    type: Literal["uniform"] = Field(description="a float drawn uniformly")
    low: float = Field(description="the smallest value")
    high: float = Field(description="the largest value")


class IntRange(_Param):
    type: Literal["int"] = Field(description="an integer drawn uniformly")
    low: int = Field(description="the smallest value")
    high: int = Field(description="the largest value")


class Choice(_Param):
    type: Literal["choice"] = Field(description="one of the values, chosen by the sampler")
    values: list[Any] = Field(min_length=1, description="single values: null, true/false, numbers or strings")


class Grid(_Param):
    type: Literal["grid"] = Field(description="every value, in every combination (algorithm grid)")
    values: list[Any] = Field(min_length=1, description="single values: null, true/false, numbers or strings")


SpaceParam = Annotated[Union[LogUniform, Uniform, IntRange, Choice, Grid], Field(discriminator="type")]
SPACE_TYPES = ("loguniform", "uniform", "int", "choice", "grid")


def _check_scalar_values(key: str, param: Choice | Grid) -> None:
    """Choice and grid values must be single finite values: Optuna stores nothing else, and a list
    or mapping would be trained and then break the report."""
    for value in param.values:
        if not isinstance(value, SCALARS):
            raise ValueError(
                f"space {key}: {param.type} value {excerpt(value)} is not a single value (null, true/false, "
                "a number or a string); put lists and groups of settings in search.variants (named bundles)"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"space {key}: {param.type} value {value} is not a finite number")


class AshaConfig(Strict):
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: int = Field(2, ge=2, description="at each rung, 1 / reduction_factor of the trials go on")


class SearchConfig(Strict):
    algorithm: Literal["optuna", "grid", "random"] = Field(
        "optuna", description="optuna: a seeded Optuna sampler; grid: every combination; random: Optuna's random sampler"
    )
    sampler: Literal["tpe", "random", "cmaes"] = Field("tpe", description="optuna: the sampler")
    num_samples: int = Field(8, ge=1, description="configurations to try, per stratum (grid: ignored, every combination)")
    seeds: list[int] | None = Field(None, description="run every configuration once per training seed; null = once, with train.seed")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named bundles of settings, searched as the parameter `variant`"
    )
    max_concurrent: int = Field(2, ge=1, description="trials running at once (lowered, with a note, to what a fixed Ray instance holds)")
    metric: str = Field("val_acc_all", description="the objective: a validation metric, never a test one")
    mode: Literal["max", "min"] = Field("max", description="maximize or minimize the objective")
    objectives: dict[str, Literal["max", "min"]] | None = Field(
        None,
        description="several objectives, each a validation metric -> max or min (instead of metric and mode): "
        "a multi-objective search whose report draws the Pareto front",
    )
    seed: int = Field(0, description="seeds the sampler")
    tpe_startup: int | None = Field(
        None, ge=1, description="tpe: random trials before TPE models the results; null = num_samples // 4, 2 to 10"
    )
    asha: AshaConfig | None = Field(None, description="stop poor trials early (ASHA, Li et al. 2020)")
    space: dict[str, SpaceParam] = Field(default_factory=dict, description="dotted setting -> distribution (loguniform, uniform, int, choice, grid)")
    strata: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="settings -> values; one independent search (own sampler, own num_samples) per combination",
    )
    split_by_variant: bool = Field(
        False,
        description="optuna, random: one independent search per variant (own sampler, own num_samples), "
        "not the variant as a searched choice; each variant's front then has the same budget",
    )

    @model_validator(mode="after")
    def _strata_are_fixed_values(self) -> "SearchConfig":
        """Strata (ncstudy.study.search.StratifiedSearch) are grid axes that split the study: each value a
        single setting's scalar, and a key the search does not also set through space or variants."""
        for key, values in self.strata.items():
            if not values:
                raise ValueError(f"strata {key}: give at least one value")
            for position, value in enumerate(values):
                if not isinstance(value, SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
                    raise ValueError(
                        f"strata {key}: value {excerpt(value)} is not a single finite value "
                        "(null, true/false, a number or a string)"
                    )
                if value in values[:position]:
                    raise ValueError(f"strata {key}: value {excerpt(value)} is given twice")
            if key in self.space:
                raise ValueError(f"strata {key}: also in search.space; a setting is either a stratum or searched, not both")
            if key == "variant" or key == SEED_SETTING:
                raise ValueError(f"strata {key}: reserved; use search.{'variants' if key == 'variant' else 'seeds'}")
            if any(key in bundle for bundle in self.variants.values()):
                raise ValueError(f"strata {key}: also set by a variant in search.variants; drop it from one of them")
        return self

    @model_validator(mode="after")
    def _split_needs_variants(self) -> "SearchConfig":
        if self.split_by_variant and not self.variants:
            raise ValueError("split_by_variant splits the search by search.variants; the study has none")
        if self.split_by_variant and self.algorithm == "grid":
            raise ValueError("split_by_variant: algorithm grid already runs every variant with every combination")
        return self

    @model_validator(mode="after")
    def _several_objectives(self) -> "SearchConfig":
        """`objectives` (two or more) replaces `metric` and `mode`, so a study names its objective one
        way. A multi-objective search has no single ranking of trials: ASHA, which stops trials on one
        metric, would cut trials that are good for another objective and bend the front towards the
        first; Optuna's CMA-ES sampler optimises one objective only."""
        if self.objectives is None:
            return self
        if {"metric", "mode"} & self.model_fields_set:
            raise ValueError(
                "objectives replaces metric and mode; give either metric and mode (one objective) or objectives (several)"
            )
        if len(self.objectives) < 2:
            raise ValueError("objectives: name two or more; one objective is set with metric and mode")
        for name in self.objectives:
            if name not in OBJECTIVE_METRICS:
                raise ValueError(f"objectives: {name} is not a validation metric; choose from {', '.join(OBJECTIVE_METRICS)}")
        if self.asha is not None:
            raise ValueError(
                "asha stops trials on one metric, so it cannot serve several objectives; drop asha or use metric and mode"
            )
        if self.algorithm == "optuna" and self.sampler == "cmaes":
            raise ValueError("sampler cmaes optimises one objective only; use tpe (Optuna's multi-objective TPE) or random")
        return self

    @model_serializer(mode="wrap")
    def _one_way_of_naming_the_objective(self, handler: Any) -> dict[str, Any]:
        """The saved study names its objective the way it was given: with `objectives`, without the
        unused `metric` and `mode` (which, read back, would be refused beside it); without
        `objectives`, as before it existed."""
        tree = handler(self)
        for key in ("metric", "mode") if self.objectives is not None else ("objectives",):
            tree.pop(key, None)
        return tree

    @property
    def objective_directions(self) -> dict[str, str]:
        """Every objective and its direction: `objectives`, or `{metric: mode}`."""
        return dict(self.objectives) if self.objectives is not None else {self.metric: self.mode}

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None

    @property
    def first_objective(self) -> tuple[str, str]:
        """The objective that orders lists (the progress line, the MLflow runs table): `metric`, or
        the first of `objectives`."""
        return next(iter(self.objective_directions.items()))

    @model_validator(mode="after")
    def _objective_is_validation(self) -> "SearchConfig":
        if self.metric not in OBJECTIVE_METRICS:
            raise ValueError(f"metric must be a validation metric, one of {', '.join(OBJECTIVE_METRICS)}")
        for key, param in self.space.items():
            if isinstance(param, (LogUniform, Uniform, IntRange)) and not param.low < param.high:
                raise ValueError(f"space {key}: low must be below high")
            if isinstance(param, (Choice, Grid)):
                _check_scalar_values(key, param)
            if isinstance(param, Grid) and self.algorithm != "grid":
                raise ValueError(f"space {key}: type grid needs algorithm grid")
            if self.algorithm == "grid" and not isinstance(param, (Grid, Choice)):
                raise ValueError(f"space {key}: algorithm grid takes only grid or choice entries")
            if param.when and self.algorithm == "grid":
                raise ValueError(f"space {key}: conditional parameters (when) need algorithm optuna or random")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        if self.seeds and (SEED_SETTING in self.space or any(SEED_SETTING in b for b in self.variants.values())):
            raise ValueError(f"seeds sets {SEED_SETTING} of every run; drop {SEED_SETTING} from space and variants")
        if "variant" in self.space:
            raise ValueError("space: 'variant' is reserved for search.variants")
        if self.tpe_startup is not None and (self.algorithm != "optuna" or self.sampler != "tpe"):
            raise ValueError("tpe_startup applies to algorithm optuna with sampler tpe only")
        return self

    @property
    def tpe_startup_trials(self) -> int:
        """TPE's random start-up trials. Optuna's default is 10, which at the budgets of most studies
        here (8 to 30 configurations) leaves TPE little or nothing to model: a quarter of the budget,
        kept within 2 and Optuna's 10, lets it start modelling early (benchmarks/search_efficiency.py)."""
        if self.tpe_startup is not None:
            return self.tpe_startup
        return min(10, max(2, self.num_samples // 4))

    @property
    def seed_list(self) -> list[int | None]:
        return list(self.seeds) if self.seeds else [None]


class TrackingConfig(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; null = sqlite at RESULTS/mlflow.db")
    experiment: str | None = Field(None, description="MLflow experiment; null = the study name")


class ResourcesConfig(Strict):
    num_workers: int = Field(1, ge=1, description="Ray Train (DDP) workers per trial")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each worker holds")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each worker holds; a fraction packs several trials on one GPU")
    address: str | None = Field(
        None, description="Ray cluster to join (auto: the one running here); null = $RAY_ADDRESS, else a private local Ray"
    )
    max_failures: int = Field(0, ge=0, description="restarts of a failed trial from its last checkpoint (by Tune for one worker, by Ray Train for several)")
    node_wait_s: float = Field(
        600.0, gt=0,
        description="on a joined cluster: how long trials may wait with none running while the autoscaler adds no node; "
        "then the study stops with an error and keeps its state for `resume`",
    )  # fmt: skip


class MetricsConfig(Strict):
    every: int = Field(10, ge=0, description="NC metrics and test accuracy every N epochs (0 = at the end only)")


class StudyConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX_LENGTH, description="the study's folder under the results")
    data: DataConfig = Field(DataConfig(), description="the source and its long-tailed split")
    model: ModelConfig = Field(ModelConfig(), description="a backbone returning (logits, features), and its head")
    loss: LossConfig = Field(LossConfig(), description="the base loss and class weights")
    regularizer: RegularizerConfig = Field(RegularizerConfig(), description="L_W, L_B, their centres, and the centre-loss baseline")
    train: TrainConfig = Field(TrainConfig(), description="the training recipe")
    search: SearchConfig = Field(SearchConfig(), description="the search: Ray Tune + Optuna")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="what Ray gives each trial, and which Ray")
    metrics: MetricsConfig = Field(MetricsConfig(), description="when NC metrics and test accuracy are measured")

    @model_validator(mode="after")
    def _consistent(self) -> "StudyConfig":
        if self.loss.name == "dot_regression" and self.model.head != "etf":
            raise ValueError("loss.name dot_regression needs model.head etf (it regresses ETF cosines)")
        if self.train.crt_epochs and self.model.head == "etf":
            raise ValueError("train.crt_epochs: cRT re-trains a learnable classifier; the etf head is fixed")
        refuse_inert_terms(self)
        return self


def _describe(error: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as `key.path: message` (one line), noting how many more there are."""
    errors = error.errors()
    first = errors[0]
    location = ".".join(_location_parts(first["loc"]))
    location = ".".join(p for p in (prefix, location) if p)
    message = "; ".join(first["msg"].removeprefix("Value error, ").splitlines())
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {message}{more}" if location else f"{message}{more}"


def _location_parts(loc: tuple) -> list[str]:
    """Pydantic's error location without its internal steps: validator functions, and the tag of a
    search-space entry (`search.space.train.lr.loguniform.high` -> `search.space.train.lr.high`)."""
    parts = [str(part) for part in loc if not str(part).startswith("function-")]
    return [p for i, p in enumerate(parts) if not (i >= 3 and parts[i - 2] == "space" and p in SPACE_TYPES)]


def check_study_name(name: str) -> str:
    """`name` if it can name a study (a folder under the results), else a StudyError."""
    if not isinstance(name, str) or len(name) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, name):
        raise StudyError(
            f"{excerpt(name)}: a study name is letters, digits, _ . - (starting with a letter or digit, "
            f"at most {NAME_MAX_LENGTH} characters)"
        )
    return name


def set_dotted(tree: dict, dotted_key: str, value: Any, copy_path: bool = False) -> None:
    """Set `a.b.c` in a nested dict, creating the intermediate mappings. A key that holds dots itself
    (the space entry of `search.space.regularizer.lambda_within.high`) is matched whole where it exists.
    With `copy_path`, each mapping below `tree` on the way is replaced by a copy first, so a tree that
    shares them with another (`_with_settings`) changes alone."""
    node, rest = tree, dotted_key
    while "." in rest and rest not in node:
        part = _first_key(node, rest)
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StudyError(f"{dotted_key}: {part} is not a section")
        if copy_path:
            child = node[part] = dict(child)
        node, rest = child, rest[len(part) + 1 :]
    node[rest] = value


def _first_key(node: dict, dotted_key: str) -> str:
    """The longest dotted prefix of `dotted_key` that `node` holds as one key, else its first part."""
    parts = dotted_key.split(".")
    for length in range(len(parts) - 1, 1, -1):
        if ".".join(parts[:length]) in node:
            return ".".join(parts[:length])
    return parts[0]


def get_dotted(tree: dict, dotted_key: str) -> Any:
    node: Any = tree
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted_key)
        node = node[part]
    return node


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (`DataConfig`, or `AshaConfig | None`), if it holds one."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _setting_field(dotted_key: str) -> FieldInfo | None:
    """The schema field a dotted setting names, or None."""
    *sections, leaf = dotted_key.split(".")
    model: type[BaseModel] | None = StudyConfig
    for part in sections:
        field = model.model_fields.get(part)
        model = _section_model(field.annotation) if field else None
        if model is None:
            return None
    return model.model_fields.get(leaf)


def _is_integer_setting(dotted_key: str) -> bool:
    field = _setting_field(dotted_key)
    if field is None:
        return False
    kinds = [kind for kind in (get_args(field.annotation) or (field.annotation,)) if kind is not type(None)]
    return all(kind is int for kind in kinds)


def space_candidates(param: SpaceParam) -> list[Any]:
    """The values whose validity stands for the whole range: the bounds, or every choice."""
    if isinstance(param, (Choice, Grid)):
        return list(param.values)
    return [param.low, param.high]


def validate_space(study: StudyConfig, source: str = "study") -> None:
    """Each space key must name a setting, and each value it can produce must pass the schema; so
    must every variant bundle and every stratum value; and each `when` condition must name a setting
    and be able to hold. Every entry is checked, and all that are refused are named at once (a line
    each); the combinations are checked once every entry passes alone."""
    tree = study.model_dump(mode="json")
    checks = [partial(_check_variant, study, tree, f"{source}: search.variants.{name}", bundle)
              for name, bundle in study.search.variants.items()]  # fmt: skip
    for key, param in study.search.space.items():
        where = f"{source}: search.space.{key}"
        # an entry searched in one variant only (when: {variant: NAME}) is valid on that variant's settings
        bundle = study.search.variants.get((param.when or {}).get(VARIANT), {})
        checks.append(partial(_check_space_entry, study, tree, where, key, param, bundle))
        for setting, value in (param.when or {}).items():
            checks.append(partial(_check_condition, study, tree, f"{where}.when.{setting}", key, setting, value))
    for key, values in study.search.strata.items():
        choice = Choice(type="choice", values=list(values))
        checks.append(partial(_check_space_entry, study, tree, f"{source}: search.strata.{key}", key, choice))
    refused = []
    for check in checks:
        try:
            check()
        except StudyError as error:
            refused.append(str(error))
    if refused:
        raise StudyError("\n".join(refused))
    _check_combinations(study, tree, source)


COMBINATION_LIMIT = 512  # above this many, combinations are checked two dimensions at a time


def _check_combinations(study: StudyConfig, tree: dict, source: str) -> None:
    """Every combination of values the search can set together, on the base config and on each
    variant: each unconditional space entry's candidates (bounds or choices), each stratum value;
    a `when` entry's candidates with its conditions holding. A setting that makes a term inert only
    beside another searched value (a temperature while lambda_between can be 0, a learnable-centre
    choice while lambda_within can be 0, a start epoch beside a shorter searched `train.epochs`)
    is refused before Ray starts, naming the values that meet, not in the middle of a study.

    Cross-field rules (ncstudy.terms) are monotone in each setting, so the bounds of a range stand
    for the values inside it. Past COMBINATION_LIMIT combinations, every pair of dimensions is
    checked instead of the full product (each dimension alone is checked by `validate_space`)."""
    dims = [(f"search.space.{k}", k, space_candidates(p)) for k, p in study.search.space.items() if not p.when]
    dims += [(f"search.strata.{k}", k, list(values)) for k, values in study.search.strata.items()]
    _check_product(study, tree, source, dims)
    for key, param in study.search.space.items():
        if param.when:
            free = [dim for dim in dims if dim[1] not in param.when]
            held = [(f"search.space.{key}.when.{k}", k, [value]) for k, value in param.when.items() if k != VARIANT]
            dims_held = [*free, *held, (f"search.space.{key}", key, space_candidates(param))]
            _check_product(study, tree, source, dims_held, param.when.get(VARIANT))


def _check_product(
    study: StudyConfig, tree: dict, source: str, dims: list[tuple[str, str, list[Any]]], only_variant: str | None = None
) -> None:
    """Validate each variant (or the base) with each combination of `dims` (label, key, candidates);
    with `only_variant` (a `when: {variant: NAME}` entry), that variant alone. Each variant has
    passed `_check_variant`, so its validated config is the base of its combinations."""
    variants = [("", {})] + [(f" with search.variants.{n}", b) for n, b in study.search.variants.items()]
    if only_variant is not None:
        variants = [(f" with search.variants.{only_variant}", study.search.variants[only_variant])]
    size = math.prod(len(candidates) for _, _, candidates in dims)
    groups = [dims] if size * len(variants) <= COMBINATION_LIMIT else list(itertools.combinations(dims, 2))
    for variant_label, bundle in variants:
        variant = _validated(study, tree, bundle)
        variant_tree = _with_settings(tree, bundle)
        for group in groups:
            for values in itertools.product(*(candidates for _, _, candidates in group)):
                try:
                    _validated(variant, variant_tree, {key: value for (_, key, _), value in zip(group, values)})
                except ValidationError as exc:
                    meeting = " with ".join(
                        f"{label} {excerpt(value)}" for (label, key, _), value in zip(group, values)
                        if get_dotted(variant_tree, key) != value
                    )  # fmt: skip
                    raise StudyError(f"{source}: {meeting}{variant_label}: {_describe(exc)}") from None


def _require_setting(tree: dict, where: str, key: str) -> None:
    try:
        current = get_dotted(tree, key)
    except KeyError:
        raise StudyError(f"{where}: no such setting") from None
    if isinstance(current, dict):
        raise StudyError(f"{where}: names a section, not a setting")


def _validated(study: StudyConfig, tree: dict, settings: dict[str, Any]) -> StudyConfig:
    """`study` (whose dump is `tree`) with dotted `settings` set, validated, or a ValidationError.

    Only the sections the settings are in are validated again; every other section is passed as the
    study's own validated model, which pydantic takes as it is (revalidate_instances 'never', its
    default), while the study's cross-section rules still run on the whole. A check then costs the
    size of what it changes, not of the study: `search` holds every variant, and copying and
    validating it for each variant and combination made validation quadratic in their number.
    Pydantic still runs a passed model's own after-validators, and search's compare the strata and
    seeds with every variant, so it goes without them: those rules held for this study, and fewer
    variants cannot break them. The outcome is the same; a setting in `search` brings that section
    from `tree`, variants and all."""
    unchanged = {name: getattr(study, name) for name in StudyConfig.model_fields}
    if study.search.variants:
        unchanged["search"] = study.search.model_copy(update={"variants": {}, "split_by_variant": False})
    changed = _with_settings(tree, settings)
    sections = {key.split(".")[0] for key in settings}
    return StudyConfig.model_validate({**unchanged, **{name: changed[name] for name in sections}})


def _with_settings(tree: dict, settings: dict[str, Any]) -> dict:
    """`tree` with dotted `settings` set, leaving `tree` as it is: only the mappings on the settings'
    paths are copied, all else is shared (nothing changes a list or a value of the tree), a fraction
    of a deep copy's cost, which is paid once per variant and combination."""
    changed = dict(tree)
    for key, value in settings.items():
        set_dotted(changed, key, value, copy_path=True)
    return changed


def _check_variant(study: StudyConfig, tree: dict, where: str, bundle: dict[str, Any]) -> None:
    for key in bundle:
        _require_setting(tree, f"{where}.{key}", key)
    try:
        _validated(study, tree, bundle)
    except ValidationError as exc:
        raise StudyError(f"{where}: {_describe(exc)}") from None


def _check_space_entry(
    study: StudyConfig, tree: dict, where: str, key: str, param: SpaceParam, bundle: dict[str, Any] | None = None
) -> None:
    _require_setting(tree, where, key)
    if isinstance(param, (LogUniform, Uniform)) and _is_integer_setting(key):
        raise StudyError(f"{where}: an integer setting; use type int ({param.type} draws fractions)")
    for value in space_candidates(param):
        try:
            _validated(study, tree, {**(bundle or {}), key: value})
        except ValidationError as exc:
            raise StudyError(f"{where}: value {excerpt(value)} is invalid: {_describe(exc)}") from None


def _check_condition(study: StudyConfig, tree: dict, where: str, key: str, setting: str, value: Any) -> None:
    """`when: {setting: value}` of space entry `key`: a setting that is fixed, or searched before
    `key` (the sampler sees only earlier draws), that can take `value` in this study."""
    if setting == key:
        raise StudyError(f"{where}: a parameter cannot be conditional on itself")
    if setting == VARIANT:
        if value not in study.search.variants:
            names = ", ".join(study.search.variants) or "the study has no search.variants"
            raise StudyError(f"{where}: {excerpt(value)} is not a variant ({names}), so {key} would never be searched")
        return
    _require_setting(tree, where, setting)
    order = list(study.search.space)
    if setting in order and order.index(setting) > order.index(key):
        raise StudyError(f"{where}: {setting} is searched after {key}; list it first in search.space")
    fixed = study.search.strata.get(setting, [get_dotted(tree, setting)])  # a stratum key takes its strata's values
    values = [*fixed, *(b[setting] for b in study.search.variants.values() if setting in b)]
    param = study.search.space.get(setting)
    ranged = isinstance(param, (LogUniform, Uniform, IntRange))
    if param is not None and not ranged:
        values += param.values
    if value in values or (ranged and _number_between(value, param.low, param.high)):
        return
    possible = ", ".join(dict.fromkeys(excerpt(v, 30) for v in values))
    if ranged:
        possible += f", {param.low} to {param.high}"
    raise StudyError(f"{where}: {excerpt(value)} is never its value here ({possible}), so {key} would never be searched")


def _number_between(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def with_params(study: StudyConfig, params: dict[str, Any]) -> StudyConfig:
    """The study config with a trial's sampled values (dotted keys) applied; `variant` applies its
    bundle from search.variants first, so a sampled value can refine it."""
    tree = study.model_dump(mode="json")
    if "variant" in params:
        for key, value in study.search.variants[params["variant"]].items():
            set_dotted(tree, key, value)
    for key, value in params.items():
        if key == "variant" or (isinstance(value, float) and math.isnan(value)):
            continue
        set_dotted(tree, key, value)
    return StudyConfig.model_validate(tree)


def dump_yaml(study: StudyConfig) -> str:
    """The resolved config, every default spelled out, as it is saved beside the results."""
    return yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False)


def __getattr__(name: str) -> Any:
    """`load_study` and `parse_override` live in ncstudy.study_file (base files, --set, data paths);
    importing them from here keeps working. Lazy, because that module imports this one."""
    if name in ("load_study", "load_study_file", "parse_override"):
        from ncstudy import study_file

        return getattr(study_file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
