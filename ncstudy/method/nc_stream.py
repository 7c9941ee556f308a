"""Neural-collapse metrics streamed over batches and ranks, and by frequency group.

NC1-NC3 of Papyan, Han & Donoho (PNAS 2020), as docs/design.md defines them and
`ncstudy.method.metrics.neural_collapse` computes them, depend on the features only through per-class
moments: the counts n_k, the sums, and the second moments G_k = sum_{i in k} h_i h_i^T, since
S_W = (1/K) sum_k [G_k / n_k - mu_k mu_k^T]. `ClassMoments` accumulates them in float64 batch by
batch and sums them across torch.distributed ranks, so each Ray Train worker can evaluate its own
shard and then reduce. `finalize` returns the keys and values of `neural_collapse` (both use the same
functions of ncstudy.method.metrics after the moments), NC4 aside.

One pass in bounded memory. The weights 1/n_k are known only once every sample has been seen, so in
general each G_k must be kept: K x P x P floats, 33 GB for ImageNet-LT (K = 1000, P = 2048). But the
class counts of a split are known before any feature is computed (a bincount of its labels; for the
training set, the training counts), and with them sum_k G_k / n_k = sum_i h_i h_i^T / n_{y_i} is a
single P x P sum. So:

- `ClassMoments(K, P, counts=...)`, the recommended form: one weighted P x P sum, or one per frequency
  group when `groups` is given (for the group NC1 of `group_collapse`); memory O(K P + G P^2).
  `finalize` checks that the samples seen have exactly these counts (every sample once, all ranks).
- `ClassMoments(K, P)`: the per-class G_k, for when the counts are not known in advance; refused
  above PER_CLASS_LIMIT_BYTES.

Raw second moments lose about log10(||h||^2 / within-class variance) of float64's 16 digits to
cancellation, which is immaterial for any NC1 above about 1e-8.

NC4 compares each sample's classifier argmax with its nearest class mean, so it needs the final means
and a second pass over the features: `nc4_mismatches(features, logits, means, classes)` per batch with
`classes, means = moments.class_means()`, the two counts summed (and all-reduced) by the caller.

`group_collapse` reports, per frequency group, NC1 and the smallest angle between two of the group's
centred class means, the smallest angle between a many-shot and a few-shot class (minority collapse:
Fang et al., PNAS 2021, predict it shrinks under imbalance), the norms of the centred class means and
the K x K angles between them (Papyan et al.'s equinorm and equiangularity plots, per class). The K x K
cosine matrix is kept whole (8 MB at K = 1000), not tiled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ncstudy.method.metrics import between_pinv_factor, mean_cosines, mean_geometry, nc4_mismatches

__all__ = ["PER_CLASS_LIMIT_BYTES", "ClassMoments", "GroupCollapse", "group_collapse", "nc4_mismatches"]

PER_CLASS_LIMIT_BYTES = 2**29


def _block_of(num_classes: int, groups: dict[str, list[int]]) -> torch.Tensor:
    """The P x P sum each class feeds: its group's position in `groups`, or one after the last for
    classes in no group."""
    block = torch.full((num_classes,), len(groups), dtype=torch.long)
    assigned: set[int] = set()
    for position, classes in enumerate(groups.values()):
        if assigned & set(classes):
            raise ValueError(f"groups overlap in classes {sorted(assigned & set(classes))}")
        assigned |= set(classes)
        block[list(classes)] = position
    return block


class ClassMoments:
    """Per-class counts, sums and (weighted) second moments of penultimate features, in float64.

    counts: the class counts of the whole split (all ranks together) when known in advance: then one
    weighted P x P sum per group in `groups` (plus one for classes in no group), or one in all.
    Without counts: per-class P x P sums, K * P * P * 8 bytes (at most PER_CLASS_LIMIT_BYTES).
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        counts: Sequence[int] | torch.Tensor | None = None,
        groups: dict[str, list[int]] | None = None,
        device: torch.device | str | None = None,
    ):
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.device = torch.device(device or "cpu")
        if counts is None:
            size = num_classes * feature_dim**2 * 8
            if size > PER_CLASS_LIMIT_BYTES:
                raise ValueError(
                    f"per-class second moments would take {size / 2**30:.1f} GiB; pass counts= (the class counts of the split)"
                )
            self.expected = None
            self.block_of = torch.arange(num_classes)
        else:
            self.expected = torch.as_tensor(counts, dtype=torch.long).to(self.device)
            self.block_of = _block_of(num_classes, groups or {})
        self.block_of = self.block_of.to(self.device)
        blocks = int(self.block_of.max()) + 1
        self.counts = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self.sums = torch.zeros(num_classes, feature_dim, dtype=torch.float64, device=self.device)
        self.second = torch.zeros(blocks, feature_dim, feature_dim, dtype=torch.float64, device=self.device)

    @classmethod
    def from_features(
        cls, features: torch.Tensor, labels: torch.Tensor, num_classes: int, groups: dict[str, list[int]] | None = None
    ) -> ClassMoments:
        """The moments of features held in memory (counts from the labels)."""
        counts = torch.bincount(labels.detach().long().cpu(), minlength=num_classes)
        moments = cls(num_classes, features.shape[1], counts, groups, features.device)
        moments.update(features, labels)
        return moments

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features [B, P] (any float dtype), labels [B]."""
        h = features.detach().to(self.device, torch.float64)
        y = labels.detach().to(self.device, torch.long)
        self.counts += torch.bincount(y, minlength=self.num_classes)
        self.sums.index_add_(0, y, h)
        weighted = h if self.expected is None else h / self.expected[y].clamp(min=1).unsqueeze(1)
        block = self.block_of[y]
        order = torch.argsort(block)
        sizes = torch.bincount(block, minlength=len(self.second)).tolist()
        for b, (left, right) in enumerate(zip(weighted[order].split(sizes), h[order].split(sizes))):
            if len(right):
                self.second[b].addmm_(left.t(), right)

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Add the moments of another accumulator of the same shape and mode (in place)."""
        same_layout = self.second.shape == other.second.shape and torch.equal(
            self.block_of, other.block_of.to(self.device)
        )
        same_counts = (self.expected is None and other.expected is None) or (
            self.expected is not None and other.expected is not None and torch.equal(self.expected, other.expected.to(self.device))
        )
        if not (same_layout and same_counts):
            raise ValueError("merge needs accumulators with the same classes, feature dim, counts and groups")
        self.counts += other.counts.to(self.device)
        self.sums += other.sums.to(self.device)
        self.second += other.second.to(self.device)
        return self

    def all_reduce(self) -> ClassMoments:
        """Sum counts, sums and second moments over the torch.distributed ranks (a no-op without a
        process group). Call once, on every rank, after the last update; tensors live on `device`,
        which must suit the backend (CUDA for NCCL)."""
        if dist.is_available() and dist.is_initialized():
            for tensor in (self.counts, self.sums, self.second):
                dist.all_reduce(tensor)
        return self

    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the classes with samples, their means [k, P]): the `classes` and `means` of nc4_mismatches."""
        present = torch.nonzero(self.counts > 0).flatten()
        return present, self.sums[present] / self.counts[present].unsqueeze(1)

    def finalize(self, weight: torch.Tensor | None = None) -> dict[str, float]:
        """The keys and values of `neural_collapse` but nc4: nc1, nc2_equinorm, nc2_equiangle,
        nc2_maxangle, min_angle_deg, and nc3 with the classifier `weight` (K x P)."""
        present, centred, factor = self._geometry()
        k = len(present)
        result = {"nc1": float(self._within_trace(present, factor) / k / k)}
        rows = None if weight is None else weight.detach()[present.to(weight.device)]
        result.update(mean_geometry(centred, rows))
        return result

    def _within_trace(self, classes: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """Tr(F^T Z F) with Z = sum over `classes` (all with samples) of their covariance G_k / n_k - mu_k mu_k^T."""
        means = self.sums[classes] / self.counts[classes].unsqueeze(1)
        scatter = self._weighted_second(classes) - means.t() @ means
        return (factor * (scatter @ factor)).sum()

    def _weighted_second(self, classes: torch.Tensor) -> torch.Tensor:
        """sum over `classes` of G_k / n_k."""
        if self.expected is None:
            inverse = torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)
            inverse[classes] = 1.0 / self.counts[classes].to(torch.float64)
            return torch.tensordot(inverse, self.second, dims=1)
        blocks = torch.unique(self.block_of[classes])
        covered = torch.nonzero(torch.isin(self.block_of, blocks) & (self.counts > 0)).flatten()
        if not torch.equal(covered, torch.sort(classes).values):
            raise ValueError("these moments were summed by other groups: pass the groups given to ClassMoments")
        return self.second[blocks].sum(dim=0)

    def _geometry(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(classes with samples, their centred means, F with pinv(S_B) = F F^T), after checking the counts."""
        if self.expected is not None and not torch.equal(self.counts, self.expected):
            raise ValueError(
                f"the samples seen ({int(self.counts.sum())}) do not have the class counts given "
                f"({int(self.expected.sum())}): all-reduce first, and cover every sample exactly once"
            )
        present, means = self.class_means()
        if len(present) == 0:
            raise ValueError("no samples were seen")
        centred = means - means.mean(dim=0)
        return present, centred, between_pinv_factor(centred)


@dataclass
class GroupCollapse:
    """scalars: nc1_<group>, min_angle_<group>_deg, min_angle_many_few_deg (NaN where undefined).
    mean_norms [K]: ||mu_k - mu_C||; angles_deg [K, K]: angles between centred means (0 on the
    diagonal); NaN for classes without samples."""

    scalars: dict[str, float]
    mean_norms: np.ndarray
    angles_deg: np.ndarray


def _min_angle(angles: np.ndarray, rows: list[int], cols: list[int]) -> float:
    """The smallest angle between a class in `rows` and a different class in `cols` (NaN if no pair)."""
    pairs = angles[np.ix_(rows, cols)][np.not_equal.outer(rows, cols)] if rows and cols else np.array([])
    return float(pairs.min()) if len(pairs) else math.nan


def _group_nc1(moments: ClassMoments, classes: list[int], factor: torch.Tensor, k: int) -> float:
    """Tr(S_W^g pinv(S_B)) / K for the group's classes with samples (NaN if none)."""
    if not classes:
        return math.nan
    trace = moments._within_trace(torch.tensor(classes, dtype=torch.long, device=moments.device), factor)
    return float(trace / len(classes) / k)


def group_collapse(moments: ClassMoments, groups: dict[str, list[int]]) -> GroupCollapse:
    """NC1 and angles per frequency group, on the global geometry (centre mu_C, S_B and K of all classes).

    The NC1 of a group is Tr(S_W^g pinv(S_B)) / K with S_W^g = (1/K_g) sum_{k in g} Sigma_k: the global
    formula with S_W averaged over the group's classes only, so the global nc1 is the class-weighted
    mean of the group values. NaN for a group without classes with samples; a group's smallest angle
    is NaN with fewer than two. With `counts`, the moments must have been built with these groups.
    """
    present, centred, factor = moments._geometry()
    k, num_classes = len(present), moments.num_classes
    index = present.cpu().numpy()
    angles = np.full((num_classes, num_classes), np.nan)
    angles[np.ix_(index, index)] = torch.rad2deg(torch.arccos(mean_cosines(centred).clamp(-1, 1))).cpu().numpy()
    angles[index, index] = 0.0
    norms = np.full(num_classes, np.nan)
    norms[index] = centred.norm(dim=1).cpu().numpy()

    has_samples = (moments.counts > 0).cpu().numpy()
    members = {name: [c for c in classes if has_samples[c]] for name, classes in groups.items()}
    scalars: dict[str, float] = {}
    for name, classes in members.items():
        scalars[f"nc1_{name}"] = _group_nc1(moments, classes, factor, k)
        scalars[f"min_angle_{name}_deg"] = _min_angle(angles, classes, classes)
    scalars["min_angle_many_few_deg"] = _min_angle(angles, members.get("many", []), members.get("few", []))
    return GroupCollapse(scalars, norms, angles)
