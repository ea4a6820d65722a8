"""CIFAR ResNets, projection heads, dual BatchNorm and layer taps.

- ResNet-18 (BasicBlock, [2, 2, 2, 2]) and ResNet-50 (Bottleneck, [3, 4, 6, 3], expansion 4) of
  He et al. 2016 with the CIFAR stem used by SimCLR/SupContrast and by both studies we reproduce: a 3x3
  stride-1 convolution, BatchNorm, ReLU and *no* max-pool, so a 32x32 image keeps 32x32 in ``layer1``.
  ``width`` is the number of channels of the stem (64 = the standard network); every stage scales with
  it, so ``width=8`` gives a network 64x cheaper for CPU smoke runs. Inputs are images in [0, 1]; by default
  the network does not normalise them (the main study's released code), and ``input_norm=(mean, std)`` puts a
  fixed per-channel ``(x - mean) / std`` in front of the stem (ACL's released network does this with ImageNet's
  statistics, :data:`IMAGENET_MEAN_STD`), so attacks still work in pixel units of [0, 1].
- Dual BatchNorm (Jiang et al., ACL, NeurIPS 2020, the "DS" dual stream): every BatchNorm keeps two
  sets of statistics and affine parameters, one for clean and one for adversarial inputs; which one a
  forward pass uses (and updates) is chosen with :func:`set_bn_route` / :func:`bn_route`.
- Projection heads: the main study's 2-layer MLP (Ghofrani et al.: 2048 -> 2048 -> ReLU -> 100) and
  ACL's 3-layer MLP with BatchNorm after every layer, the last one included (512 wide).
- ``forward_taps`` returns every residual block's output in one pass, for layer-wise CKA (Nguyen et al.
  2021) and per-layer linear probes.

Every module here has a ``.config`` dict of plain values from which :func:`build_model` rebuilds it
exactly; checkpoints store it so they know their architecture.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROUTES = ("clean", "adv")
ARCHS = ("resnet18", "resnet50")
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""``(mean, std)`` per RGB channel that ACL's released network subtracts and divides by inside the model
(``NormalizeByChannelMeanStd`` in its ``utils.py``), on CIFAR as well."""


# --------------------------------------------------------------------------------------------- input normalisation
class InputNorm(nn.Module):
    """``x [B, 3, H, W] in [0, 1] -> (x - mean) / std`` per channel, fixed (buffers, not parameters).

    Part of the model, so an attack's budget stays in pixel units of [0, 1]; the buffers travel in the state dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != len(std) or not mean:
            raise ValueError(f"input_norm needs (mean, std) with one value per channel each, got {mean} and {std}")
        if min(std) <= 0:
            raise ValueError(f"input_norm std must be > 0 in every channel, got {std}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _input_norm_config(input_norm) -> dict | None:
    if input_norm is None:
        return None
    if isinstance(input_norm, dict):
        mean, std = input_norm.get("mean"), input_norm.get("std")
    else:
        try:
            mean, std = input_norm
        except (TypeError, ValueError):
            raise ValueError(f"input_norm must be None or (mean, std), got {input_norm!r}") from None
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


# --------------------------------------------------------------------------------------------- dual BN
class DualBatchNorm(nn.Module):
    """Two BatchNorms, ``clean`` and ``adv``, for the two streams of ACL's DS pre-training.

    Only the routed BatchNorm is used (and, in train mode, has its running statistics updated) in a
    forward pass. Parameters and buffers of both live in the state dict as ``<name>.clean.*`` and
    ``<name>.adv.*``. The route is chosen with :func:`set_bn_route`; it starts at ``"clean"``.

    Args:
        num_features: channels C.
        dim: 2 for ``[B, C, H, W]`` inputs (BatchNorm2d), 1 for ``[B, C]`` inputs (BatchNorm1d).
    """

    def __init__(self, num_features: int, dim: int = 2, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 (BatchNorm1d) or 2 (BatchNorm2d), got {dim}")
        bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
        self.clean = bn(num_features, eps=eps, momentum=momentum)
        self.adv = bn(num_features, eps=eps, momentum=momentum)
        self.route = "clean"

    def forward(self, x: Tensor) -> Tensor:
        return self.adv(x) if self.route == "adv" else self.clean(x)

    def extra_repr(self) -> str:
        return f"route={self.route!r}"


def _check_route(route: str) -> None:
    if route not in ROUTES:
        raise ValueError(f"unknown BatchNorm route {route!r}: use 'clean' or 'adv'")


def set_bn_route(model: nn.Module, route: str) -> None:
    """Route every :class:`DualBatchNorm` in ``model`` to its ``"clean"`` or ``"adv"`` BatchNorm.

    A model without dual BatchNorm is left unchanged (it has one set of statistics for both).
    Unknown route -> ValueError.
    """
    _check_route(route)
    for module in model.modules():
        if isinstance(module, DualBatchNorm):
            module.route = route


@contextlib.contextmanager
def bn_route(model: nn.Module, route: str) -> Iterator[nn.Module]:
    """Context manager: route ``model``'s dual BatchNorms to ``route``, restore each one's route after.

    Example (ACL DS): ``with bn_route(model, "adv"): z_adv = model(x_adv)``.
    """
    _check_route(route)
    previous = [(m, m.route) for m in model.modules() if isinstance(m, DualBatchNorm)]
    set_bn_route(model, route)
    try:
        yield model
    finally:
        for module, old in previous:
            module.route = old


def _norm2d(dual_bn: bool) -> Callable[[int], nn.Module]:
    return (lambda c: DualBatchNorm(c, dim=2)) if dual_bn else nn.BatchNorm2d


# --------------------------------------------------------------------------------------------- blocks
class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                norm(planes * self.expansion),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4; ResNet-50/101/152."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm(planes * self.expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * self.expansion, 1, stride=stride, bias=False),
                norm(planes * self.expansion),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


_SPECS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def _init_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------- encoder
class ResNet(nn.Module):
    """CIFAR ResNet encoder (no classifier): ``x [B, 3, H, W] in [0, 1] -> features [B, feature_dim]``.

    Stem: 3x3 stride-1 conv (``width`` channels), BN, ReLU, no max-pool; then four stages of
    ``width * (1, 2, 4, 8)`` planes (strides 1, 2, 2, 2) and global average pooling. For 32x32 inputs the
    stage outputs are 32, 16, 8 and 4 pixels wide.

    Attributes:
        feature_dim: ``8 * width * expansion`` (512 for ResNet-18, 2048 for ResNet-50 at width 64).
        tap_names: ``["stem", "layer1.0", ..., "layer4.<last>", "pool"]``: the stem, every residual block
            and the pooled features, in network order (10 names for ResNet-18, 18 for ResNet-50).
        config: ``{"arch": "resnet18" | "resnet50", "width": int, "dual_bn": bool}``, plus
            ``"input_norm": {"mean": [...], "std": [...]}`` when the network normalises its inputs.

    ``input_norm``: None (default: the stem sees the [0, 1] pixels) or ``(mean, std)``, one value per channel
    each, applied as ``(x - mean) / std`` before the stem (ACL: :data:`IMAGENET_MEAN_STD`).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        width: int = 64,
        dual_bn: bool = False,
        input_norm: tuple[Sequence[float], Sequence[float]] | dict | None = None,
    ) -> None:
        super().__init__()
        if arch not in _SPECS:
            raise ValueError(f"unknown arch {arch!r}; choose one of: {', '.join(ARCHS)}")
        if int(width) != width or width < 1:
            raise ValueError(f"width must be a positive integer (64 is the standard network), got {width!r}")
        width = int(width)
        block, counts = _SPECS[arch]
        norm = _norm2d(dual_bn)
        self.config = {"arch": arch, "width": width, "dual_bn": bool(dual_bn)}
        norm_cfg = _input_norm_config(input_norm)
        if norm_cfg is not None:  # the key only when used: configs (and run identities) of other networks unchanged
            self.config["input_norm"] = norm_cfg
        self.input_norm = InputNorm(norm_cfg["mean"], norm_cfg["std"]) if norm_cfg is not None else nn.Identity()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm(width)
        in_planes = width
        self.tap_names = ["stem"]
        for stage, (count, stride) in enumerate(zip(counts, (1, 2, 2, 2)), start=1):
            planes = width * 2 ** (stage - 1)
            blocks = []
            for i in range(count):
                blocks.append(block(in_planes, planes, stride if i == 0 else 1, norm))
                in_planes = planes * block.expansion
                self.tap_names.append(f"layer{stage}.{i}")
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.tap_names.append("pool")
        self.feature_dim = in_planes
        _init_weights(self)

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def width(self) -> int:
        return self.config["width"]

    def _stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, 3, H, W] in [0, 1]`` -> pooled features ``[B, feature_dim]``."""
        out = F.relu(self.bn1(self.conv1(self.input_norm(x))))
        for stage in self._stages():
            out = stage(out)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward_taps(self, x: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Intermediate representations of one forward pass.

        Args:
            x: ``[B, 3, H, W] in [0, 1]``.
            names: a subset of :attr:`tap_names` (default: all). The pass stops after the last one asked for.

        Returns:
            ``{name: activation}`` in network order: ``[B, C, H', W']`` for "stem" and block outputs
            (post-ReLU, as the block returns them), ``[B, feature_dim]`` for "pool".
        """
        wanted = set(self.tap_names if names is None else names)
        unknown = [n for n in wanted if n not in self.tap_names]
        if unknown:
            raise ValueError(f"unknown tap(s) {sorted(unknown)}; valid taps are: {', '.join(self.tap_names)}")
        last = max((self.tap_names.index(n) for n in wanted), default=-1)
        taps: dict[str, Tensor] = {}
        if last < 0:
            return taps
        out = F.relu(self.bn1(self.conv1(self.input_norm(x))))
        index = 0
        if "stem" in wanted:
            taps["stem"] = out
        for stage_no, stage in enumerate(self._stages(), start=1):
            for i, block in enumerate(stage):
                if index >= last:
                    return taps
                out = block(out)
                index += 1
                name = f"layer{stage_no}.{i}"
                if name in wanted:
                    taps[name] = out
        if "pool" in wanted:
            taps["pool"] = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return taps


def resnet18(width: int = 64, dual_bn: bool = False, input_norm=None) -> ResNet:
    """CIFAR ResNet-18 encoder; ``feature_dim = 8 * width`` (512 at width 64)."""
    return ResNet("resnet18", width, dual_bn, input_norm)


def resnet50(width: int = 64, dual_bn: bool = False, input_norm=None) -> ResNet:
    """CIFAR ResNet-50 encoder; ``feature_dim = 32 * width`` (2048 at width 64)."""
    return ResNet("resnet50", width, dual_bn, input_norm)


def encoder(arch: str, width: int = 64, dual_bn: bool = False, input_norm=None) -> ResNet:
    """Encoder by name: ``"resnet18"`` or ``"resnet50"``; unknown name -> ValueError. ``input_norm``: see ResNet."""
    return ResNet(arch, width, dual_bn, input_norm)


# --------------------------------------------------------------------------------------------- heads
class ProjectionHead(nn.Module):
    """MLP projection head ``g``: ``h [B, in_dim] -> z [B, out_dim]`` (not normalised).

    ``layers - 1`` hidden blocks ``Linear -> [BatchNorm1d] -> ReLU`` of ``hidden_dim`` units, then a final
    ``Linear(hidden_dim, out_dim)``, followed by a BatchNorm1d when ``final_bn`` (no ReLU after it).
    With ``batch_norm``, a Linear followed by a BatchNorm has no bias except the first one, as in ACL's released
    ``proj_head`` (a bias in front of BatchNorm is cancelled by its mean subtraction anyway).

    - Main study (Ghofrani et al., after SupContrast): ``ProjectionHead(2048, 2048, 100)`` for ResNet-50,
      ``ProjectionHead(512, 512, 100)`` for ResNet-18: ``Linear -> ReLU -> Linear``.
    - ACL (Jiang et al., released ``proj_head``: fc1-bn1-relu-fc2-bn2-relu-fc3-bn3):
      ``ProjectionHead(512, 512, 512, layers=3, batch_norm=True, final_bn=True, dual_bn=True)``:
      ``Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear -> BN``; with ``dual_bn`` each BN is a
      :class:`DualBatchNorm` routed together with the encoder's.

    ``config``: ``{"kind": "projection_head", "in_dim", "hidden_dim", "out_dim", "layers", "batch_norm",
    "dual_bn"}``, plus ``"final_bn": True`` when set.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        layers: int = 2,
        batch_norm: bool = False,
        dual_bn: bool = False,
        final_bn: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if (dual_bn or final_bn) and not batch_norm:
            raise ValueError("dual_bn=True and final_bn=True need batch_norm=True (a head with BatchNorm)")
        self.config = {
            "kind": "projection_head",
            "in_dim": int(in_dim),
            "hidden_dim": int(hidden_dim),
            "out_dim": int(out_dim),
            "layers": int(layers),
            "batch_norm": bool(batch_norm),
            "dual_bn": bool(dual_bn),
        }
        if final_bn:  # the key only when used: configs (and run identities) of other heads unchanged
            self.config["final_bn"] = True

        def norm(features: int) -> nn.Module:
            return DualBatchNorm(features, dim=1) if dual_bn else nn.BatchNorm1d(features)

        modules: list[nn.Module] = []
        dim = in_dim
        for i in range(layers - 1):
            modules.append(nn.Linear(dim, hidden_dim, bias=not batch_norm or i == 0))
            if batch_norm:
                modules.append(norm(hidden_dim))
            modules.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        modules.append(nn.Linear(dim, out_dim, bias=not final_bn or layers == 1))
        if final_bn:
            modules.append(norm(out_dim))
        self.net = nn.Sequential(*modules)
        self.out_dim = int(out_dim)
        _init_weights(self)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class ContrastiveNet(nn.Module):
    """Encoder ``f`` followed by projection head ``g``: ``x [B, 3, H, W] in [0, 1] -> z = g(f(x)) [B, out_dim]``.

    ``z`` is *not* normalised: the contrastive losses in :mod:`rcl.losses` normalise it.

    ``config``: ``{"kind": "contrastive", "encoder": <encoder config>, "head": <head config>}``.
    """

    def __init__(self, encoder: ResNet, head: ProjectionHead) -> None:
        super().__init__()
        if head.config["in_dim"] != encoder.feature_dim:
            raise ValueError(
                f"head expects {head.config['in_dim']}-d input but the encoder gives {encoder.feature_dim}-d "
                f"features: use ProjectionHead({encoder.feature_dim}, ...)"
            )
        self.encoder = encoder
        self.head = head

    @property
    def config(self) -> dict:
        return {"kind": "contrastive", "encoder": dict(self.encoder.config), "head": dict(self.head.config)}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class Classifier(nn.Module):
    """Encoder followed by a linear layer: ``x [B, 3, H, W] in [0, 1] -> logits [B, num_classes]``.

    ``normalize_logits=True`` L2-normalises the logits, as every head in the main study's released code
    does (off by default: it is a defect we do not copy, kept as an option to study its effect). With
    unit-norm logits every logit lies in [-1, 1], so the softmax is nearly uniform: for 10 classes the
    largest probability any logit vector on the unit sphere can give is about 0.24, the cross-entropy can
    never fall below about 1.42 (vs 2.30 for a uniform guess) and its gradients stay tiny, unless a
    temperature/scale multiplies the logits (as cosine classifiers do). Accuracy (argmax) is unaffected;
    PGD on cross-entropy sees a flatter loss.

    ``config``: ``{"kind": "classifier", "encoder": <encoder config>, "num_classes": int,
    "normalize_logits": bool}``.
    """

    def __init__(self, encoder: ResNet, num_classes: int, normalize_logits: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.fc = nn.Linear(encoder.feature_dim, num_classes)
        self.num_classes = int(num_classes)
        self.normalize_logits = bool(normalize_logits)

    @property
    def config(self) -> dict:
        return {
            "kind": "classifier",
            "encoder": dict(self.encoder.config),
            "num_classes": self.num_classes,
            "normalize_logits": self.normalize_logits,
        }

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc(self.encoder(x))
        if self.normalize_logits:
            logits = F.normalize(logits, dim=1)
        return logits


# --------------------------------------------------------------------------------------------- rebuild
def build_model(config: dict) -> nn.Module:
    """Rebuild a model (fresh weights) from its ``.config``.

    Encoder configs have ``"arch"`` (``{"arch", "width", "dual_bn"}``); the others carry a ``"kind"``:
    ``"projection_head"``, ``"contrastive"`` or ``"classifier"``.
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (a model's .config), got {type(config).__name__}")
    kind = config.get("kind", "encoder" if "arch" in config else None)
    if kind == "encoder":
        return ResNet(config["arch"], config.get("width", 64), config.get("dual_bn", False), config.get("input_norm"))
    if kind == "projection_head":
        return ProjectionHead(
            config["in_dim"],
            config["hidden_dim"],
            config["out_dim"],
            layers=config.get("layers", 2),
            batch_norm=config.get("batch_norm", False),
            dual_bn=config.get("dual_bn", False),
            final_bn=config.get("final_bn", False),
        )
    if kind == "contrastive":
        return ContrastiveNet(build_model(config["encoder"]), build_model(config["head"]))
    if kind == "classifier":
        return Classifier(build_model(config["encoder"]), config["num_classes"], config.get("normalize_logits", False))
    raise ValueError(
        f"cannot build a model from config {config!r}: expected an encoder config with 'arch' or a 'kind' of "
        "'projection_head', 'contrastive' or 'classifier' (use a model's .config)"
    )


def describe_config(config: dict) -> str:
    """Short human-readable architecture, e.g. ``resnet18(width=8)``, ``Classifier(resnet18(width=8), 10 classes)``."""
    if not isinstance(config, dict):
        return repr(config)
    kind = config.get("kind", "encoder" if "arch" in config else None)
    if kind == "encoder":
        dual = ", dual_bn" if config.get("dual_bn") else ""
        norm = ", input_norm" if config.get("input_norm") else ""
        return f"{config.get('arch')}(width={config.get('width')}{dual}{norm})"
    if kind == "projection_head":
        bn = (", bn after every layer" if config.get("final_bn") else ", bn") if config.get("batch_norm") else ""
        dual = ", dual_bn" if config.get("dual_bn") else ""
        return (
            f"head({config.get('in_dim')}-{config.get('hidden_dim')}-{config.get('out_dim')}, "
            f"{config.get('layers')} layers{bn}{dual})"
        )
    if kind == "contrastive":
        return f"ContrastiveNet({describe_config(config.get('encoder'))}, {describe_config(config.get('head'))})"
    if kind == "classifier":
        norm = ", normalized logits" if config.get("normalize_logits") else ""
        return f"Classifier({describe_config(config.get('encoder'))}, {config.get('num_classes')} classes{norm})"
    return repr(config)


def _without_dual_bn(config: dict) -> dict:
    out = copy.deepcopy(config)
    for part in (out, out.get("encoder"), out.get("head")):
        if isinstance(part, dict) and "dual_bn" in part:
            part["dual_bn"] = False
    return out


def collapse_dual_bn(model: nn.Module, route: str = "adv") -> nn.Module:
    """A copy of ``model`` with single BatchNorms holding the ``route`` branch of each dual BatchNorm.

    This is how ACL fine-tunes a DS pre-trained encoder (its released code keeps the adversarial branch
    by default). The copy is built with :func:`build_model` (``dual_bn=False`` in its config), on the same
    device; a model without dual BatchNorm is simply copied.
    """
    _check_route(route)
    other = "clean" if route == "adv" else "adv"
    duals = {name for name, m in model.named_modules() if isinstance(m, DualBatchNorm)}
    state = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        parent, _, branch = owner.rpartition(".")
        if parent in duals and branch == route:
            state[f"{parent}.{leaf}" if parent else leaf] = value
        elif parent in duals and branch == other:
            continue
        else:
            state[key] = value
    single = build_model(_without_dual_bn(model.config))
    single.load_state_dict(state, strict=True)
    param = next(model.parameters(), None)
    if param is not None:
        single = single.to(param.device)
    single.train(model.training)
    return single


__all__ = [
    "ARCHS",
    "IMAGENET_MEAN_STD",
    "ROUTES",
    "InputNorm",
    "DualBatchNorm",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet50",
    "encoder",
    "ProjectionHead",
    "ContrastiveNet",
    "Classifier",
    "set_bn_route",
    "bn_route",
    "build_model",
    "describe_config",
    "collapse_dual_bn",
]
