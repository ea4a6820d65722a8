"""Contrastive, robustness and hypersphere losses.

- :func:`nt_xent`: SimCLR's normalised-temperature cross-entropy (Chen et al. 2020, eq. 1).
- :func:`supcon`: supervised contrastive loss ``L_out`` (Khosla et al. 2020, eq. 2); without labels it is
  the multi-view SimCLR loss (and equals :func:`nt_xent` for two views).
- False-negative removal (Gupta et al., AAAI 2023): pairs that share a (pseudo-)label are taken out of the
  denominator without becoming positives; :func:`kmeans_pseudo_labels` gives pseudo-labels when the true
  labels are not used (our reading of the paper: its exact detection rule is not available offline).
- :func:`trades_kl`: the TRADES robustness term ``KL(p(x) || p(x_adv))`` (Zhang et al. 2019, eq. 5), used by
  ACL's fine-tuning.
- :func:`alignment` and :func:`uniformity`: Wang & Isola 2020, eqs. 4 and 5 (used by Gupta et al.).

Similarities and log-probabilities are computed in float32 even under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rcl import checks


def _fp32(device: torch.device):
    """Disable autocast for the enclosed block, so the loss is computed in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


_TEMPERATURE_HINT = "e.g. 0.5 (SimCLR, ACL) or 0.07 (the main study)"


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    *,
    false_negative_labels: Tensor | None = None,
) -> Tensor:
    """SimCLR's NT-Xent loss over the 2B views of a batch (Chen et al. 2020, eq. 1).

    With ``u = normalize(cat(z1, z2))`` (``2B`` unit vectors) and ``s_ij = u_i . u_j / tau``, for each anchor i
    with positive ``p(i)`` (the other view of the same image)::

        l_i = -log( exp(s_i,p(i)) / sum_{a != i} exp(s_ia) ),   loss = mean over the 2B anchors.

    Args:
        z1, z2: ``[B, D]`` embeddings of two views (not necessarily normalised; normalised here). Row b of
            ``z1`` and row b of ``z2`` are the positive pair.
        temperature: ``tau > 0`` (SimCLR/ACL 0.5; the main study 0.07).
        false_negative_labels: optional ``[B]`` (pseudo-)labels (Gupta et al.): for anchor i, every other view
            whose image shares i's label, apart from the positive, is removed from the denominator. It does
            not become a positive. With all-distinct labels the loss is plain NT-Xent.

    Returns:
        Scalar float32 loss (``>= 0``), differentiable with respect to ``z1`` and ``z2``.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be [B, D] with the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise ValueError(
            f"z1 and z2 hold no examples (shape {tuple(z1.shape)}): NT-Xent needs a batch of at least one pair, "
            "and an empty one has no loss to average (it would be NaN)"
        )
    checks.positive("temperature", temperature, hint=_TEMPERATURE_HINT)
    batch = z1.shape[0]
    n = 2 * batch
    with _fp32(z1.device):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        logits = z @ z.T / temperature  # [2B, 2B]
        idx = torch.arange(n, device=z.device)
        positive = (idx + batch) % n  # anchor i in view 1 <-> i + B in view 2
        drop = torch.eye(n, dtype=torch.bool, device=z.device)
        if false_negative_labels is not None:
            labels = _check_labels(false_negative_labels, batch, "false_negative_labels", z.device).repeat(2)
            same = labels[:, None] == labels[None, :]
            same[idx, positive] = False
            drop = drop | same
        logits = logits.masked_fill(drop, float("-inf"))
        return F.cross_entropy(logits, positive)


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float = 0.07,
    *,
    false_negative_labels: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss ``L_out`` (Khosla et al. 2020, eq. 2).

    The ``N = B V`` views are flattened view-major (as SupContrast does) and normalised to ``u``; with
    ``A(i)`` every view but i and ``P(i)`` the views in ``A(i)`` with i's label::

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(u_i.u_p/tau) / sum_{a in A(i)} exp(u_i.u_a/tau) ),
        L = mean of l_i over the anchors with |P(i)| > 0.

    ``labels=None`` makes each image its own class (``P(i)`` = the other views of i's image): the multi-view
    SimCLR loss, numerically equal to :func:`nt_xent` for ``V = 2``. Unlike SupContrast's code the loss is not
    multiplied by ``tau / base_tau`` (that factor is 1 at the main study's tau = 0.07).

    Args:
        features: ``[B, V, D]`` embeddings of V views per image (normalised here).
        labels: optional ``[B]`` int class labels.
        temperature: ``tau > 0``.
        false_negative_labels: optional ``[B]`` (pseudo-)labels (Gupta et al.): views sharing the anchor's label
            that are not positives are removed from ``A(i)``; they do not become positives.

    Returns:
        Scalar float32 loss. Anchors without a positive (``V = 1`` and a label nobody else has) are left out of
        the mean; if no anchor has one the loss is 0 (still differentiable, zero gradient), never NaN.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be [B, V, D] (V views per image), got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"features hold no views (shape {tuple(features.shape)}): SupCon needs B >= 1 images with V >= 1 views"
        )
    checks.positive("temperature", temperature, hint=_TEMPERATURE_HINT)
    batch, views, _ = features.shape
    n = batch * views
    with _fp32(features.device):
        device = features.device
        u = F.normalize(features.float(), dim=2).transpose(0, 1).reshape(n, -1)  # view-major [N, D]
        logits = u @ u.T / temperature
        eye = torch.eye(n, dtype=torch.bool, device=device)
        ids = torch.arange(batch, device=device) if labels is None else _check_labels(labels, batch, "labels", device)
        ids = ids.repeat(views)
        positive = (ids[:, None] == ids[None, :]) & ~eye
        drop = eye
        if false_negative_labels is not None:
            fn = _check_labels(false_negative_labels, batch, "false_negative_labels", device).repeat(views)
            drop = drop | ((fn[:, None] == fn[None, :]) & ~positive)
        n_pos = positive.sum(dim=1)
        has_positive = n_pos > 0
        logits = logits.masked_fill(drop, float("-inf"))
        # A row with a positive keeps that finite logit; rows without one are zeroed (then ignored), so a row
        # is never all -inf and neither the loss nor its gradient can be NaN. No host sync.
        logits = torch.where(has_positive[:, None], logits, 0.0)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(dim=1) / n_pos.clamp_min(1)
        return torch.where(has_positive, -mean_log_prob_pos, 0.0).sum() / has_positive.sum().clamp_min(1)


def _check_labels(labels: Tensor, batch: int, name: str, device: torch.device) -> Tensor:
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"{name} must be a [B] = [{batch}] tensor, got shape {tuple(labels.shape)}")
    return labels.to(device)


def trades_kl(logits_adv: Tensor, logits_clean: Tensor) -> Tensor:
    """TRADES' robustness term ``KL(p_clean || p_adv)``, averaged over the batch (Zhang et al. 2019, eq. 5).

    Computed as TRADES' code does: ``KLDivLoss(reduction="batchmean")(log_softmax(adv), softmax(clean))``
    ``= 1/B sum_b sum_c p_clean[b, c] (log p_clean[b, c] - log p_adv[b, c])``. Gradients flow into both
    arguments; detach ``logits_clean`` for the attack's inner maximisation if wanted.

    Args:
        logits_adv, logits_clean: ``[B, C]`` logits.

    Returns:
        Scalar float32 ``>= 0`` (0 when the two predictions agree).
    """
    if logits_adv.shape != logits_clean.shape or logits_adv.ndim != 2:
        raise ValueError(
            f"logits_adv and logits_clean must both be [B, C], got {tuple(logits_adv.shape)} and "
            f"{tuple(logits_clean.shape)}"
        )
    with _fp32(logits_adv.device):
        log_p_adv = F.log_softmax(logits_adv.float(), dim=1)
        p_clean = F.softmax(logits_clean.float(), dim=1)
        return F.kl_div(log_p_adv, p_clean, reduction="batchmean")


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """Alignment of positive pairs (Wang & Isola 2020, eq. 4): ``E ||f(x) - f(y)||_2^alpha`` on unit vectors.

    Args:
        z1, z2: ``[N, D]`` embeddings of the two views of N images (normalised here).
        alpha: exponent ``> 0`` (paper: 2).

    Returns:
        Scalar float32 in ``[0, 2^alpha]``; lower is better aligned.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with _fp32(z1.device):
        u1 = F.normalize(z1.float(), dim=1)
        u2 = F.normalize(z2.float(), dim=1)
        return (u1 - u2).norm(dim=1).pow(alpha).mean()


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    """Uniformity (Wang & Isola 2020, eq. 5): ``log E_{i<j} exp(-t ||u_i - u_j||^2)`` on unit vectors.

    Args:
        z: ``[N, D]`` embeddings, ``N >= 2`` (normalised here).
        t: ``> 0`` (paper: 2).

    Returns:
        Scalar float32 ``<= 0``; lower (more negative) means more uniformly spread on the sphere.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"z must be [N, D] with N >= 2, got shape {tuple(z.shape)}")
    with _fp32(z.device):
        u = F.normalize(z.float(), dim=1)
        sq = (2.0 - 2.0 * (u @ u.T)).clamp_min(0.0)  # ||u_i - u_j||^2 for unit vectors
        i, j = torch.triu_indices(u.shape[0], u.shape[0], offset=1, device=u.device)
        # log-mean-exp of the N(N-1)/2 pairs, stable for large t
        return torch.logsumexp(-t * sq[i, j], dim=0) - torch.log(torch.tensor(float(i.numel()), device=u.device))


@torch.no_grad()
def kmeans_pseudo_labels(
    z: Tensor,
    k: int,
    iters: int = 20,
    generator: torch.Generator | None = None,
    *,
    init: str = "k-means++",
    n_init: int = 3,
) -> Tensor:
    """Spherical (cosine) k-means cluster assignments, used as pseudo-labels for false-negative removal.

    Points are L2-normalised; each iteration assigns every point to the centroid of highest cosine
    similarity and moves each centroid to the normalised mean of its points. An emptied cluster is re-seeded
    at the point worst served by its centroid. The best of ``n_init`` seedings (highest total cosine
    similarity to the assigned centroids) is kept. Deterministic for a given ``generator`` (and device).

    Args:
        z: ``[N, D]`` features (any scale); no gradient is kept.
        k: number of clusters, ``1 <= k <= N``.
        iters: Lloyd iterations per seeding (stops early when the assignment no longer changes).
        generator: torch.Generator for the initial centroids (None: torch's global generator).
        init: ``"k-means++"`` (seeding by squared cosine distance, Arthur & Vassilvitskii 2007) or ``"random"``
            (k distinct points drawn uniformly).
        n_init: number of seedings, ``>= 1``.

    Returns:
        ``[N]`` int64 labels in ``[0, k)`` on ``z``'s device.
    """
    if z.ndim != 2:
        raise ValueError(f"z must be [N, D], got shape {tuple(z.shape)}")
    n = z.shape[0]
    checks.integer("k", k, 1, maximum=n, hint=f"at most N = {n}, the number of points")
    checks.integer("iters", iters, 0)
    checks.integer("n_init", n_init, 1)
    checks.choice("init", init, ("k-means++", "random"))
    with _fp32(z.device):
        u = F.normalize(z.detach().float(), dim=1)
        best_assign, best_score = None, -float("inf")
        for _ in range(n_init):
            centroids = _seed_centroids(u, k, init, generator)
            assign, score = _lloyd(u, centroids, iters)
            if score > best_score:
                best_assign, best_score = assign, score
        return best_assign.long()


def _seed_centroids(u: Tensor, k: int, init: str, generator: torch.Generator | None) -> Tensor:
    n = u.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if init == "random":
        first = torch.randperm(n, generator=generator, device=gen_device)[:k].to(u.device)
        return u[first].clone()
    start = int(torch.randint(n, (1,), generator=generator, device=gen_device))
    chosen = [start]
    dist = (1.0 - u @ u[start]).clamp_min(0.0) ** 2  # [N] squared cosine distance to the nearest centre
    for _ in range(1, k):
        weights = dist.to(gen_device)
        if float(weights.sum()) <= 0:  # every point sits on a centre: pick any point not chosen yet
            weights = torch.ones(n, device=gen_device)
            weights[chosen] = 0
        nxt = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(nxt)
        dist = torch.minimum(dist, (1.0 - u @ u[nxt]).clamp_min(0.0) ** 2)
    return u[torch.tensor(chosen, device=u.device)].clone()


def _lloyd(u: Tensor, centroids: Tensor, iters: int) -> tuple[Tensor, float]:
    k = centroids.shape[0]
    assign = (u @ centroids.T).argmax(dim=1)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, assign, u)
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            served = (u @ centroids.T).gather(1, assign[:, None]).squeeze(1)
            sums[empty] = u[torch.argsort(served)[: len(empty)]]
        centroids = F.normalize(sums, dim=1)
        new_assign = (u @ centroids.T).argmax(dim=1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    score = float((u @ centroids.T).gather(1, assign[:, None]).sum())
    return assign, score


__all__ = ["nt_xent", "supcon", "trades_kl", "alignment", "uniformity", "kmeans_pseudo_labels"]
