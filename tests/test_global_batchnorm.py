"""GlobalBatchNorm (ncstudy.models.global_batchnorm): 2 gloo DDP workers x B/2 images train the
parameters and running statistics of 1 worker x B with plain BatchNorm2d, to 1e-5; per-worker
BatchNorm (the CPU's only option before) does not, which is what the test would see without it."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ncstudy.models.global_batchnorm import GlobalBatchNorm, convert_to_global_batchnorm

BATCH, STEPS = 8, 3


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=None),
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    )  # fmt: skip


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 6, 6, generator=generator) * 2 + 1, torch.randint(5, (BATCH,), generator=generator)) for _ in range(STEPS)]


def train(rank: int = 0, world_size: int = 1, convert: bool = True) -> dict[str, torch.Tensor]:
    model = small_net()
    if world_size > 1 and convert:
        model = convert_to_global_batchnorm(model, dist.new_group())
    wrapped = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for images, labels in data():
        loss = nn.functional.cross_entropy(wrapped(images[rank::world_size]), labels[rank::world_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = {name: t.detach().clone() for name, t in model.state_dict().items()}
    model.eval()
    result["eval_logits"] = model(data()[0][0]).detach()
    return result


def _worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.save({"global": train(rank, 2), "per_worker": train(rank, 2, convert=False)}, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp-bn")
    mp.spawn(_worker, args=(str(folder / "store"), str(folder / "result")), nprocs=2)
    return [torch.load(folder / f"result.{rank}") for rank in range(2)]


def test_two_workers_with_global_batchnorm_equal_one_worker(two_workers):
    one = train()
    for rank, results in enumerate(two_workers):
        assert results["global"].keys() == one.keys()  # the same state dict: checkpoints load either way
        for key, value in one.items():
            torch.testing.assert_close(results["global"][key], value, rtol=1e-5, atol=1e-5, msg=f"rank {rank}: {key}")


def test_per_worker_batchnorm_trains_another_model(two_workers):
    one = train()
    assert not torch.allclose(two_workers[0]["per_worker"]["eval_logits"], one["eval_logits"], rtol=1e-3, atol=1e-3)


def test_conversion_keeps_parameters_and_buffers():
    model = small_net()
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_to_global_batchnorm(model, None)
    assert sum(isinstance(m, GlobalBatchNorm) for m in converted.modules()) == 2
    assert all(torch.equal(before[k], v) for k, v in converted.state_dict().items())
