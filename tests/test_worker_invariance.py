"""A trial's result does not depend on how many workers run it (docs/design.md, "Worker-count
invariance"): two steps of the real training step (`ncstudy.engine.step.training_step`) with 2 gloo DDP
workers x B/2 give the parameters, centres and losses of 1 worker x B, for L_W, L_B, the centre loss
and every centre mode, with more classes (K = 10) than images per worker (6), and for every weighted
base loss with DRW's class weights; the second batch has an odd size, so the shards differ (6 and 5)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ncstudy.config import RegularizerConfig, StudyConfig
from ncstudy.engine.step import training_step
from ncstudy.method.losses import build_loss, class_balanced_weights
from ncstudy.method.regularizers import NeuralCollapseRegularizer, WorkerSum

K, P = 10, 5
COUNTS = [500, 300, 180, 110, 60, 40, 20, 12, 8, 5]  # the training counts the losses are built from
CASES = {
    "learnable L_W": dict(centers="learnable", lambda_within=0.1, lambda_between=0.0),
    "learnable L_W + L_B (T 0.5)": dict(centers="learnable", lambda_within=0.1, lambda_between=0.5, temperature=0.5),
    "learnable centre loss + L_B": dict(centers="learnable", lambda_within=0.0, lambda_center=0.1, lambda_between=0.5),
    "ema L_W + L_B": dict(centers="ema", lambda_within=0.1, lambda_between=0.5),
    "ema L_B": dict(centers="ema", lambda_within=0.0, lambda_between=0.5),
    "batch L_W + L_B": dict(centers="batch", lambda_within=0.1, lambda_between=0.5),
    "batch L_B (T 0.5)": dict(centers="batch", lambda_within=0.0, lambda_between=0.5, temperature=0.5),
    "batch centre loss": dict(centers="batch", lambda_within=0.0, lambda_between=0.0, lambda_center=0.1),
}
LOSSES = {  # each with L_W on EMA centres; the weighted ones with class-balanced (DRW) weights
    "ce": dict(name="ce"),
    "ce DRW": dict(name="ce", weighted=True),
    "focal DRW": dict(name="focal", weighted=True, focal_gamma=1.0),
    "ldam DRW": dict(name="ldam", weighted=True),
    "logit_adjusted DRW": dict(name="logit_adjusted", weighted=True),
    "balanced_softmax": dict(name="balanced_softmax"),
}
CASES.update({f"loss {name}": dict(centers="ema", lambda_within=0.1, loss=loss) for name, loss in LOSSES.items()})


class TinyNet(nn.Module):
    """No BatchNorm: per-worker batch statistics are a separate matter (model.sync_batchnorm)."""

    feature_dim = P

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, P))
        self.classifier = nn.Linear(P, K)

    def forward(self, images):
        features = self.body(images)
        return self.classifier(features), features


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    labels = [torch.tensor([0, 0, 0, 0, 1, 1, 2, 3, 5, 7, 0, 9]), torch.tensor([1, 0, 0, 4, 0, 9, 2, 6, 0, 1, 8])]
    return [(torch.randn(len(y), 8, generator=generator), y) for y in labels]


def base_loss(case: dict) -> nn.Module:
    spec = dict(case.get("loss", {"name": "ce"}))
    weight = class_balanced_weights(COUNTS, beta=0.999) if spec.pop("weighted", False) else None
    return build_loss(spec.pop("name"), COUNTS, weight=weight, **spec)


def run(case: str, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
    """STEPS training steps of this worker's share of every batch (rows rank::world_size)."""
    regularizer = {key: value for key, value in CASES[case].items() if key != "loss"}
    config = StudyConfig(name="invariance", regularizer=RegularizerConfig(**regularizer), train={"momentum": 0.9})
    torch.manual_seed(0)
    model = TinyNet()
    workers = WorkerSum(world_size)
    state = SimpleNamespace(
        config=config,
        workers=workers,
        loss=base_loss(CASES[case]),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4),
        regularizer=NeuralCollapseRegularizer(config.regularizer, K, P, torch.Generator().manual_seed(1), workers),
    )
    wrapped = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    terms, base = [], []
    for images, labels in batches():
        values = training_step(wrapped, state, images[rank::world_size], labels[rank::world_size], None, "on", False)
        terms.append(torch.stack(values[2:]))  # the regularizer terms: global, the same on every worker
        base.append(values[1])  # this worker's share of the base loss: the workers' mean is the global one
    result = {f"param.{name}": p.detach().clone() for name, p in model.named_parameters()}
    result.update({f"regularizer.{name}": t.detach().clone() for name, t in state.regularizer.state_dict().items()})
    result["terms"] = torch.stack(terms)
    result["loss_sup"] = torch.stack(base)
    return result


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.save({case: run(case, rank, 2) for case in CASES}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(folder / "store"), str(folder / "result")), nprocs=2)
    return [torch.load(folder / f"result.{rank}") for rank in range(2)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_workers_equal_one_worker_with_the_whole_batch(two_workers, case):
    one = run(case)
    assert one["terms"].abs().sum() > 0  # the case exercises a regularizer
    reported = sum(results[case]["loss_sup"] for results in two_workers) / 2  # as train_epoch reports it
    torch.testing.assert_close(reported, one["loss_sup"], rtol=1e-5, atol=1e-5)
    for rank, results in enumerate(two_workers):
        two = results[case]
        assert two.keys() == one.keys()
        for key in one.keys() - {"loss_sup"}:
            torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-5, msg=f"rank {rank}: {key}")
