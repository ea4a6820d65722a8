"""rcl.checkpoint: round trips, architecture mismatch, corrupt files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rcl.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from rcl.models import Classifier, ContrastiveNet, ProjectionHead, resnet18


def _trained_classifier(width: int = 4, seed: int = 0) -> tuple[Classifier, torch.optim.Optimizer, object]:
    torch.manual_seed(seed)
    model = Classifier(resnet18(width=width), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip_restores_everything(tmp_path: Path):
    model, opt, sched = _trained_classifier()
    path = tmp_path / "run" / "ckpt.pt"
    extra = {"history": [{"epoch": 0, "loss": 1.5}], "run_dir": tmp_path, "eps": (8 / 255, 4 / 255), "t": torch.ones(2)}
    save_checkpoint(path, model, optimizer=opt, scheduler=sched, epoch=3, extra=extra)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temp file left behind

    fresh, fresh_opt, fresh_sched = _trained_classifier(seed=1)
    assert not _states_equal(fresh.state_dict(), model.state_dict())
    ckpt = load_checkpoint(path, fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert _states_equal(fresh.state_dict(), model.state_dict())
    assert ckpt["epoch"] == 3 and ckpt["config"] == model.config
    assert ckpt["extra"]["run_dir"] == str(tmp_path) and ckpt["extra"]["eps"] == (8 / 255, 4 / 255)
    assert ckpt["extra"]["history"] == [{"epoch": 0, "loss": 1.5}]
    assert fresh_sched.state_dict() == sched.state_dict()
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(fresh_opt.state_dict()["state"][0]["exp_avg"], exp_avg, rtol=0, atol=0)
    # plain data only: loadable without load_checkpoint, with weights_only=True
    assert torch.load(path, weights_only=True)["epoch"] == 3


def test_load_model_rebuilds_from_config(tmp_path: Path):
    torch.manual_seed(0)
    net = ContrastiveNet(resnet18(4, dual_bn=True), ProjectionHead(32, 32, 8, layers=3, batch_norm=True, dual_bn=True))
    save_checkpoint(tmp_path / "c.pt", net)
    loaded = load_model(tmp_path / "c.pt")
    assert type(loaded) is ContrastiveNet and loaded.config == net.config and not loaded.training
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_architecture_mismatch_names_both_and_leaves_model_untouched(tmp_path: Path):
    save_checkpoint(tmp_path / "w8.pt", resnet18(width=8))
    other = resnet18(width=16)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"resnet18\(width=8\), model is resnet18\(width=16\)"):
        load_checkpoint(tmp_path / "w8.pt", other)
    assert _states_equal(before, other.state_dict())


def test_same_config_but_different_weights_fails_before_writing(tmp_path: Path):
    model = resnet18(width=4)
    state = model.state_dict()
    state.pop("layer4.1.bn2.running_mean")
    torch.save({"config": model.config, "state_dict": state}, tmp_path / "odd.pt")
    target = resnet18(width=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="missing"), pytest.warns(UserWarning, match="no checksum"):
        load_checkpoint(tmp_path / "odd.pt", target)
    assert _states_equal(before, target.state_dict())


def test_truncated_and_garbage_files_raise_checkpoint_error(tmp_path: Path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, resnet18(width=4), epoch=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*delete it to retrain"):
        load_checkpoint(path, resnet18(width=4))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(path)
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an rcl checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_missing_optimizer_state_is_an_error(tmp_path: Path):
    model, opt, _ = _trained_classifier()
    save_checkpoint(tmp_path / "m.pt", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "m.pt", model, optimizer=opt)


def test_crash_during_save_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    old = resnet18(width=4)
    save_checkpoint(path, old, epoch=1)
    old_bytes = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # part of the file is written, then the process "dies"
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, resnet18(width=4), epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    assert load_checkpoint(path, resnet18(width=4))["epoch"] == 1


def test_extra_must_be_plain_data(tmp_path: Path):
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "x.pt", resnet18(width=4), extra={"fn": lambda: 1})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- damage on disk
def _data_records(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of every tensor-data record of a torch.save zip file, largest first."""
    import zipfile

    out = []
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" not in info.filename:
                continue
            name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
            extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
            out.append((info.header_offset + 30 + name_len + extra_len, info.file_size))
    return sorted(out, key=lambda r: -r[1])


@pytest.mark.parametrize("where", ["tensor data", "middle of the file"])
def test_flipped_bytes_are_detected(tmp_path: Path, where):
    model, opt, sched = _trained_classifier()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, optimizer=opt, scheduler=sched, epoch=1)
    assert load_checkpoint(path, _trained_classifier()[0])["epoch"] == 1  # intact: loads, no warning
    data = bytearray(path.read_bytes())
    offset, size = _data_records(path)[0]
    start = offset + (size - 2000) // 2 if where == "tensor data" else len(data) // 2 - 1000
    for i in range(start, start + 2000):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    # inside tensor data only the checksum can tell; elsewhere the zip reader may already refuse the file
    match = (
        r"last\.pt is corrupt: its content no longer matches.*Delete it" if where == "tensor data" else "(?i)delete it"
    )
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path, _trained_classifier()[0])
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_overwritten_tensor_bytes_are_detected(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, resnet18(width=4), epoch=1)
    offset, size = _data_records(path)[0]
    data = bytearray(path.read_bytes())
    middle = offset + size // 2
    data[middle : middle + 64] = b"\x7f" * 64  # float32 0x7f7f7f7f = 3.4e38: loads fine without a checksum
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path.name} is corrupt.*SHA-256.*Delete it to retrain"):
        load_checkpoint(path, resnet18(width=4))


def test_checkpoint_without_checksum_still_loads_with_a_warning(tmp_path: Path):
    model = resnet18(width=4)
    old = {"format": 1, "config": model.config, "state_dict": model.state_dict(), "epoch": 2, "extra": {}}
    torch.save(old, tmp_path / "old.pt")  # what rcl wrote before checksums
    target = resnet18(width=4)
    with pytest.warns(UserWarning, match="old.pt has no checksum"):
        assert load_checkpoint(tmp_path / "old.pt", target)["epoch"] == 2
    assert _states_equal(target.state_dict(), model.state_dict())


@pytest.mark.parametrize("call", ["print", "os.system"])  # torch words the two refusals differently
def test_pickled_objects_are_refused_for_safety_not_called_corrupt(tmp_path: Path, capfd, call):
    import os

    function = print if call == "print" else os.system

    class Payload:
        def __reduce__(self):
            return (function, ("echo pickled code ran",))

    model = resnet18(width=4)
    torch.save({"config": model.config, "state_dict": model.state_dict(), "x": Payload()}, tmp_path / "evil.pt")
    for load in (lambda: load_checkpoint(tmp_path / "evil.pt"), lambda: load_model(tmp_path / "evil.pt")):
        with pytest.raises(CheckpointError, match="evil.pt was refused for safety") as info:
            load()
        message = str(info.value)
        assert ("'print'" if call == "print" else "system'") in message
        assert "arbitrary code" in message and "trust" in message
        assert "weights_only" not in message and "corrupt or truncated" not in message
    assert "pickled code ran" not in capfd.readouterr().out


def test_a_damaged_pickle_is_called_corrupt_without_torchs_unsafe_advice(tmp_path: Path):
    import pickle

    err = pickle.UnpicklingError(
        "Weights only load failed. This file can still be loaded, to do so you have two options, do those steps "
        "only if you trust the source of the checkpoint. \n\t(1) Re-running `torch.load` with `weights_only` set to "
        "`False` will likely succeed.\n\tWeightsUnpickler error: Unsupported operand 149\n\nCheck the documentation"
        " of torch.load to learn more about types accepted by default with weights_only"
    )
    from rcl.checkpoint import _refusal_message

    message = _refusal_message(tmp_path / "x.pt", err)
    assert message.endswith(
        "x.pt is not a readable checkpoint (corrupt or truncated?): delete it to retrain (Unsupported operand 149)"
    )
