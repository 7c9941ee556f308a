"""The neural-collapse metrics. (The frequency groups are in ncstudy.data.groups.)

The accuracy and calibration metrics over the frequency groups (per-class and group accuracy, balanced accuracy, the expected
calibration error of Guo et al., ICML 2017) are computed once, in
ncstudy.engine.evaluation.evaluate_split; tests/reference_metrics.py holds their textbook
definitions, which the tests check evaluate_split against.

`neural_collapse` implements NC1-NC4 of Papyan, Han & Donoho (PNAS 2020) as docs/design.md
defines them: class-balanced within-class covariance, the centre mu_C taken as the plain mean of the
class means, population standard deviations. Its pieces (`between_pinv_factor`, `mean_geometry`,
`nc4_mismatches`) are shared with the streaming accumulator in ncstudy.method.nc_stream, so both give the
same numbers.
"""

from __future__ import annotations

import math
import torch

def between_pinv_factor(centred_means: torch.Tensor) -> torch.Tensor:
    """F (P x r) with pinv(S_B) = F F^T, S_B = M^T M / K for the K x P centred means M.

    From the SVD M = U diag(s) V^T: pinv(S_B) = K V diag(s)^-2 V^T, cut where torch.linalg.pinv(S_B)
    cuts (eigenvalue <= P * eps * largest, i.e. s <= sqrt(P * eps) * s_max). Only the K x P SVD is needed,
    never the P x P one, which matters for P = 2048.
    """
    k, p = centred_means.shape
    _, s, vh = torch.linalg.svd(centred_means, full_matrices=False)
    keep = s > s.max() * math.sqrt(p * torch.finfo(centred_means.dtype).eps)
    return vh[keep].t() / s[keep] * math.sqrt(k)


def mean_cosines(centred_means: torch.Tensor) -> torch.Tensor:
    """K x K cosines between the centred class means (kept whole: 8 MB at K = 1000)."""
    unit = centred_means / centred_means.norm(dim=1, keepdim=True)
    return unit @ unit.t()


def mean_geometry(centred_means: torch.Tensor, weight: torch.Tensor | None = None) -> dict[str, float]:
    """NC2 (equinorm, equiangle, max-angle), the smallest angle and, with classifier rows `weight`
    (one per row of `centred_means`), NC3."""
    k = len(centred_means)
    norms = centred_means.norm(dim=1)
    result = {"nc2_equinorm": float(norms.std(unbiased=False) / norms.mean())}
    pair_cosines = mean_cosines(centred_means)[~torch.eye(k, dtype=torch.bool, device=centred_means.device)]
    if k > 1:
        result["nc2_equiangle"] = float(pair_cosines.std(unbiased=False))
        result["nc2_maxangle"] = float((pair_cosines + 1.0 / (k - 1)).abs().mean())
        result["min_angle_deg"] = float(torch.rad2deg(torch.arccos(pair_cosines.clamp(-1, 1).max())))
    else:
        result.update(nc2_equiangle=math.nan, nc2_maxangle=math.nan, min_angle_deg=math.nan)
    if weight is not None:
        w = weight.to(centred_means)
        result["nc3"] = float((w / w.norm() - centred_means / centred_means.norm()).pow(2).sum())
    return result


def nc4_mismatches(
    features: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, classes: torch.Tensor | None = None
) -> tuple[int, int]:
    """(samples whose classifier argmax differs from their nearest class mean, samples) for one batch.

    `means` are the class means of the whole split (rows for `classes`, default 0..K-1), so NC4 takes a
    second pass once the means are known; NC4 = the summed mismatches / the summed samples.
    """
    h = features.detach().to(torch.float64)
    nearest = torch.cdist(h, means.detach().to(h)).argmin(dim=1)
    if classes is not None:
        nearest = classes.to(nearest.device)[nearest]
    return int((logits.detach().argmax(dim=1).to(nearest.device) != nearest).sum()), len(h)


def neural_collapse(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> dict[str, float]:
    """NC1, NC2 (equinorm, equiangle, max-angle), the smallest angle, and with a classifier NC3, NC4.

    Computed in float64 over the classes that have samples. Keys: nc1, nc2_equinorm, nc2_equiangle,
    nc2_maxangle, min_angle_deg, and nc3, nc4 when `weight` (K x P) is given. NC1 projects the
    deviations onto pinv(S_B) = F F^T (`between_pinv_factor`): Tr(S_W F F^T) without a P x P matrix.
    """
    h = features.detach().to(torch.float64)
    y = labels.detach().to(device=h.device, dtype=torch.long)
    counts = torch.bincount(y, minlength=num_classes)
    present = torch.nonzero(counts > 0).flatten()
    k = len(present)
    sums = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device).index_add(0, y, h)
    means = sums[present] / counts[present].unsqueeze(1)
    centred_means = means - means.mean(dim=0)

    position = torch.full((num_classes,), -1, dtype=torch.long, device=h.device)
    position[present] = torch.arange(k, device=h.device)
    projected = (h - means[position[y]]) @ between_pinv_factor(centred_means)
    nc1 = (projected.pow(2).sum(dim=1) / counts[y]).sum() / k / k
    result = {"nc1": float(nc1)}
    result.update(mean_geometry(centred_means, None if weight is None else weight.detach()[present.to(weight.device)]))

    if weight is not None:
        logits = h @ weight.detach().to(h).t()
        if bias is not None:
            logits = logits + bias.detach().to(h)
        mismatches, n = nc4_mismatches(h, logits, means, present)
        result["nc4"] = mismatches / n
    return result
