"""rcl.models: shapes, taps, CIFAR stem, dual BatchNorm routing, config round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rcl.models import (
    IMAGENET_MEAN_STD,
    Classifier,
    ContrastiveNet,
    DualBatchNorm,
    ProjectionHead,
    ResNet,
    bn_route,
    build_model,
    collapse_dual_bn,
    describe_config,
    encoder,
    resnet18,
    resnet50,
    set_bn_route,
)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("arch", "width", "feature_dim"),
    [("resnet18", 4, 32), ("resnet18", 8, 64), ("resnet50", 4, 128), ("resnet50", 8, 256)],
)
def test_feature_shapes(arch, width, feature_dim, x):
    model = encoder(arch, width)
    assert model.feature_dim == feature_dim
    assert model(x).shape == (4, feature_dim)


def test_standard_widths_give_paper_feature_dims():
    # 64 is the standard network: 512-d (ResNet-18) and 2048-d (ResNet-50) features, no forward needed.
    assert resnet18().feature_dim == 512
    assert resnet50().feature_dim == 2048
    # ResNet-18 has 11.2M parameters without its fc layer in torchvision; the CIFAR stem is smaller (3x3 conv).
    n_params = sum(p.numel() for p in resnet18().parameters())
    assert 11.1e6 < n_params < 11.2e6


def test_tap_names_and_spatial_sizes(x):
    model = resnet18(width=4).eval()
    expected = ["stem"] + [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in (0, 1)] + ["pool"]
    assert model.tap_names == expected
    taps = model.forward_taps(x)
    assert list(taps) == expected
    sizes = {name: t.shape[-1] for name, t in taps.items() if t.ndim == 4}
    # no max-pool: the stem and layer1 keep 32x32; then 16, 8, 4
    assert sizes["stem"] == 32 and sizes["layer1.1"] == 32
    assert sizes["layer2.0"] == 16 and sizes["layer3.1"] == 8 and sizes["layer4.1"] == 4
    channels = [taps[f"layer{s}.1"].shape[1] for s in (1, 2, 3, 4)]
    assert channels == [4, 8, 16, 32]
    torch.testing.assert_close(taps["pool"], model(x))
    torch.testing.assert_close(taps["pool"], taps["layer4.1"].mean(dim=(2, 3)))


def test_resnet50_taps(x):
    model = resnet50(width=4)
    assert len(model.tap_names) == 1 + 3 + 4 + 6 + 3 + 1
    taps = model.forward_taps(x[:2], names=["layer1.2", "layer4.2"])
    assert list(taps) == ["layer1.2", "layer4.2"]
    assert taps["layer1.2"].shape == (2, 16, 32, 32)
    assert taps["layer4.2"].shape == (2, 128, 4, 4)


def test_forward_taps_subset_matches_full_and_rejects_unknown(x):
    model = resnet18(width=4).eval()
    full = model.forward_taps(x)
    part = model.forward_taps(x, names=["layer2.0", "stem"])
    assert list(part) == ["stem", "layer2.0"]  # network order
    torch.testing.assert_close(part["layer2.0"], full["layer2.0"])
    with pytest.raises(ValueError, match="unknown tap"):
        model.forward_taps(x, names=["layer9.0"])


def test_stem_is_cifar_stem():
    model = resnet18(width=8)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_init_like_torchvision():
    model = resnet18(width=8)
    conv = model.layer2[0].conv1  # fan_out = 16 * 3 * 3
    expected_std = (2.0 / (16 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.1
    bn = model.layer2[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_unknown_arch_and_bad_width():
    with pytest.raises(ValueError, match="resnet18"):
        encoder("resnet34")
    with pytest.raises(ValueError, match="width"):
        resnet18(width=0)


def test_heads_and_wrappers(x):
    enc = resnet18(width=8)
    head = ProjectionHead(enc.feature_dim, enc.feature_dim, 100)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
    net = ContrastiveNet(enc, head)
    z = net(x)
    assert z.shape == (4, 100)
    assert not torch.allclose(z.norm(dim=1), torch.ones(4))  # not normalised
    acl = ProjectionHead(64, 512, 128, layers=3, batch_norm=True)
    kinds = [type(m).__name__ for m in acl.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    with pytest.raises(ValueError, match="feature"):
        ContrastiveNet(resnet18(width=8), ProjectionHead(512, 512, 100))


def test_classifier_normalize_logits(x):
    torch.manual_seed(0)
    plain = Classifier(resnet18(width=8), 10).eval()
    normed = build_model({**plain.config, "normalize_logits": True}).eval()
    normed.load_state_dict(plain.state_dict())
    logits, unit = plain(x), normed(x)
    assert logits.shape == (4, 10)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(unit, logits / logits.norm(dim=1, keepdim=True))
    assert torch.equal(unit.argmax(1), logits.argmax(1))
    # unit-norm logits cannot make a confident softmax: at most ~0.24 for 10 classes
    assert unit.softmax(1).max() < 0.25


@pytest.mark.parametrize(
    "make",
    [
        lambda: resnet18(width=4),
        lambda: resnet50(width=4, dual_bn=True),
        lambda: ContrastiveNet(resnet18(width=4), ProjectionHead(32, 32, 16)),
        lambda: ContrastiveNet(resnet18(4, True), ProjectionHead(32, 32, 16, layers=3, batch_norm=True, dual_bn=True)),
        lambda: Classifier(resnet18(width=4), 7, normalize_logits=True),
        lambda: ContrastiveNet(  # ACL's released network: input normalisation, a head ending in BatchNorm
            resnet18(4, True, input_norm=IMAGENET_MEAN_STD),
            ProjectionHead(32, 32, 32, layers=3, batch_norm=True, final_bn=True, dual_bn=True),
        ),
    ],
)
def test_build_model_round_trip(make, x):
    x = x[:2, :, :16, :16]  # any size works; small keeps the test fast
    model = make().eval()
    rebuilt = build_model(model.config).eval()
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert isinstance(describe_config(model.config), str)


def test_nested_config_format():
    net = Classifier(resnet18(width=8, dual_bn=True), 10)
    assert net.config == {
        "kind": "classifier",
        "encoder": {"arch": "resnet18", "width": 8, "dual_bn": True},
        "num_classes": 10,
        "normalize_logits": False,
    }
    assert describe_config(resnet18(width=8).config) == "resnet18(width=8)"
    with pytest.raises(ValueError, match="cannot build"):
        build_model({"kind": "transformer"})


def _dual_stats(model: nn.Module, branch: str) -> list[torch.Tensor]:
    return [getattr(m, branch).running_mean.clone() for m in model.modules() if isinstance(m, DualBatchNorm)]


def test_dual_bn_routes_keep_separate_statistics(x):
    model = resnet18(width=4, dual_bn=True).train()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in resnet18(width=4).modules())
    assert sum(isinstance(m, DualBatchNorm) for m in model.modules()) == n_bn
    assert not any(
        isinstance(m, nn.BatchNorm2d) and "clean" not in n and "adv" not in n for n, m in model.named_modules()
    )
    adv_before = _dual_stats(model, "adv")
    model(x)  # clean route by default
    clean_after = _dual_stats(model, "clean")
    assert all(torch.equal(a, b) for a, b in zip(adv_before, _dual_stats(model, "adv")))  # adv untouched
    with bn_route(model, "adv"):
        model(x * 0.5 + 0.5)  # different input statistics
    assert all(torch.equal(a, b) for a, b in zip(clean_after, _dual_stats(model, "clean")))  # clean untouched
    diffs = [not torch.allclose(c, a) for c, a in zip(_dual_stats(model, "clean"), _dual_stats(model, "adv"))]
    assert all(diffs)
    # the context manager restored the route
    assert all(m.route == "clean" for m in model.modules() if isinstance(m, DualBatchNorm))


def test_dual_bn_clean_route_equals_single_bn_model(x):
    x = x[:, :, :16, :16]
    torch.manual_seed(1)
    dual = ContrastiveNet(resnet18(4, True), ProjectionHead(32, 32, 8, layers=3, batch_norm=True, dual_bn=True))
    single = ContrastiveNet(resnet18(4), ProjectionHead(32, 32, 8, layers=3, batch_norm=True))
    # make the two branches differ, then copy the clean branch into the single-BN model by hand
    with torch.no_grad():
        for m in dual.modules():
            if isinstance(m, DualBatchNorm):
                m.adv.weight.uniform_(0.5, 1.5)
                m.adv.running_var.uniform_(0.5, 2.0)
    state = {}
    for key, value in dual.state_dict().items():
        if ".adv." in key:
            continue
        state[key.replace(".clean.", ".")] = value
    single.load_state_dict(state, strict=True)
    dual.eval(), single.eval()
    set_bn_route(dual, "clean")
    torch.testing.assert_close(dual(x), single(x))
    set_bn_route(dual, "adv")
    assert not torch.allclose(dual(x), single(x))
    # in train mode too (batch statistics), and collapse_dual_bn picks a branch the same way
    dual.train(), single.train()
    set_bn_route(dual, "clean")
    torch.testing.assert_close(dual(x), single(x))
    collapsed = collapse_dual_bn(dual, "clean").eval()
    assert collapsed.config == single.config
    torch.testing.assert_close(collapsed(x), single.eval()(x))


def test_bn_route_rejects_unknown_route():
    model = resnet18(width=4, dual_bn=True)
    with pytest.raises(ValueError, match="clean"):
        set_bn_route(model, "pgd")
    with pytest.raises(ValueError):
        with bn_route(model, "natural"):
            pass


def test_channels_last_and_bf16_autocast(x):
    model = resnet18(width=4).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        feats = model(xc)
        taps = model.forward_taps(xc, names=["layer3.1"])
    assert feats.shape == (4, 32) and torch.isfinite(feats.float()).all()
    assert taps["layer3.1"].shape == (4, 16, 8, 8)
    (grad,) = torch.autograd.grad(feats.float().sum(), xc)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    model.eval()
    torch.testing.assert_close(model(xc), model(x), rtol=1e-4, atol=1e-5)


def test_input_norm_is_inside_the_model_and_only_in_its_config_when_used(x):
    torch.manual_seed(0)
    plain = resnet18(width=4).eval()
    normed = build_model({**plain.config, "input_norm": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}}).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)  # the same weights; normed also has mean/std buffers
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(normed(x), plain((x - mean) / std))
    torch.testing.assert_close(normed.forward_taps(x)["pool"], normed(x))
    assert "input_norm" not in plain.config and set(plain.state_dict()) < set(normed.state_dict())
    assert describe_config(normed.config) == "resnet18(width=4, input_norm)"
    with pytest.raises(ValueError, match="std"):
        resnet18(width=4, input_norm=([0.5] * 3, [0.0] * 3))


def test_head_can_end_in_batchnorm():
    head = ProjectionHead(16, 16, 16, layers=3, batch_norm=True, final_bn=True)
    assert [type(m).__name__ for m in head.net][-2:] == ["Linear", "BatchNorm1d"]
    assert head.config["final_bn"] is True and "final_bn" not in ProjectionHead(16, 16, 8).config
    with pytest.raises(ValueError, match="batch_norm"):
        ProjectionHead(16, 16, 16, final_bn=True)


def test_resnet_is_the_encoder_class():
    assert isinstance(encoder("resnet50", 4), ResNet)
