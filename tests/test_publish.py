"""A published reference run: only from a clean checkout, copies results and notebooks (never checkpoints),
records the commit, machine and per-chapter wall times."""

import json
import shlex
import subprocess

import nbformat
import pytest

from rcl import reproduce
from rcl.reproduce import publish, runner


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
        publish.MARKER,
        "01_a/SL-ST/history.json",
        "01_a/figure.png",
        "01_a/robustness.csv",
        "README.md",
        "notebooks/01_a.ipynb",
        "notebooks/02_b.ipynb",
        "run.json",
        "summary.md",
    ]
    assert (dest / publish.MARKER).is_file()
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
    monkeypatch.setattr(runner, "project_root", lambda *_: checkout)
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

    from rcl.verdicts import PUBLISHING_ENV

    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", "x = 1", params=BASE_PARAMS)
    seen = []
    _fake_papermill(monkeypatch, effect=lambda name, output, parameters: seen.append(os.environ.get(PUBLISHING_ENV)))
    monkeypatch.setattr(runner, "project_root", lambda *_: checkout)
    monkeypatch.setattr(publish, "publish", lambda run_dir, dest, **kw: dest)
    monkeypatch.delenv(PUBLISHING_ENV, raising=False)
    reproduce.run("smoke", device="cpu", out=tmp_path / "run", notebook_dir=folder, publish_to=tmp_path / "pub")
    assert seen == [str((tmp_path / "pub").resolve())]
    assert PUBLISHING_ENV not in os.environ


# --------------------------------------------------------------------------------------------------- safety
def _publish(run, dest, **kw):
    settings = {"profile": "laptop", "dataset": "cifar10", "seed": 0, "run_dir": str(run), "device": "cpu"}
    return publish.publish(run, dest, commit="c" * 40, settings=settings, expected=["01_a.ipynb"], **kw)


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "runs" / "laptop"
    _executed(run / "notebooks" / "01_a.ipynb", 1.0)
    (run / "01_a").mkdir()
    (run / "01_a" / "table.csv").write_text("a\n1\n")
    (run / "01_a" / "SL-ST").mkdir()
    (run / "01_a" / "SL-ST" / "last.pt").write_text("weights")
    return run


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["runs", "run", "inside", "checkout", "above"])
def test_publish_refuses_folders_around_or_inside_the_run_or_the_checkout(tmp_path, run_folder, where):
    """--publish into runs/ (every other run), into the run folder (its checkpoints), into the checkout or above
    it (`--publish ..`): refused before anything is deleted, naming the folder."""
    checkout = tmp_path / "checkout"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "README.md").write_text("mine")
    other = tmp_path / "runs" / "other"
    other.mkdir()
    (other / "last.pt").write_text("another run's checkpoint")
    dest = {
        "runs": tmp_path / "runs",
        "run": run_folder,
        "inside": run_folder / "published",
        "checkout": checkout,
        "above": tmp_path,
    }[where]
    before = _tree(tmp_path)
    with pytest.raises(publish.NotPublishable, match="--publish"):
        _publish(run_folder, dest, root=checkout)
    assert _tree(tmp_path) == before


def test_publish_refuses_a_folder_holding_anything_it_did_not_write(tmp_path, run_folder):
    dest = tmp_path / "results" / "ref"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("a user's file")
    with pytest.raises(publish.NotPublishable, match="notes.txt"):
        _publish(run_folder, dest)
    assert (dest / "notes.txt").read_text() == "a user's file"
    (dest / "notes.txt").unlink()
    _publish(run_folder, dest)  # an empty folder is fine
    (dest / "01_a" / "extra.png").write_text("added by hand")  # beside a publication: still refused
    with pytest.raises(publish.NotPublishable, match="extra.png"):
        _publish(run_folder, dest)


def test_a_publication_replaces_the_last_one_and_leaves_nothing_beside_it(tmp_path, run_folder):
    dest = tmp_path / "results" / "ref"
    _publish(run_folder, dest)
    (run_folder / "01_a" / "table.csv").write_text("a\n2\n")
    _publish(run_folder, dest)
    assert (dest / "01_a" / "table.csv").read_text() == "a\n2\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ref"]  # no staging or old folder left


def test_a_legacy_publication_without_marker_is_replaced(tmp_path, run_folder):
    """results/laptop-cifar10 was published before the marker existed: its run.json lists its files."""
    dest = tmp_path / "results" / "ref"
    _publish(run_folder, dest)
    (dest / publish.MARKER).unlink()
    _publish(run_folder, dest)
    assert (dest / publish.MARKER).is_file()


def test_an_interrupt_during_the_swap_keeps_the_old_publication(tmp_path, run_folder, monkeypatch):
    dest = tmp_path / "results" / "ref"
    _publish(run_folder, dest)
    old = (dest / "run.json").read_text()

    def interrupted(staging, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "_swap_in", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _publish(run_folder, dest)
    assert (dest / "run.json").read_text() == old
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ref"]  # the half-built one is gone


def test_without_an_atomic_exchange_the_two_renames_recover_after_an_interrupt(tmp_path, run_folder, monkeypatch):
    dest = tmp_path / "results" / "ref"
    _publish(run_folder, dest)
    monkeypatch.setattr(publish, "_exchange", lambda a, b: False)
    _publish(run_folder, dest)  # the fallback: rename old away, new in, remove old
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ref"]
    dest.rename(dest.parent / ".ref.old-x1")  # as an interrupt between the two renames leaves it
    _publish(run_folder, dest)
    assert (dest / "run.json").is_file() and sorted(p.name for p in dest.parent.iterdir()) == ["ref"]


def test_a_symlink_in_the_run_folder_is_not_followed(tmp_path, run_folder):
    secret = tmp_path / "secret.csv"
    secret.write_text("private\n")
    secret.chmod(0o600)
    (run_folder / "01_a" / "linked.csv").symlink_to(secret)
    dest = _publish(run_folder, tmp_path / "results" / "ref")
    assert not (dest / "01_a" / "linked.csv").exists()
    assert "01_a/linked.csv" not in json.loads((dest / "run.json").read_text())["files"]


def test_a_publication_is_readable_by_others_under_the_users_umask(tmp_path, run_folder):
    import os
    import stat

    old = os.umask(0o022)
    try:
        dest = _publish(run_folder, tmp_path / "results" / "ref")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "01_a" / "table.csv").stat().st_mode) == 0o644


def test_republishing_over_a_damaged_run_json_names_run_json(tmp_path, run_folder):
    dest = tmp_path / "results" / "ref"
    _publish(run_folder, dest)
    (dest / "run.json").write_text('{"commit": ')
    with pytest.raises(publish.NotPublishable, match=r"its run.json, .* is damaged \(JSONDecodeError"):
        _publish(run_folder, dest)
    assert (dest / "01_a" / "table.csv").exists()


def test_a_publish_name_too_long_for_its_staging_folder_is_refused_up_front(tmp_path, run_folder):
    name = "r" * 250  # legal, but ".<name>.publishing-xxxxxxxx" is not
    with pytest.raises(publish.NotPublishable, match=r"is too long \(250 bytes\).*give a shorter name"):
        publish.check_destination(tmp_path / "results" / name, run_folder, tmp_path / "checkout")
    assert publish.check_destination(tmp_path / "results" / ("r" * 200), run_folder, tmp_path / "checkout")


ABSOLUTE = r"(?<![\w<>.])/(?:tmp|work|home|root|Users|mnt|scratch|private|var)/"


def test_a_publication_names_no_path_of_the_machine_that_ran_it(tmp_path):
    """Issue 33: the executed notebooks' parameters, run.json, the summary and every table say <run>, <data>/<tree>
    and <checkout>, never the absolute paths of the machine that ran them, not even cut short in a table cell; a
    longer name that starts like the run folder (run1) is left alone."""
    import re

    run, checkout, tree = tmp_path / "run", tmp_path / "checkout", tmp_path / "data" / "cifar10-jpeg"
    _executed(run / "notebooks" / "01_a.ipynb", 1.0)
    nb = nbformat.read(run / "notebooks" / "01_a.ipynb", as_version=4)
    nb.cells[0].source = f'run_dir = "{run}"\ndataset = "imagefolder:{tree}"\ncwd = "{checkout}/notebooks"'
    nbformat.write(nb, run / "notebooks" / "01_a.ipynb")
    (run / "summary.md").write_text(
        f"run folder {run}; data {tree}/train; another folder {run}1; a table cell cut short {str(tree)[:-5]}...\n"
    )
    (run / "01_a").mkdir()
    (run / "01_a" / "table.csv").write_text(f"dataset\nimagefolder:{tree}\n")
    settings = {"profile": "laptop", "dataset": f"imagefolder:{tree}", "seed": 0, "data_root": str(tmp_path / "data")}
    command = ["python", "-m", "rcl.reproduce", "--dataset", f"imagefolder:{tree}", "--out", str(run)]
    dest = publish.publish(
        run, tmp_path / "pub", commit="c" * 40, settings=settings, expected=["01_a.ipynb"], command=command,
        root=checkout,
    )  # fmt: skip
    texts = {p.name: p.read_text() for p in dest.rglob("*") if p.is_file() and p.suffix in publish.TEXT_SUFFIXES}
    assert {"01_a.ipynb", "run.json", "summary.md", "table.csv", "README.md"} <= set(texts)
    for name, text in texts.items():
        assert str(tmp_path) not in text.replace(f"{run}1", ""), name
    assert 'run_dir = \\"<run>\\"' in texts["01_a.ipynb"] and "<checkout>/notebooks" in texts["01_a.ipynb"]
    assert "imagefolder:<data>/cifar10-jpeg" in texts["table.csv"] and "--out <run>" in texts["run.json"]
    assert f"{run}1" in texts["summary.md"]  # not the run folder: left as it is
    assert (
        "a table cell cut short <data>/cifar10-jpeg...\n" in texts["summary.md"]
    )  # pandas' "imagefolder:/tmp/cifar..."
    assert re.search(ABSOLUTE, "x /tmp/a") and not re.search(ABSOLUTE, "x <run>/a")


def test_the_committed_reference_runs_name_no_machine_path():
    """Issue 33: nothing under results/ carries an absolute path of the machine that made it."""
    import re

    from rcl.runtime import project_root

    found = []
    for path in sorted((project_root() / "results").rglob("*")):
        if path.is_file() and path.suffix in publish.TEXT_SUFFIXES:
            for match in re.finditer(ABSOLUTE + r"\S*", path.read_text(encoding="utf-8")):
                found.append(f"{path.relative_to(project_root())}: {match.group()[:60]}")
    assert not found, "\n".join(found[:20])


def test_a_resumed_run_says_which_chapters_an_earlier_invocation_executed():
    """Issue 33: seed 1's README said '10 chapters' and '9 ran, 1 skipped' for a run that resumed after an
    interruption, without saying so."""
    record = {
        "profile": "laptop", "dataset": "cifar10", "seed": 1, "commit": "c" * 40, "command": "python -m rcl.reproduce",
        "started": "2026-12-03T22:51:31Z", "wall_seconds": 100.0,
        "chapters": [
            {"notebook": "00_setup_and_data.ipynb", "seconds": 11.0, "start": "2026-12-03T20:00:00.000001"},
            {"notebook": "01_supervised_baseline.ipynb", "seconds": 89.0, "start": "2026-12-03T22:52:00.5"},
        ],
    }  # fmt: skip
    text = publish.readme_text(record, "# summary\n")
    assert "chapter 00 was executed by an earlier invocation of the same command" in text
    record["chapters"][0]["start"] = "2026-12-03T22:51:40"
    assert "earlier invocation" not in publish.readme_text(record, "# summary\n")


def test_republishing_a_run_keeps_its_first_publications_provenance_and_says_why(tmp_path):
    """tools/republish_run.py copies a finished run again with this checkout's publisher (issue 33: seed 0's data
    path, cut short by pandas, escaped the publisher of the commit that ran it). The new copy keeps the commit,
    command, start and machine of the first, adds its reason to the note, and names no path of the machine."""
    import importlib.util

    from rcl.runtime import project_root

    spec = importlib.util.spec_from_file_location("republish_run", project_root() / "tools" / "republish_run.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    run, checkout, data = tmp_path / "run", tmp_path / "checkout", tmp_path / "data"
    tree = data / "cifar10-jpeg"
    checkout.mkdir()
    _executed(run / "notebooks" / "00_setup_and_data.ipynb", 11.0)
    nb = nbformat.read(run / "notebooks" / "00_setup_and_data.ipynb", as_version=4)
    nb.metadata["papermill"]["parameters"] = {"dataset": f"imagefolder:{tree}", "overrides": {"data_root": str(data)}}
    nbformat.write(nb, run / "notebooks" / "00_setup_and_data.ipynb")
    (run / "summary.md").write_text(f"# summary\n\n| our setting |\n| imagefolder:{str(tree)[:-4]}... |\n")
    settings = {"profile": "laptop", "dataset": f"imagefolder:{tree}", "seed": 2, "data_root": str(data)}
    command = ["python", "-m", "rcl.reproduce", "--dataset", f"imagefolder:{tree}", "--out", str(run), "--publish",
               "results/x", "--note", "Data: a JPEG copy."]  # fmt: skip
    machine = {"cpu": "AMD EPYC", "load_average_1_5_15_min": [0.68, 0.26, 0.47]}
    first = publish.publish(
        run, tmp_path / "first", commit="c" * 40, settings=settings, expected=["00_setup_and_data.ipynb"],
        command=command, started=1796684100.0, machine_at_start=machine, note="Data: a JPEG copy.", root=checkout,
    )  # fmt: skip
    again = tmp_path / "results" / "again"
    why = "whose publisher left a data path that pandas cut short in a table cell; nothing else differs"
    tool.main(["--run", str(run), "--publication", str(first), "--checkout", str(checkout), "--dest", str(again),
               "--why", why])  # fmt: skip

    before, after = (json.loads((folder / "run.json").read_text()) for folder in (first, again))
    for key in ("commit", "command", "started", "machine_at_start", "dataset", "seed", "settings", "wall_seconds"):
        assert after[key] == before[key], key
    readme = (again / "README.md").read_text()
    assert "Data: a JPEG copy. Published again from the same run folder by tools/republish_run.py" in readme
    assert f"the chapters ran at ccccccc, {why}." in readme
    for path in again.rglob("*"):
        if path.is_file() and path.suffix in publish.TEXT_SUFFIXES:
            assert str(tmp_path) not in path.read_text(), path.name
    assert "imagefolder:<data>/cifar10-jpeg..." in (again / "summary.md").read_text()
