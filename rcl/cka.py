"""Centered Kernel Alignment (CKA): how similar two sets of representations of the same examples are.

- Kornblith, Norouzi, Lee, Hinton, *Similarity of Neural Network Representations Revisited* (ICML 2019):
  ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``HSIC(K, L) = tr(K H L H) / (n - 1)^2``,
  ``H = I - 11^T / n``. Linear CKA uses ``K = X X^T``; RBF CKA uses ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``
  with ``sigma = sigma_frac * median distance`` (their ``gram_rbf(x, threshold)``). It is invariant to orthogonal
  transforms and isotropic scaling of either representation, but not to arbitrary invertible linear maps.
- Nguyen, Raghu, Kornblith, *Do Wide and Deep Networks Learn the Same Things?* (ICLR 2021), eq. 2-3: minibatch CKA.
  Each batch of ``n`` examples gives the UNBIASED estimator of Song et al. (JMLR 2012)
  ``HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))``
  (``K~``, ``L~``: Gram matrices with zeroed diagonal); the HSICs are summed over batches and
  ``CKA = sum HSIC_1(K, L) / sqrt(sum HSIC_1(K, K) sum HSIC_1(L, L))``. The estimate does not depend on the batch
  size the way the biased estimator does, so a layer-by-layer matrix fits in one pass over the data.

All arithmetic is float64. Representations ``[N, ...]`` are flattened to ``[N, D]`` (one row per example).

**Noise** (:class:`GramBootstrap`). Each tap's Gram matrix over all ``N`` images is computed once (:func:`tap_grams`);
the point estimate is the unbiased CKA on all of them, and its uncertainty comes from half-samples: ``N / 2`` images
drawn without replacement (the unbiased HSIC needs distinct examples), the same draw for every model and input in
a comparison. For an estimator whose variance is ``s^2 / m``, ``Var(half - full) = s^2 (2 / N - 1 / N) = s^2 / N``,
the full estimate's own variance, so ``full + (half - full)`` percentiles are its 95 % interval without rescaling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rcl.attacks import check_images
from rcl.runtime import memory_format, model_device

__all__ = [
    "linear_cka", "rbf_cka", "unbiased_hsic", "MinibatchCKA", "LayerCKA", "layer_cka", "tap_grams", "cka_from_grams",
    "GramBootstrap",
]  # fmt: skip

MIN_BATCH = 4  # the unbiased HSIC divides by n (n - 3)
MIN_EXAMPLES = 3  # the biased CKA of 2 examples is 1 whatever they are: centred, each representation is rank one


def _as_matrix(x: Tensor, name: str) -> Tensor:
    """``[N, ...]`` -> float64 ``[N, D]``, with ``N >= MIN_EXAMPLES``."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a tensor [N, ...], got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < MIN_EXAMPLES:
        raise ValueError(
            f"{name} must have at least {MIN_EXAMPLES} examples along dim 0, got shape {tuple(x.shape)}: with 2, "
            "the centred representations are rank one and CKA is 1 whatever they hold"
        )
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf: CKA needs finite features (did the network diverge?)")
    if not bool((x != x[:1]).any()):
        raise ValueError(
            f"{name} is the same for all {x.shape[0]} examples (e.g. a layer whose units are all dead): its "
            "similarity to anything is undefined (0/0); leave that layer out"
        )
    return x


def _check_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same examples (same N), got N = {x.shape[0]} and {y.shape[0]}: "
            "pass the representations of the same inputs, in the same order"
        )
    return x, y.to(x.device)


def _cka_from_grams(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741
    """Biased CKA of two ``[N, N]`` Gram matrices (Kornblith et al. ``cka(gram_x, gram_y)``)."""
    kc, lc = _center_gram(k), _center_gram(l)
    return (kc * lc).sum() / (kc.norm() * lc.norm())


def _center_gram(k: Tensor) -> Tensor:
    """``H K H`` without forming ``H``: subtract row and column means, add back the grand mean."""
    means = k.mean(dim=0)
    means = means - means.mean() / 2
    return k - means[:, None] - means[None, :]


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear CKA (Kornblith et al. 2019, eq. 5) between two representations of the same ``N`` examples.

    Args:
        x: ``[N, ...]`` (flattened to ``[N, D1]``). y: ``[N, ...]`` (flattened to ``[N, D2]``).

    Returns:
        float64 scalar in [0, 1]: ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred
        ``X_c``, ``Y_c`` (equal to ``tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))``).

    Raises:
        ValueError: fewer than ``MIN_EXAMPLES`` examples, different ``N``, NaN or inf in either input, or an
            input that is the same for every example (CKA would be 0/0).
    """
    x, y = _check_pair(x, y)
    n = x.shape[0]
    if n <= max(x.shape[1], y.shape[1]):  # Gram form: N x N matrices are the smaller ones
        return _cka_from_grams(x @ x.T, y @ y.T)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    cross = (y.T @ x).square().sum()
    return cross / ((x.T @ x).norm() * (y.T @ y).norm())


def _median(values: Tensor) -> Tensor:
    """NumPy's median (the mean of the two middle values for an even count); works past torch.quantile's size cap."""
    flat = values.flatten()
    count = flat.numel()
    upper = flat.kthvalue(count // 2 + 1).values
    if count % 2:
        return upper
    return (flat.kthvalue(count // 2).values + upper) / 2


def _rbf_gram(x: Tensor, sigma_frac: float) -> Tensor:
    """Kornblith et al.'s ``gram_rbf(x, threshold=sigma_frac)``: bandwidth^2 = sigma_frac^2 * median sq. distance."""
    dots = x @ x.T
    sq_norms = dots.diagonal()
    sq_dist = (sq_norms[:, None] + sq_norms[None, :] - 2 * dots).clamp_min(0.0)
    median = _median(sq_dist)  # over all N^2 entries, diagonal zeros included, as in their code
    if not median > 0:
        raise ValueError(
            "median squared distance between examples is 0 (most examples are identical): RBF CKA has no "
            "bandwidth; use linear_cka or more varied examples"
        )
    return torch.exp(-sq_dist / (2 * sigma_frac**2 * median))


def rbf_cka(x: Tensor, y: Tensor, sigma_frac: float = 0.8) -> Tensor:
    """RBF-kernel CKA (Kornblith et al. 2019): ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))``.

    Args:
        x: ``[N, ...]``; y: ``[N, ...]`` (flattened per example).
        sigma_frac: bandwidth as a fraction of the median distance between examples, computed separately for x and
            y (``sigma^2 = sigma_frac^2 * median ||x_i - x_j||^2``; Kornblith et al. report 0.2, 0.4 and 0.8).

    Returns:
        float64 scalar in [0, 1].
    """
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be > 0 (Kornblith et al. use 0.2-0.8), got {sigma_frac!r}")
    x, y = _check_pair(x, y)
    return _cka_from_grams(_rbf_gram(x, sigma_frac), _rbf_gram(y, sigma_frac))


def _linear_grams(features: Sequence[Tensor], batch: int, device: torch.device | None) -> Tensor:
    """Linear Gram matrices ``[L, n, n]`` float64 with zeroed diagonals, one per layer ``[n, ...]``.

    Features are centred per batch first: the unbiased HSIC is unchanged by adding a constant vector to every
    example's features (it is a U-statistic of a translation-invariant quantity), and centring avoids cancellation.
    """
    grams = []
    for i, f in enumerate(features):
        if not torch.is_tensor(f) or f.dim() < 1 or f.shape[0] != batch:
            shape = tuple(f.shape) if torch.is_tensor(f) else type(f).__name__
            raise ValueError(f"every layer's features must be [B = {batch}, ...]; layer {i} has {shape}")
        m = f.detach().reshape(batch, -1).to(device=device, dtype=torch.float64)
        m = m - m.mean(dim=0)
        grams.append(m @ m.T)
    grams = torch.stack(grams)
    grams.diagonal(dim1=1, dim2=2).zero_()
    return grams


def unbiased_hsic(grams_x: Tensor, grams_y: Tensor) -> Tensor:
    """Unbiased HSIC (Song et al. 2012, eq. 5; Nguyen et al. 2021, eq. 3) for every pair of layers.

    Args:
        grams_x: ``[Lx, n, n]`` Gram matrices; grams_y: ``[Ly, n, n]``, same ``n >= 4`` examples. Diagonals are
            ignored (zeroed here).

    Returns:
        ``[Lx, Ly]`` float64: ``HSIC_1(K_i, L_j)``, computed with matrix products for all pairs at once.
    """
    if grams_x.dim() != 3 or grams_y.dim() != 3 or grams_x.shape[1:] != grams_y.shape[1:]:
        raise ValueError(f"grams must be [L, n, n] with the same n, got {tuple(grams_x.shape)}, {tuple(grams_y.shape)}")
    n = grams_x.shape[-1]
    if n < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC needs batches of at least {MIN_BATCH} examples, got {n}")
    kx = grams_x.to(torch.float64).clone()
    ky = grams_y.to(device=kx.device, dtype=torch.float64).clone()
    kx.diagonal(dim1=1, dim2=2).zero_()
    ky.diagonal(dim1=1, dim2=2).zero_()
    return _unbiased_hsic_zero_diag(kx, ky)


def _unbiased_hsic_zero_diag(kx: Tensor, ky: Tensor) -> Tensor:
    """:func:`unbiased_hsic` for float64 Gram stacks whose diagonals are already zero."""
    n = kx.shape[-1]
    trace = kx.flatten(1) @ ky.flatten(1).T  # tr(K L) = sum(K * L) for symmetric K, L      [Lx, Ly]
    row_x, row_y = kx.sum(dim=2), ky.sum(dim=2)  # K 1                                        [L, n]
    total = torch.outer(row_x.sum(dim=1), row_y.sum(dim=1))  # (1^T K 1)(1^T L 1)            [Lx, Ly]
    cross = row_x @ row_y.T  # 1^T K L 1 = (K 1)^T (L 1)                                       [Lx, Ly]
    return (trace + total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


class MinibatchCKA:
    """Linear CKA between layers, accumulated over minibatches with the unbiased HSIC (Nguyen et al. 2021).

    ``MinibatchCKA(n_layers)`` compares a model's layers with each other (symmetric matrix, unit diagonal);
    ``MinibatchCKA(n_layers, n_layers_y)`` compares ``n_layers`` representations with ``n_layers_y`` others of the
    same examples (another model, or the same model on adversarial inputs).

    Each :meth:`update` computes every layer's Gram matrix of the batch once and the HSIC of all layer pairs with
    matrix products. Accumulators (float64, on the features' device): ``hsic_xy [n_x, n_y]``, ``hsic_xx [n_x]``,
    ``hsic_yy [n_y]``; ``n_batches`` and ``n_examples`` count what went in.
    """

    def __init__(self, n_layers: int, n_layers_y: int | None = None):
        for name, value in (("n_layers", n_layers), ("n_layers_y", n_layers_y)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.n_layers = n_layers
        self.n_layers_y = n_layers_y
        self.cross = n_layers_y is not None
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        n_y = self.n_layers_y if self.cross else self.n_layers
        self.hsic_xy = torch.zeros(self.n_layers, n_y, dtype=torch.float64)
        self.hsic_xx = torch.zeros(self.n_layers, dtype=torch.float64)
        self.hsic_yy = torch.zeros(n_y, dtype=torch.float64)
        self.n_batches = 0
        self.n_examples = 0

    def update(self, features: Sequence[Tensor], features_y: Sequence[Tensor] | None = None) -> None:
        """Add one batch.

        Args:
            features: ``n_layers`` tensors ``[B, ...]`` (any trailing shape, flattened), the same ``B >= 4`` examples.
            features_y: cross version only: ``n_layers_y`` tensors ``[B, ...]`` of the same examples, in order.
        """
        features = list(features)
        if len(features) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} feature tensors (one per layer), got {len(features)}")
        if self.cross and features_y is None:
            raise ValueError(f"this MinibatchCKA compares two sets of layers: pass features_y ({self.n_layers_y})")
        if not self.cross and features_y is not None:
            raise ValueError("features_y given, but this MinibatchCKA was built without n_layers_y (self version)")
        if not torch.is_tensor(features[0]) or features[0].dim() < 1:
            raise ValueError("features must be tensors [B, ...]")
        batch = features[0].shape[0]
        if batch < MIN_BATCH:
            raise ValueError(
                f"the unbiased HSIC needs batches of at least {MIN_BATCH} examples, got {batch}: "
                "use a larger batch (Nguyen et al. use 256) or drop the small last batch"
            )
        device = features[0].device
        gx = _linear_grams(features, batch, device)
        if self.hsic_xy.device != device:
            self._move(device)
        if not self.cross:
            hsic = _unbiased_hsic_zero_diag(gx, gx)
            self.hsic_xy += hsic
            diag = hsic.diagonal()
            self.hsic_xx += diag
            self.hsic_yy += diag
        else:
            features_y = list(features_y)
            if len(features_y) != self.n_layers_y:
                raise ValueError(f"expected {self.n_layers_y} tensors in features_y, got {len(features_y)}")
            gy = _linear_grams(features_y, batch, device)
            self.hsic_xy += _unbiased_hsic_zero_diag(gx, gy)
            self.hsic_xx += _self_hsic(gx)
            self.hsic_yy += _self_hsic(gy)
        self.n_batches += 1
        self.n_examples += batch

    def _move(self, device: torch.device) -> None:
        self.hsic_xy = self.hsic_xy.to(device)
        self.hsic_xx = self.hsic_xx.to(device)
        self.hsic_yy = self.hsic_yy.to(device)

    def compute(self) -> Tensor:
        """``[n_layers, n_layers_y]`` float64 CKA on the CPU: ``hsic_xy / sqrt(hsic_xx hsic_yy^T)``.

        Entries can be NaN where a layer is constant (its HSIC with itself is 0), and fall slightly outside [0, 1]
        when few examples were seen (the estimator is unbiased, not bounded).
        """
        if self.n_batches == 0:
            raise RuntimeError("no batch seen yet: call update(features) before compute()")
        denom = torch.outer(self.hsic_xx, self.hsic_yy).sqrt()
        return (self.hsic_xy / denom).cpu()


def _self_hsic(grams: Tensor) -> Tensor:
    """``HSIC_1(K_l, K_l)`` for every layer of a ``[L, n, n]`` stack (zero diagonals): the diagonal of the pairs."""
    n = grams.shape[-1]
    trace = grams.square().flatten(1).sum(dim=1)
    rows = grams.sum(dim=2)
    total = rows.sum(dim=1).square()
    cross = rows.square().sum(dim=1)
    return (trace + total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


class LayerCKA(NamedTuple):
    """What :func:`layer_cka` returns (also unpacks as ``matrix, taps_a, taps_b = layer_cka(...)``)."""

    matrix: Tensor  # [len(taps_a), len(taps_b)] float64, CPU
    taps_a: list[str]  # rows: model_a's taps
    taps_b: list[str]  # columns: model_b's taps (model_a's when model_b is None)


def _batches(data: Any, batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Float ``[B, 3, H, W]`` batches in [0, 1] on ``device`` from a Split-like object, a tensor or an iterable."""
    if hasattr(data, "images"):
        images = data.images
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device)
            yield chunk.float() / 255 if chunk.dtype == torch.uint8 else chunk.float()
    elif torch.is_tensor(data):
        check_images(data, check_range=False, name="data")
        for start in range(0, data.shape[0], batch_size):
            yield _in_range(data[start : start + batch_size].to(device).float())
    elif isinstance(data, Iterable):
        for item in data:  # e.g. an rcl.data.DeviceLoader yielding (x, y)
            x = item[0] if isinstance(item, (tuple, list)) else item
            yield _in_range(x.to(device).float() if torch.is_tensor(x) and x.is_floating_point() else x)
    else:
        raise ValueError(
            f"data must be an rcl.data.Split, a float tensor [N, 3, H, W] or an iterable of batches, "
            f"got {type(data).__name__}"
        )


def _in_range(x: Tensor) -> Tensor:
    """A batch of ``data`` checked as :func:`rcl.attacks.pgd` checks its images (float, channels first, in [0, 1])."""
    check_images(x, name="data")
    return x


def _taps(model: nn.Module, x: Tensor, names: Sequence[str] | None) -> dict[str, Tensor]:
    if not hasattr(model, "forward_taps"):
        raise ValueError(f"{type(model).__name__} has no forward_taps(x, names): pass an rcl.models.ResNet encoder")
    available = getattr(model, "tap_names", None)
    if names is not None and available is not None:
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(f"unknown taps {unknown} for {type(model).__name__}; choose from {list(available)}")
    out = model.forward_taps(x, names=None if names is None else list(names))
    if names is not None:
        missing = [n for n in names if n not in out]
        if missing:
            raise ValueError(f"taps {missing} not returned by {type(model).__name__}; available: {list(out)}")
        out = {n: out[n] for n in names}
    return out


def layer_cka(
    model_a: nn.Module,
    data: Any,
    *,
    model_b: nn.Module | None = None,
    taps: Sequence[str] | None = None,
    taps_b: Sequence[str] | None = None,
    inputs_b: Callable[[Tensor], Tensor] | None = None,
    max_examples: int | None = None,
    batch_size: int = 256,
) -> LayerCKA:
    """Layer-by-layer minibatch linear CKA (Nguyen et al. 2021) over a dataset, in one pass.

    Args:
        model_a: a model with ``forward_taps(x, names=None) -> {name: [B, ...]}`` (an ``rcl.models.ResNet``).
        data: an ``rcl.data.Split`` (uint8 images ``[N, 3, 32, 32]``), a float tensor ``[N, 3, H, W]`` in [0, 1],
            or an iterable of batches ``x`` or ``(x, y)`` (e.g. an ``rcl.data.DeviceLoader``). Read in order.
        model_b: the model for the columns; default ``model_a``.
        taps: model_a's tap names (default: all it returns); taps_b: model_b's (default: ``taps``).
        inputs_b: optional ``x -> x'`` applied to each batch before model_b sees it, e.g.
            ``lambda x: attack.run(model, x, y)`` for clean-vs-adversarial CKA. It runs with gradients enabled.
        max_examples: stop after this many examples (default: all).
        batch_size: examples per CKA minibatch (Nguyen et al.: 256). A last batch with fewer than 4 examples is
            skipped (the unbiased estimator needs 4).

    Returns:
        :class:`LayerCKA` ``(matrix [La, Lb] float64, taps_a, taps_b)``. With neither ``model_b`` nor ``inputs_b``
        the matrix is the symmetric self-similarity of model_a's layers (unit diagonal); otherwise row i, column j
        compares model_a's tap i on ``x`` with model_b's tap j on ``inputs_b(x)``.

    Models run in eval mode and float32 (no autocast: CKA is a measurement, not the hot loop); every submodule's
    training flag is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < MIN_BATCH:
        raise ValueError(f"batch_size must be an int >= {MIN_BATCH} (unbiased HSIC), got {batch_size!r}")
    if max_examples is not None and (not isinstance(max_examples, int) or max_examples < MIN_BATCH):
        raise ValueError(f"max_examples must be None or an int >= {MIN_BATCH}, got {max_examples!r}")
    cross = model_b is not None or inputs_b is not None
    model_b = model_a if model_b is None else model_b
    taps_b = taps if taps_b is None else taps_b
    device = model_device(model_a)
    fmt = memory_format(device)
    models = {id(m): m for m in (model_a, model_b)}.values()
    flags = [(m, m.training) for model in models for m in model.modules()]
    cka: MinibatchCKA | None = None
    names_a: list[str] = []
    names_b: list[str] = []
    seen = 0
    try:
        for model in models:
            model.eval()
        for x in _batches(data, batch_size, device):
            if max_examples is not None:
                x = x[: max_examples - seen]
            if x.shape[0] < MIN_BATCH:
                break
            x_b = inputs_b(x).detach() if inputs_b is not None else x
            with torch.no_grad():
                feats_a = _taps(model_a, x.contiguous(memory_format=fmt), taps)
                feats_b = _taps(model_b, x_b.to(device).contiguous(memory_format=fmt), taps_b) if cross else None
            if cka is None:
                names_a = list(feats_a)
                names_b = list(feats_b) if cross else names_a
                cka = MinibatchCKA(len(names_a), len(names_b) if cross else None)
            cka.update(list(feats_a.values()), list(feats_b.values()) if cross else None)
            seen += x.shape[0]
            if max_examples is not None and seen >= max_examples:
                break
    finally:
        for module, flag in flags:
            module.training = flag
    if cka is None:
        raise ValueError(f"no batch of at least {MIN_BATCH} examples in data: CKA needs more examples")
    return LayerCKA(cka.compute(), names_a, names_b)


def tap_grams(model: nn.Module, x: Tensor, *, taps: Sequence[str] | None = None, batch_size: int = 256):
    """Every tap's linear Gram matrix over all of ``x``: ``(names, grams [L, N, N] float64 CPU)``, features centred.

    model: an ``rcl.models.ResNet`` (``forward_taps``), run in eval mode and float32 (its flags restored);
    x: float ``[N, 3, H, W]`` in [0, 1]. Memory: ``L N^2`` doubles (10 taps of 1,000 images: 80 MB).
    """
    x = _as_images(x, "x")
    device = model_device(model)
    fmt = memory_format(device)
    flags = [(m, m.training) for m in model.modules()]
    features: dict[str, list[Tensor]] = {}
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                chunk = x[start : start + batch_size].to(device).float().contiguous(memory_format=fmt)
                for name, f in _taps(model, chunk, taps).items():
                    features.setdefault(name, []).append(f.float().reshape(len(chunk), -1).cpu())
    finally:
        for module, flag in flags:
            module.training = flag
    grams = []
    for parts in features.values():
        m = torch.cat(parts)
        m = m - m.mean(dim=0)
        grams.append((m @ m.T).to(torch.float64))
    return list(features), torch.stack(grams)


def _as_images(x: Tensor, name: str) -> Tensor:
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be float images [N, 3, H, W] in [0, 1], got {got}")
    if x.shape[0] < 2 * MIN_BATCH:
        raise ValueError(
            f"{name} must hold at least {2 * MIN_BATCH} images (half-samples of {MIN_BATCH}), got {len(x)}"
        )
    return x


def cka_from_grams(grams_a: Tensor, grams_b: Tensor) -> Tensor:
    """Unbiased linear CKA ``[La, Lb]`` between two Gram stacks ``[La, n, n]``, ``[Lb, n, n]`` of the same ``n >= 4``
    examples (their diagonals are ignored): one minibatch of :class:`MinibatchCKA` holding every example."""
    if grams_a.dim() != 3 or grams_b.dim() != 3 or grams_a.shape[1:] != grams_b.shape[1:]:
        raise ValueError(f"grams must be [L, n, n] with the same n, got {tuple(grams_a.shape)}, {tuple(grams_b.shape)}")
    ka, kb = grams_a.to(torch.float64).clone(), grams_b.to(torch.float64).clone()
    ka.diagonal(dim1=1, dim2=2).zero_()
    kb.diagonal(dim1=1, dim2=2).zero_()
    return _unbiased_hsic_zero_diag(ka, kb) / torch.outer(_self_hsic(ka), _self_hsic(kb)).sqrt()


class GramBootstrap:
    """CKA with bootstrap intervals over the images, for comparisons between models and inputs on the same images.

    ``GramBootstrap({name: grams [L, N, N]}, resamples=200, seed=0)`` draws ``resamples`` half-samples of the ``N``
    images once; :meth:`cka` gives a CKA matrix on all images and on each half-sample (the same images for every
    name), :func:`interval` turns any statistic of those into ``(value, low, high)``. Example: the redundancy of
    model ``a`` minus that of ``b``, with its interval::

        boot = GramBootstrap({"a": tap_grams(enc_a, x)[1], "b": tap_grams(enc_b, x)[1]})
        diff = mean_off_diagonal(boot.cka("a", "a")) - mean_off_diagonal(boot.cka("b", "b"))   # [1 + resamples]
        value, low, high = GramBootstrap.interval(diff)
    """

    def __init__(self, grams: dict[str, Tensor], *, resamples: int = 200, seed: int = 0):
        sizes = {name: tuple(g.shape[1:]) for name, g in grams.items()}
        if not grams or len(set(sizes.values())) != 1 or any(g.dim() != 3 for g in grams.values()):
            raise ValueError(f"grams must be a non-empty dict of [L, N, N] stacks of the same N images, got {sizes}")
        n = next(iter(grams.values())).shape[-1]
        if n < 2 * MIN_BATCH:
            raise ValueError(f"the bootstrap needs at least {2 * MIN_BATCH} images, got {n}")
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 20:
            raise ValueError(f"resamples must be an int >= 20 (for a 95 % interval), got {resamples!r}")
        self.grams = dict(grams)
        self.n = n
        gen = torch.Generator().manual_seed(seed)
        self.draws = [torch.randperm(n, generator=gen)[: n // 2] for _ in range(resamples)]
        self._cache: dict[tuple[str, str], Tensor] = {}

    def add(self, name: str, grams: Tensor) -> None:
        """Add a Gram stack ``[L, N, N]`` of the same images (e.g. a model trained later in the chapter)."""
        if grams.dim() != 3 or grams.shape[1:] != (self.n, self.n):
            raise ValueError(
                f"{name}: grams must be [L, {self.n}, {self.n}] (the same images), got {tuple(grams.shape)}"
            )
        self.grams[name] = grams
        self._cache = {k: v for k, v in self._cache.items() if name not in k}

    def cka(self, a: str, b: str) -> Tensor:
        """CKA between the taps of ``a`` (rows) and ``b`` (columns): ``[1 + resamples, La, Lb]``, row 0 on all
        images, then one per half-sample."""
        for name in (a, b):
            if name not in self.grams:
                raise KeyError(f"no Gram matrices named {name!r}; known: {', '.join(self.grams)}")
        if (a, b) not in self._cache:
            ga, gb = self.grams[a], self.grams[b]
            rows = [cka_from_grams(ga, gb)]
            for idx in self.draws:
                rows.append(cka_from_grams(ga[:, idx][:, :, idx], gb[:, idx][:, :, idx]))
            self._cache[a, b] = torch.stack(rows)
        return self._cache[a, b]

    @staticmethod
    def interval(samples: Tensor, level: float = 0.95) -> tuple[float, float, float]:
        """``(value, low, high)`` of a statistic computed on all images (``samples[0]``) and on each half-sample
        (``samples[1:]``): the value plus the ``level`` percentiles of the half-samples' deviations from it."""
        samples = torch.as_tensor(samples, dtype=torch.float64).flatten()
        if samples.numel() < 21:
            raise ValueError(f"samples must hold the full value and at least 20 resamples, got {samples.numel()}")
        value, deviations = samples[0], samples[1:] - samples[0]
        tail = (1 - level) / 2
        low, high = torch.quantile(deviations, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
        return value.item(), value.item() + low, value.item() + high
