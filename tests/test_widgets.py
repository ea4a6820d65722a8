"""The explorers of rcl.widgets, driven programmatically as a learner drives them in JupyterLab.

Each test builds an explorer on tiny synthetic data and untrained tiny models, moves a control and
checks that what is displayed changed in the way the new setting implies.
"""

from __future__ import annotations

import base64

import pytest
import torch
from conftest import seeded_classifier
from torch import nn

from rcl import widgets
from rcl.attacks import AttackConfig
from rcl.checkpoint import save_checkpoint
from rcl.data import synthetic_dataset
from rcl.models import Classifier, resnet18


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(n_train=20, n_test=20, seed=0)


def tiny_classifier(seed: int = 0) -> Classifier:
    return seeded_classifier(4, seed=seed).eval()


class LinearClassifier(nn.Module):
    """A linear model: PGD provably lowers the true class's probability on it."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def displayed_png(explorer: widgets.Explorer) -> bytes:
    (output,) = explorer.output.outputs
    return base64.b64decode(output["data"]["image/png"])


def test_augmentation_explorer_redraws_when_a_slider_moves(data):
    explorer = widgets.augmentation_explorer(data, n_views=4, seed=0)
    assert explorer.renders == 1
    first_png, first_views = displayed_png(explorer), explorer.state["views"]
    assert first_png.startswith(b"\x89PNG") and first_png == explorer.state["png"]
    assert first_views.shape == (4, 3, 32, 32)
    assert 0.0 <= float(first_views.min()) and float(first_views.max()) <= 1.0

    explorer.controls["seed"].value = 7
    assert explorer.renders == 2 and explorer.state["seed"] == 7
    assert not torch.equal(explorer.state["views"], first_views)
    assert displayed_png(explorer) != first_png

    explorer.controls["seed"].value = 0  # the same setting redraws the same views
    assert torch.equal(explorer.state["views"], first_views)


def test_augmentation_explorer_grayscale_slider_greys_every_view(data):
    explorer = widgets.augmentation_explorer(data, n_views=6, gray_p=0.0, strength=0.0)
    views = explorer.state["views"]
    assert (views[:, 0] - views[:, 1]).abs().max() > 0.05  # synthetic images are coloured
    explorer.controls["gray_p"].value = 1.0
    grey = explorer.state["views"]
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-5)


def test_augmentation_explorer_shows_the_chosen_image(data):
    explorer = widgets.augmentation_explorer(data, n_views=2)
    explorer.controls["index"].value = 5
    assert f"image 5 ({data.classes[int(data.test.labels[5])]})" in explorer.status.value


def test_jitter_of_strength_matches_the_main_study_at_half():
    assert widgets.jitter_of_strength(0.5) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    with pytest.raises(ValueError, match="strength"):
        widgets.jitter_of_strength(-1)


def test_attack_explorer_eps_slider_moves_the_adversarial_image(data):
    explorer = widgets.attack_explorer({"linear": LinearClassifier()}, data, eps=0, steps=5)
    state = explorer.state
    assert state["linf"] == 0.0 and state["adv_pred"] == state["clean_pred"]
    assert state["adv_true_prob"] == pytest.approx(state["clean_true_prob"], abs=1e-6)
    png_at_zero = displayed_png(explorer)

    explorer.controls["eps"].value = 16
    state = explorer.state
    assert state["eps"] == 16 and 0 < state["linf"] <= 16 / 255 + 1e-6
    assert state["adv_true_prob"] < state["clean_true_prob"]  # PGD on cross-entropy lowers the true class
    assert displayed_png(explorer) != png_at_zero
    assert "clean" in explorer.status.value and "adversarial" in explorer.status.value


def test_attack_explorer_switches_models(data):
    models = {"resnet-a": tiny_classifier(0), "resnet-b": tiny_classifier(1)}
    explorer = widgets.attack_explorer(models, data, eps=2, steps=1)
    before = explorer.state["clean_true_prob"]
    explorer.controls["model"].value = "resnet-b"
    assert explorer.state["model"] == "resnet-b"
    with torch.no_grad():
        logits = models["resnet-b"](data.test.images[:1].float() / 255)
    expected = torch.softmax(logits, 1)[0, int(data.test.labels[0])]
    assert explorer.state["clean_true_prob"] == pytest.approx(float(expected), rel=1e-4)
    assert explorer.state["clean_true_prob"] != pytest.approx(before)


def test_attack_explorer_names_the_notebook_when_the_run_folder_is_empty(data, tmp_path):
    explorer = widgets.attack_explorer(tmp_path, data)  # must not raise
    message = explorer.state["message"]
    assert "run notebooks/01_" in message and "run notebooks/02_" in message and "first" in message
    assert str(tmp_path) in message and "no supervised (SL) classifier checkpoint" in message
    assert explorer.output.outputs == () and "notebooks/03_" in explorer.status.value


def test_attack_explorer_loads_classifiers_from_a_run_folder(data, tmp_path):
    save_checkpoint(tmp_path / "04_scenarios" / "CL-ST" / "last.pt", tiny_classifier())
    explorer = widgets.attack_explorer(tmp_path, data, eps=1, steps=1)
    assert list(explorer.controls["model"].options) == ["04_scenarios/CL-ST/last"]
    assert "png" in explorer.state and "message" not in explorer.state
    assert "run notebooks/01_" in explorer.status.value and "notebooks/02_" not in explorer.status.value


def test_find_checkpoints_filters_by_kind(tmp_path):
    save_checkpoint(tmp_path / "01_supervised" / "SL-ST" / "last.pt", tiny_classifier())
    save_checkpoint(tmp_path / "01_supervised" / "encoder.pt", resnet18(width=4))
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert list(widgets.find_checkpoints(tmp_path, "classifier")) == ["01_supervised/SL-ST/last"]
    assert list(widgets.find_checkpoints(tmp_path, "encoder")) == ["01_supervised/encoder"]


def _random_cka(seed: int, layers: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(layers, layers, generator=gen, dtype=torch.float64)
    return (a + a.T) / 2


def test_cka_explorer_with_precomputed_matrices(data):
    matrices = {
        ("SL", "ST", "clean"): _random_cka(0),
        ("SL", "ST", "adversarial"): _random_cka(1),
        ("SL", "ST", "clean-vs-adversarial"): _random_cka(2),
        ("CL", "ST", "clean-vs-adversarial"): _random_cka(3),
    }
    names = [f"layer{i}" for i in range(5)]
    explorer = widgets.cka_explorer(matrices, layer_names=names)
    explorer.controls["scheme"].value = "SL"
    assert torch.equal(explorer.state["matrix"], matrices[("SL", "ST", "clean")])
    png = displayed_png(explorer)

    explorer.controls["input"].value = "adversarial"
    assert torch.equal(explorer.state["matrix"], matrices[("SL", "ST", "adversarial")])
    assert displayed_png(explorer) != png
    diagonals = explorer.state["diagonals"]
    assert set(diagonals) == {"SL", "CL"}
    assert diagonals["CL"] == pytest.approx(torch.diagonal(matrices[("CL", "ST", "clean-vs-adversarial")]).tolist())

    explorer.controls["scheme"].value = "CL"  # CL has only the cross matrix: a message, not an error
    assert "no adversarial CKA matrix for CL / ST" in explorer.state["message"]


def test_cka_explorer_without_matrices_names_chapter_06(tmp_path):
    explorer = widgets.cka_explorer(run_dir=tmp_path)
    assert "run notebooks/06" in explorer.state["message"] and str(tmp_path) in explorer.state["message"]
    with pytest.raises(ValueError, match="input"):
        widgets.cka_explorer({("SL", "ST", "noisy"): _random_cka(0)})


def test_cka_explorer_computes_matrices_on_demand(data):
    models = {("SL", "ST"): tiny_classifier(0)}
    explorer = widgets.cka_explorer(models=models, data=data, attack=AttackConfig(4 / 255, 2 / 255, 1), n=8)
    clean = explorer.state["matrix"]
    assert clean.shape[0] == clean.shape[1] == len(models[("SL", "ST")].encoder.tap_names)
    assert torch.allclose(torch.diagonal(clean), torch.ones(len(clean), dtype=clean.dtype), atol=1e-6)
    explorer.controls["input"].value = "clean-vs-adversarial"
    cross = explorer.state["matrix"]
    assert not torch.allclose(cross, clean)
    assert explorer.state["diagonals"]["SL"] == pytest.approx(torch.diagonal(cross).tolist())
    assert all(0.0 <= v <= 1.0 + 1e-6 for v in explorer.state["diagonals"]["SL"])
