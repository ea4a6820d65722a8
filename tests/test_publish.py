"""A published reference run: only from a clean checkout, copies results and notebooks (never checkpoints),
records the commit, machine and per-chapter wall times."""

import json
import shlex
import subprocess

import nbformat
import pytest

from rcl import publish, reproduce


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    (root / "a.py").write_text("x = 1\n")
    _git(root, "add", "a.py")
    _git(root, "commit", "-q", "-m", "one")
    return root


def test_check_clean_names_the_commit_and_refuses_local_changes(checkout, tmp_path):
    commit = publish.check_clean(checkout)
    assert len(commit) == 40
    (checkout / "untracked.txt").write_text("fine: not tracked")
    assert publish.check_clean(checkout) == commit
    (checkout / "a.py").write_text("x = 2\n")
    with pytest.raises(publish.NotPublishable, match="local changes.*a.py"):
        publish.check_clean(checkout)
    with pytest.raises(publish.NotPublishable, match="git checkout"):
        publish.check_clean(tmp_path / "nowhere")


def _executed(path, seconds):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    nb.metadata["papermill"] = {"duration": seconds, "start_time": "2026-12-02T10:00:00", "end_time": "x"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_publish_copies_results_not_checkpoints_and_records_the_run(tmp_path):
    run = tmp_path / "run"
    _executed(run / "notebooks" / "01_a.ipynb", 61.5)
    _executed(run / "notebooks" / "02_b.ipynb", 3600.0)
    _executed(run / "notebooks" / "03_c.failed.ipynb", 5.0)
    for name, text in {
        "summary.md": "# rcl.reproduce summary\n\n**profile laptop**\n",
        "01_a/robustness.csv": "a,b\n1,2\n",
        "01_a/SL-ST/history.json": "[]",
        "01_a/figure.png": "png",
        "01_a/SL-ST/last.pt": "weights",
        "jobs/x/log.txt": "log",
        ".lock": "",
    }.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    dest = tmp_path / "results" / "ref"
    dest.mkdir(parents=True)
    (dest / "stale.csv").write_text("from an older run")
    settings = {"profile": "laptop", "dataset": "cifar10", "seed": 1, "run_dir": str(run), "width": 8}
    command = ["python", "-m", "rcl.reproduce", "--publish", str(dest), "--note", "Data: a JPEG copy."]
    publish.publish(
        run,
        dest,
        commit="c" * 40,
        settings=settings,
        expected=["01_a.ipynb", "02_b.ipynb"],
        command=command,
        note="JPEG copy.",
    )
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        "01_a/SL-ST/history.json",
        "01_a/figure.png",
        "01_a/robustness.csv",
        "README.md",
        "notebooks/01_a.ipynb",
        "notebooks/02_b.ipynb",
        "run.json",
        "summary.md",
    ]
    record = json.loads((dest / "run.json").read_text())
    assert record["commit"] == "c" * 40 and record["seed"] == 1 and record["settings"]["width"] == 8
    assert "run_dir" not in record["settings"]
    assert shlex.split(record["command"]) == command  # quoted so that it can be pasted into a shell again
    assert [c["seconds"] for c in record["chapters"]] == [61.5, 3600.0] and record["wall_seconds"] == 3661.5
    assert record["machine_at_end"]["torch"] and record["machine_at_end"]["cpu_count"] >= 1
    readme = (dest / "README.md").read_text()
    assert "c" * 40 in readme and "JPEG copy." in readme and "1 h 01 min" in readme and "**profile laptop**" in readme
    with pytest.raises(publish.NotPublishable, match="03_c.ipynb"):
        publish.publish(run, dest, commit="c" * 40, settings=settings, expected=["03_c.ipynb"])
    assert (dest / "run.json").exists()  # a refused publish leaves the last one alone


def test_note_without_publish_is_an_error(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--note", "x"])
    assert "--note" in capsys.readouterr().err


def test_publish_refuses_a_checkout_with_local_changes_before_running(tmp_path, monkeypatch, checkout):
    (checkout / "a.py").write_text("changed\n")
    monkeypatch.setattr(reproduce, "project_root", lambda: checkout)
    with pytest.raises(publish.NotPublishable, match="clean checkout"):
        reproduce.run("smoke", device="cpu", out=tmp_path / "run", publish_to=tmp_path / "pub")
    assert not (tmp_path / "run" / "notebooks").exists()


def test_the_chapters_of_a_run_being_published_know_it_and_the_variable_is_gone_afterwards(
    tmp_path, monkeypatch, checkout
):
    """While --publish runs, the chapters' kernels see where the run goes (their "reference run" sections say they
    are it); the runner's own environment is as before once it returns."""
    import os

    from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

    from rcl.results import PUBLISHING_ENV

    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", "x = 1", params=BASE_PARAMS)
    seen = []
    _fake_papermill(monkeypatch, effect=lambda name, output, parameters: seen.append(os.environ.get(PUBLISHING_ENV)))
    monkeypatch.setattr(reproduce, "project_root", lambda: checkout)
    monkeypatch.setattr(publish, "publish", lambda run_dir, dest, **kw: dest)
    monkeypatch.delenv(PUBLISHING_ENV, raising=False)
    reproduce.run("smoke", device="cpu", out=tmp_path / "run", notebook_dir=folder, publish_to=tmp_path / "pub")
    assert seen == [str((tmp_path / "pub").resolve())]
    assert PUBLISHING_ENV not in os.environ
