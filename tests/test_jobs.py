"""Tests of rcl.reproduce.jobs, .schedule and .launchers: the study's training runs as a graph of jobs, run in
parallel (issue 16), and the chapters scheduled beside them.

The real jobs train a width-4 ResNet-18 on 64 synthetic images for one or two epochs; the scheduler's own paths
(a job that raises, a job that dies, SLURM) run jobs that do nothing but report, so the file stays near a minute.
SLURM is a fake cluster on PATH (``sbatch``, ``srun``, ``sacct``, ``scancel``): submitit's real SlurmExecutor writes
the batch scripts, the fake runs them in the background once their ``afterok`` dependencies completed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import stat
import sys
import textwrap
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import torch

from rcl import course, reproduce, study
from rcl.checkpoint import load_checkpoint
from rcl.reproduce import chapters, cli, jobs, launchers, schedule

SIZES = dict(
    width=4,
    n_train=64,
    n_test=32,
    batch_size=32,
    pretrain_epochs=2,
    supervised_epochs=1,
    linear_epochs=1,
    train_steps=1,
    eval_steps=1,
    std_steps=1,
)
GRAPH = ("01_supervised/SL-ST", "02_simclr/CL-ST", "04_scenarios/CL-ST")  # two independent chains, one of two
# CPU sums depend on the thread count: the sequential run and the jobs use the same (one each: two workers on the
# two cores of CI do not fight over them)
THREADS = 1


@pytest.fixture(autouse=True)
def _by_value():
    """The test's job callables travel to the job processes by value (those cannot import this file)."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def _cfg(run_dir: Path):
    return course.setup("smoke", None, "cpu", run_dir=run_dir, overrides=SIZES)


def _graph(cfg) -> list[jobs.Job]:
    return [job for job in jobs.study_jobs(cfg, ["01", "02"]) if job.name in GRAPH]


def _states(records) -> dict[str, str]:
    return {r.job.name: r.state for r in records}


def _weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / name / "last.pt")["state_dict"]


def _records(cfg) -> list[dict]:
    """What the chapters would report of the graph's models (loaded, not trained: the folders are complete)."""
    data = course.load_data(cfg)
    test = study.eval_subset(data, 16)
    records = study.evaluate_classifier(cfg, study.pretrain(cfg, data, "SL"), test, scheme="SL", scenario="e2e ST")
    return records + study.evaluate_scenario(cfg, data, "CL", "ST", test=test, progress=False)


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    """The graph's models trained as the chapters do, one after the other in this process."""
    cfg = _cfg(tmp_path_factory.mktemp("sequential"))
    data = course.load_data(cfg)
    with torch_threads(THREADS):
        study.pretrain(cfg, data, "SL", adversarial=False, progress=False)  # chapter 01
        study.scenario_model(cfg, data, "CL", "ST", progress=False)  # chapter 02 (its CL-ST encoder first)
    return cfg.run_dir


# ----------------------------------------------------------------------------------------------- the graph
def test_each_chapter_lists_its_models_after_what_they_need(tmp_path):
    cfg = course.setup("smoke", None, "cpu", run_dir=tmp_path)
    by_chapter = {c: jobs.chapter_jobs(cfg, c) for c in jobs.CHAPTERS}
    assert by_chapter["00"] == by_chapter["09"] == []
    assert [j.name for j in by_chapter["01"]] == ["01_supervised/SL-ST", "01_supervised/SL-AT"]
    four = by_chapter["04"]
    # every scheme pre-trained standard and adversarial, 18 scenario classifiers, CL's budget-matched control, the
    # random-encoder floor
    assert len(four) == 3 * 2 + 3 * 6 + 1 + 1
    full_at = next(j for j in four if j.name == "04_scenarios/SCL-ST-then-Full-AT")
    assert (full_at.kind, full_at.args, full_at.needs) == ("scenario", ("SCL", "ST->Full-AT"), ("03_supcon/SCL-ST",))
    assert {j.name for j in by_chapter["05"] if j.kind == "scenario"} == {
        f"04_scenarios/{s}-{c}" for s in study.SCHEMES for c in ("ST", "AT", "Full-AT")
    }  # the smoke profile's scenarios of chapter 05
    # smoke: 3 variants x 2 modes, the matched SimCLR baseline (ACL's code, no attack) and the random-encoder control
    # in both modes, the single-BatchNorm DS in linear mode (the control is not pre-trained)
    acl = by_chapter["07"]
    assert sum(j.kind == "acl-pretrain" for j in acl) == 5 and sum(j.kind == "acl-finetune" for j in acl) == 11
    control = next(j for j in acl if j.name == "07_acl/finetune-random-encoder-linear")
    assert control.needs == ()
    baseline = next(j for j in acl if j.name == "07_acl/finetune-SimCLR-full")
    assert baseline.needs == ("07_acl/pretrain-SimCLR",)
    fn = {j.name: j for j in by_chapter["08"]}  # smoke: fn_epochs 2, so the budgets are 1 and 2 epochs
    assert {name for name, j in fn.items() if j.kind == "fn-classifier"} == {
        "08_false_negatives/linear-SimCLR",
        "08_false_negatives/linear-SimCLR@1ep",
        "08_false_negatives/linear-SupCon",
        "08_false_negatives/linear-SupCon@1ep",
        "08_false_negatives/linear-SimCLR-FN-labels",
        "08_false_negatives/linear-SimCLR-FN-kmeans",
        "08_false_negatives/linear-SimCLR-AT",
        "08_false_negatives/linear-SimCLR-FN-kmeans-AT",
    }
    assert fn["08_false_negatives/supervised"].needs == ("08_false_negatives/supervised@1ep",)  # it continues
    every = jobs.study_jobs(cfg)
    assert len({j.name for j in every}) == len(every)  # a model several chapters need is one job
    seen = set()
    for job in every:  # each job after what it needs
        assert set(job.needs) <= seen, job.name
        seen.add(job.name)
    # chapter parameters change the graph as they change the chapter
    only_st = jobs.chapter_jobs(cfg, "05", {"scenarios": ["ST"]})
    assert {j.name for j in only_st if j.kind == "scenario"} == {f"04_scenarios/{s}-ST" for s in study.SCHEMES}
    ds = jobs.chapter_jobs(cfg, "07", {"variants": ["DS"], "modes": ["linear"]})
    assert [j.name for j in ds] == [
        "07_acl/pretrain-DS",
        "07_acl/finetune-DS-linear",
        "07_acl/pretrain-SimCLR",
        "07_acl/finetune-SimCLR-linear",
        "07_acl/finetune-random-encoder-linear",
        "07_acl/pretrain-DS-single-BN",
        "07_acl/finetune-DS-single-BN-linear",
    ]
    with pytest.raises(ValueError, match="unknown chapter '10'"):
        jobs.chapter_jobs(cfg, "10")


def test_the_graph_follows_the_chapters_own_choices():
    """The chapters train what the graph lists because both call the same functions (their scenarios, chapter 02's
    random-encoder probe, chapter 06's radius sweep, chapter 08's models): if a notebook stops calling them, this
    test says which job to change."""
    import inspect

    cells = {}
    for number in ("02", "05", "06", "08"):
        notebook = next(reproduce.NOTEBOOK_DIR.glob(f"{number}_*.ipynb"))
        cells[number] = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    assert 'scenarios or study.chapter_scenarios(cfg, "05")' in cells["05"]  # the graph reads the same function
    assert 'scenarios or study.chapter_scenarios(cfg, "06")' in cells["06"]
    assert "study.random_encoder_linear(cfg, data)" in cells["02"]
    assert "study.random_encoder_linear(cfg, data)" in inspect.getsource(jobs._random_linear)
    assert "study.sweep_schemes(cfg)" in cells["06"] and "study.EPS_SWEEP" in cells["06"]
    assert "fn.classifier(cfg, data, arm, epochs, plan)" in cells["08"] and "fn.run(cfg, data, plan)" in cells["08"]


# ----------------------------------------------------------------------------------------------- equal weights
class _KilledAfterFirstEpoch:
    """Trains like JobCall, but the first time it runs job ``victim`` its process is SIGKILLed right after the first
    epoch's checkpoint is written (as a worker killed mid-run)."""

    def __init__(self, settings, job, victim: str, marker: Path) -> None:
        self.call, self.victim, self.marker = jobs.JobCall(settings, job), victim, marker

    def __call__(self):
        if self.call.job.name == self.victim and not self.marker.exists():
            self.marker.touch()
            import rcl.train_loop  # the epoch loop saves the checkpoints

            save = rcl.train_loop.save_checkpoint

            def save_then_die(path, *args, **kwargs):
                save(path, *args, **kwargs)
                if Path(path).name == "last.pt":
                    os.kill(os.getpid(), signal.SIGKILL)

            rcl.train_loop.save_checkpoint = save_then_die
        return self.call()


def test_local_workers_train_the_same_weights_as_the_sequential_run_even_when_a_job_is_killed(
    tmp_path, sequential, capsys
):
    """Two workers; the second chain's encoder is killed mid-run: it fails and blocks its fine-tune, the other chain
    finishes. The same command again resumes it; every model then equals the sequential run's, bit for bit, and
    the chapters would report the same numbers. A third run starts nothing."""
    cfg = _cfg(tmp_path / "parallel")
    graph = _graph(cfg)
    assert [j.name for j in graph] == list(GRAPH)
    settings = jobs.JobSettings.of(cfg, device="cpu", threads=THREADS)
    victim, marker = "02_simclr/CL-ST", tmp_path / "killed-once"
    first = schedule.run_jobs(
        graph,
        settings,
        launchers.LocalLauncher(workers=2),
        retries=0,
        poll=0.2,
        make_call=lambda s, j: _KilledAfterFirstEpoch(s, j, victim, marker),
    )
    assert _states(first) == {GRAPH[0]: "done", GRAPH[1]: "failed", GRAPH[2]: "blocked"}
    notes = {r.job.name: r.note for r in first}
    assert notes[GRAPH[1]].startswith("died 1 times") and notes[GRAPH[2]] == f"needs {victim}, which failed"
    assert not list((cfg.run_dir / "jobs" / GRAPH[2].replace("/", "--")).glob("*_log.*"))  # never started
    out = capsys.readouterr().out
    assert "running   01_supervised/SL-ST  on worker" in out and "(1 queued | 2 running | 0 done | 0 failed)" in out
    stopped = load_checkpoint(cfg.run_dir / victim / "last.pt")
    assert stopped["epoch"] == 1  # killed between its two epochs

    second = schedule.run_jobs(graph, settings, launchers.LocalLauncher(workers=2), poll=0.2)  # the same command again
    assert _states(second) == {GRAPH[0]: "skipped", GRAPH[1]: "done", GRAPH[2]: "done"}
    resumed = load_checkpoint(cfg.run_dir / victim / "last.pt")
    assert resumed["epoch"] == 2 and resumed["extra"]["history"][0] == stopped["extra"]["history"][0]  # resumed
    for name in GRAPH:
        mine, theirs = _weights(cfg.run_dir, name), _weights(sequential, name)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine), name
        assert any((cfg.run_dir / "jobs" / name.replace("/", "--")).glob("*_0_log.err"))  # per-job logs
    with torch_threads(THREADS):
        assert _records(cfg) == _records(_cfg(sequential))  # the chapters would report the same numbers

    third = schedule.run_jobs(graph, settings, launchers.LocalLauncher(workers=2), poll=0.2)
    assert _states(third) == dict.fromkeys(GRAPH, "skipped")  # done, files unchanged: nothing started
    summary = pd.read_csv(cfg.run_dir / "jobs" / "summary.csv")
    assert list(summary.job) == list(GRAPH) and set(summary.state) == {"skipped"}


OTHER_KINDS = (  # one job of every other kind: ACL pre-training and fine-tuning, the false-negative runs, the probe
    "07_acl/pretrain-A2S",
    "07_acl/finetune-A2S-linear",
    "08_false_negatives/supervised",
    "08_false_negatives/SimCLR-FN-kmeans",
    "08_false_negatives/linear-SimCLR-FN-kmeans",
    "02_simclr/random-encoder-linear",
    "04_scenarios/SL-AT-eps2",
)


def test_every_kind_of_job_trains_the_same_weights_in_a_job_process(tmp_path):
    small = dict(acl_epochs=1, acl_batch_size=16, acl_finetune_epochs=1, fn_epochs=1, n_val=16)
    here, there = (course.setup("smoke", None, "cpu", run_dir=tmp_path / d, overrides={**SIZES, **small}) for d in "ab")
    params = {"07": {"variants": ["A2S"], "modes": ["linear"]}}
    graph = [j for j in jobs.study_jobs(there, ["02", "06", "07", "08"], params) if j.name in OTHER_KINDS]
    assert {j.kind for j in graph} == set(jobs.KINDS) - {"pretrain", "scenario"}
    data = course.load_data(here)
    with torch_threads(THREADS):
        torch.rand(100)  # whatever the global RNG did before
        for job in graph:  # in this process, one after the other
            jobs.KINDS[job.kind](here, data, *job.args)
    settings = jobs.JobSettings.of(there, device="cpu", threads=THREADS)
    records = schedule.run_jobs(graph, settings, launchers.LocalLauncher(workers=2), retries=0, poll=0.2)
    assert _states(records) == dict.fromkeys(OTHER_KINDS, "done")
    for name in OTHER_KINDS:
        for file in ("last.pt", "best.pt"):
            if (here.run_dir / name / file).exists():
                mine = load_checkpoint(there.run_dir / name / file)["state_dict"]
                theirs = load_checkpoint(here.run_dir / name / file)["state_dict"]
                assert all(torch.equal(mine[k], theirs[k]) for k in mine), (name, file)


# ----------------------------------------------------------------------------------------------- the scheduler
class _Scripted:
    """A job that trains nothing: it raises (``"raise"``), is killed on its first attempt (``"die-once"``), or
    reports done; every start is counted in ``log``."""

    def __init__(self, job, script: dict, log: Path) -> None:
        self.job, self.script, self.log = job, script, log

    def __call__(self):
        with open(self.log, "a") as handle:
            handle.write(self.job.name + "\n")
        action = self.script.get(self.job.name)
        if action == "raise":
            raise RuntimeError(f"{self.job.name} was made to fail")
        starts = self.log.read_text().split().count(self.job.name)
        if action == "die-once" and starts == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"seconds": 0.5}


SCRIPTED = [
    jobs.Job("a/broken", "none"),
    jobs.Job("a/needs-broken", "none", needs=("a/broken",)),
    jobs.Job("a/needs-that", "none", needs=("a/needs-broken",)),
    jobs.Job("b/dies-once", "none"),
    jobs.Job("b/after", "none", needs=("b/dies-once",)),
    jobs.Job("c/alone", "none"),
]


def test_a_failing_job_blocks_only_its_dependants_and_a_dead_one_is_started_again(tmp_path, capsys):
    settings = jobs.JobSettings("smoke", "synthetic", "cpu", str(tmp_path))
    log, script = tmp_path / "starts.txt", {"a/broken": "raise", "b/dies-once": "die-once"}
    records = schedule.run_jobs(
        SCRIPTED,
        settings,
        launchers.LocalLauncher(workers=2),
        retries=1,
        poll=0.2,
        make_call=lambda s, j: _Scripted(j, script, log),
    )
    by_name = {r.job.name: r for r in records}
    assert _states(records) == {
        "a/broken": "failed",
        "a/needs-broken": "blocked",
        "a/needs-that": "blocked",
        "b/dies-once": "done",
        "b/after": "done",
        "c/alone": "done",
    }
    assert by_name["a/broken"].note == "RuntimeError: a/broken was made to fail"
    assert by_name["a/broken"].attempts == 1  # an error is not retried: it would raise again
    assert by_name["b/dies-once"].attempts == 2  # died, started again, finished
    assert by_name["a/needs-that"].note == "needs a/broken, which failed"
    started = log.read_text().split()
    assert "a/needs-broken" not in started and "a/needs-that" not in started
    out = capsys.readouterr().out
    assert "blocked   a/needs-that  (needs a/broken, which failed)" in out
    assert "died, starting it again (attempt 2 of 2)" in out
    rows = schedule.summary_rows(records)
    assert {r["job"]: r["state"] for r in rows} == _states(records)


class _RecordsGpu:
    """A job that writes the CUDA_VISIBLE_DEVICES it was given to ``folder/<job>``."""

    def __init__(self, job, folder: Path) -> None:
        self.job, self.folder = job, folder

    def __call__(self):
        (self.folder / self.job.slug).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        return {"seconds": 0.0}


def test_each_local_job_sees_only_its_gpu(tmp_path):
    graph = [jobs.Job(f"g/{i}", "none") for i in range(3)]
    settings = jobs.JobSettings("smoke", "synthetic", "cuda", str(tmp_path))
    records = schedule.run_jobs(
        graph, settings, launchers.LocalLauncher(gpus=[3, 5]), poll=0.2, make_call=lambda s, j: _RecordsGpu(j, tmp_path)
    )
    where = {r.job.name: r.where for r in records}
    assert where["g/0"] == "gpu 3" and where["g/1"] == "gpu 5"  # the third takes the first GPU freed
    for r in records:  # each job saw only its GPU
        assert f"gpu {(tmp_path / r.job.slug).read_text()}" == r.where
    cpu = schedule.run_jobs(
        [jobs.Job("g/cpu", "none")],
        settings,
        launchers.LocalLauncher(workers=1),
        make_call=lambda s, j: _RecordsGpu(j, tmp_path),
    )
    assert _states(cpu) == {"g/cpu": "done"} and (tmp_path / "g--cpu").read_text() == ""  # CPU workers: GPUs hidden


# ----------------------------------------------------------------------------------------------- SLURM
FAKE_SBATCH = """
import os, re, subprocess, sys, time
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
script = Path(sys.argv[-1]).read_text()
job = str(101 + len(list(state.glob("*.sh"))))
(state / f"{job}.sh").write_text(script)
(state / f"{job}.state").write_text("PENDING")
if os.fork() == 0:  # the cluster: run once the afterok dependencies completed
    os.setsid()
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # let sbatch's caller read its answer to the end
        os.dup2(quiet, fd)
    found = re.search(r"^#SBATCH --dependency=afterok:(\\S+)", script, re.M)
    needs = found.group(1).split(":") if found else []
    def state_of(i):
        return (state / f"{i}.state").read_text()
    while any(state_of(i) in ("PENDING", "RUNNING") for i in needs):
        time.sleep(0.1)
    if state_of(job) == "CANCELLED" or any(state_of(i) != "COMPLETED" for i in needs):
        (state / f"{job}.state").write_text("CANCELLED")  # --kill-on-invalid-dep=yes
        os._exit(0)
    (state / f"{job}.state").write_text("RUNNING")
    env = dict(os.environ, SLURM_JOB_ID=job, SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0",
               SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="node1")
    code = subprocess.run(["bash", sys.argv[-1]], env=env).returncode
    (state / f"{job}.state").write_text("COMPLETED" if code == 0 else "FAILED")
    os._exit(0)
print(f"Submitted batch job {job}")
"""
FAKE_SRUN = """
import os, subprocess, sys
args, files = sys.argv[1:], {}
while args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0).replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0")
with open(files["--output"], "a") as out, open(files.get("--error", files["--output"]), "a") as err:
    sys.exit(subprocess.run(args, stdout=out, stderr=err).returncode)
"""
FAKE_SACCT = """
import os, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
ids = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"]
print("JobID|State|NodeList")
for i in ids:
    if (state / f"{i}.state").exists():
        print(f"{i}|{(state / f'{i}.state').read_text()}|node1")
"""
FAKE_SCANCEL = """
import os, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
for i in sys.argv[1:]:
    if (state / f"{i}.state").read_text() in ("PENDING", "RUNNING"):
        (state / f"{i}.state").write_text("CANCELLED")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch``/``srun``/``sacct``/``scancel`` on PATH; yields the folder of the submitted scripts and states."""
    import submitit

    binaries, state = tmp_path / "bin", tmp_path / "cluster"
    binaries.mkdir()
    state.mkdir()
    for name, source in {
        "sbatch": FAKE_SBATCH,
        "srun": FAKE_SRUN,
        "sacct": FAKE_SACCT,
        "scancel": FAKE_SCANCEL,
    }.items():
        path = binaries / name
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(source))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{binaries}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    yield state
    submitit.SlurmJob.watcher.clear()


def test_slurm_jobs_are_submitted_with_their_dependencies_and_options(tmp_path, fake_slurm, capsys):
    options = cli._launch_options(
        argparse.Namespace(
            gpus=None,
            workers=None,
            time="1:30:00",
            partition="gpu",
            gpus_per_job=1,
            cpus_per_job=8,
            slurm_arg=["account=lab", "--qos=high"],
            threads_per_job=None,
            retries=2,
        )
    )
    cfg = course.setup("smoke", None, "cpu", run_dir=tmp_path / "run")
    launcher = reproduce.make_launcher("slurm", cfg, **options)
    settings = jobs.JobSettings("smoke", "synthetic", "cuda", str(tmp_path / "run"))
    log, script = tmp_path / "starts.txt", {"a/broken": "raise"}
    records = schedule.run_jobs(
        SCRIPTED, settings, launcher, poll=0.2, make_call=lambda s, j: _Scripted(j, script, log)
    )
    assert _states(records) == {
        "a/broken": "failed",
        "a/needs-broken": "blocked",
        "a/needs-that": "blocked",
        "b/dies-once": "done",
        "b/after": "done",
        "c/alone": "done",
    }
    ids = {r.job.name: r.where.split()[-1] for r in records}
    scripts = {name: (fake_slurm / f"{job_id}.sh").read_text() for name, job_id in ids.items()}
    for name, text in scripts.items():
        for line in (
            "#SBATCH --partition=gpu",
            "#SBATCH --time=90",
            "#SBATCH --gpus-per-node=1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks-per-node=1",
            "#SBATCH --account=lab",
            "#SBATCH --qos=high",
            f"#SBATCH --job-name=rcl-{name.replace('/', '--')}",
            "#SBATCH --signal=USR2@90",  # submitit's warning before the time limit: the job is requeued, resumes
            "export TQDM_MININTERVAL=30",
        ):
            assert line in text.splitlines(), (name, line)
    for name in ("a/broken", "b/dies-once", "c/alone"):  # needs nothing: no dependency
        assert "--dependency" not in scripts[name] and "--kill-on-invalid-dep" not in scripts[name]
    for name, need in (("a/needs-broken", "a/broken"), ("a/needs-that", "a/needs-broken"), ("b/after", "b/dies-once")):
        assert f"#SBATCH --dependency=afterok:{ids[need]}" in scripts[name].splitlines(), name
        assert "#SBATCH --kill-on-invalid-dep=yes" in scripts[name].splitlines(), name
    assert {(fake_slurm / f"{ids[n]}.state").read_text() for n in ("a/needs-broken", "a/needs-that")} == {"CANCELLED"}
    assert "a/needs-broken" not in log.read_text().split()
    out = capsys.readouterr().out
    assert f"submitted a/needs-broken  on slurm {ids['a/needs-broken']}, after {ids['a/broken']}" in out


class _WaitsForRelease:
    """A job that runs until the file ``release`` exists."""

    def __init__(self, release: Path) -> None:
        self.release = release

    def __call__(self):
        import time

        while not self.release.exists():
            time.sleep(0.1)
        return {"seconds": 0.0}


RUNNER = """
import sys
from pathlib import Path
import cloudpickle
import test_jobs
from rcl.reproduce import jobs, launchers, schedule
from test_jobs import _WaitsForRelease
cloudpickle.register_pickle_by_value(test_jobs)  # the job processes need not import the tests
run_dir, release = sys.argv[1], Path(sys.argv[2])
graph = [jobs.Job("s/slow", "none"), jobs.Job("s/after", "none", needs=("s/slow",))]
schedule.run_jobs(graph, jobs.JobSettings("smoke", "synthetic", "cuda", run_dir), launchers.SlurmLauncher(), poll=0.2,
              make_call=lambda s, j: _WaitsForRelease(release))
"""


def test_a_rerun_watches_the_slurm_jobs_a_dead_runner_left_in_the_queue(tmp_path, fake_slurm, monkeypatch, capsys):
    """The runner on a login node dies (killed, logged out) while its jobs are queued and running: the same command
    again watches them instead of submitting copies that would train into the same folders."""
    import subprocess
    import time

    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    run_dir, release = tmp_path / "run", tmp_path / "release"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(run_dir), str(release)], stdout=subprocess.DEVNULL)
    status = run_dir / "jobs" / "s--after" / "status.json"
    deadline = time.time() + 60
    while not ((fake_slurm / "101.state").exists() and (fake_slurm / "101.state").read_text() == "RUNNING"):
        assert time.time() < deadline and runner.poll() is None, "the first runner did not get its job running"
        time.sleep(0.1)
    while not status.exists():
        time.sleep(0.1)
    runner.kill()
    runner.wait()
    release.touch()
    graph = [jobs.Job("s/slow", "none"), jobs.Job("s/after", "none", needs=("s/slow",))]
    settings = jobs.JobSettings("smoke", "synthetic", "cuda", str(run_dir))
    records = schedule.run_jobs(graph, settings, launchers.SlurmLauncher(), poll=0.2)
    assert _states(records) == {"s/slow": "done", "s/after": "done"}
    assert sorted(p.name for p in fake_slurm.glob("*.sh")) == ["101.sh", "102.sh"]  # nothing submitted twice
    out = capsys.readouterr().out
    assert "s/slow  on slurm 101, left by an earlier run: watching it" in out
    assert "s/after  on slurm 102, left by an earlier run: watching it" in out


def test_launcher_options_are_checked(tmp_path, monkeypatch):
    cfg = course.setup("smoke", None, "cpu", run_dir=tmp_path)
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(tmp_path))  # no SLURM here
        with pytest.raises(reproduce.ReproduceError, match="needs SLURM's sbatch, srun, sacct on PATH"):
            reproduce.make_launcher("slurm", cfg)
    with pytest.raises(reproduce.ReproduceError, match="--partition is an option of --launcher slurm"):
        reproduce.make_launcher("local", cfg, partition="gpu")
    with pytest.raises(reproduce.ReproduceError, match="--workers is an option of --launcher local"):
        reproduce.make_launcher("slurm", cfg, workers=2)
    with pytest.raises(reproduce.ReproduceError, match="time must be minutes"):
        reproduce.make_launcher("slurm", cfg, time="soon")
    assert reproduce.make_launcher("local", cfg, gpus=[0, 0, 1]).slots == ["gpu 0", "gpu 0", "gpu 1"]
    assert reproduce.make_launcher("local", cfg).slots == ["worker 1"]  # CPU: one job at a time unless --workers
    with pytest.raises(SystemExit, match="--jobs-only runs the training jobs without the notebooks"):
        reproduce.main(["--profile", "smoke", "--device", "cpu", "--out", str(tmp_path), "--jobs-only"])
    times = (240, "240", "4:00:00", "1-12", "1-00:30:00", "0:30")
    assert [launchers._time_minutes(t) for t in times] == [240, 240, 240, 2160, 1470, 1]  # SLURM's --time formats


def test_cpu_workers_that_would_crowd_the_cores_get_a_fair_share_of_threads(monkeypatch):
    """N CPU workers x torch's default threads > cores: cores // N threads each (2 x 2 threads on 2 cores made the
    smoke course 4.6 times slower); an explicit --threads-per-job or OMP_NUM_THREADS is kept; GPUs are left alone."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with torch_threads(8):
        threads, note = launchers.cpu_threads(launchers.LocalLauncher(workers=4), None)
        assert threads == 2 and "OMP_NUM_THREADS=2" in note  # how to get the same weights from a sequential run
        assert launchers.cpu_threads(launchers.LocalLauncher(workers=4), 3) == (3, None)
        assert launchers.cpu_threads(launchers.LocalLauncher(workers=1), None) == (None, None)
        assert launchers.cpu_threads(launchers.LocalLauncher(gpus=[0, 1]), None) == (None, None)
        monkeypatch.setenv("OMP_NUM_THREADS", "8")
        threads, note = launchers.cpu_threads(launchers.LocalLauncher(workers=4), None)
        assert threads is None and "will fight over the cores" in note
    with torch_threads(2):
        assert launchers.cpu_threads(launchers.LocalLauncher(workers=4), None) == (None, None)  # 4 x 2 <= 8


# ----------------------------------------------------------------------------------------------- rcl.reproduce
class _LockChecker(_Scripted):
    """A scripted job that also records who holds the run folder's lock while it runs."""

    def __call__(self):
        import fcntl

        lock = Path(self.log).parent / "run" / reproduce.LOCK_NAME
        fd = os.open(lock.parent, os.O_RDONLY)  # the runner locks the run folder itself
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = "nobody"
        except BlockingIOError:
            holder = str(json.loads(lock.read_text())["pid"])
        finally:
            os.close(fd)
        (Path(self.log).parent / "holder.txt").write_text(holder)
        return super().__call__()


def test_reproduce_skips_only_the_chapters_of_a_failed_job_and_those_that_read_them(tmp_path, monkeypatch):
    import functools

    from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

    folder = tmp_path / "nb"
    folder.mkdir()
    for name in ("01_a", "02_b", "03_reads_01_02", "04_c"):
        _notebook(folder / f"{name}.ipynb", "x = 1", params=BASE_PARAMS + "\nscenarios = None\noverrides = {}")
    graph = {
        "01": [jobs.Job("01_a/model", "none")],
        "02": [jobs.Job("01_a/model", "none"), jobs.Job("02_b/broken", "none", needs=("01_a/model",))],
        "04": [jobs.Job("04_c/model", "none")],
    }
    asked = {}

    def chapter_jobs(cfg, chapter, params=None):
        asked[chapter] = params
        return graph.get(chapter, [])

    log, script = tmp_path / "starts.txt", {"02_b/broken": "raise"}
    monkeypatch.setattr(jobs, "chapter_jobs", chapter_jobs)
    monkeypatch.setattr(
        schedule,
        "run_graph",
        functools.partial(schedule.run_graph, poll=0.2, make_call=lambda s, j: _LockChecker(j, script, log)),
    )
    calls = _fake_papermill(monkeypatch)
    out = tmp_path / "run"
    extra = reproduce.parse_params(["scenarios=ST,AT", "width=4"])
    with pytest.raises(SystemExit) as failure:
        reproduce.run(
            "smoke", device="cpu", out=out, extra=extra, notebook_dir=folder, launcher="local", launch={"workers": 2}
        )
    message = str(failure.value)
    assert (
        "JOBS FAILED: 1 of 3" in message
        and "02_b/broken: failed, RuntimeError: 02_b/broken was made to fail" in message
    )
    assert "Chapters not run: 02_b.ipynb." in message
    assert sorted(calls) == ["01_a.ipynb", "04_c.ipynb"]  # the chapters that needed no failed job still ran
    assert asked["04"]["scenarios"] == ["ST", "AT"] and asked["04"]["overrides"]["width"] == 4
    assert (tmp_path / "holder.txt").read_text() == str(os.getpid())  # the runner held the lock over its jobs
    summary = (out / "summary.md").read_text()
    assert "## Training jobs" in summary and "| 02_b/broken | failed | 1 |" in summary
    assert "| 02_b.ipynb | not run: job 02_b/broken failed |" in summary
    assert "| 03_reads_01_02.ipynb | not run: 02_b.ipynb did not run |" in summary  # it reads 02's results


class _Timed(_Scripted):
    """A scripted job that takes ``seconds`` and writes when it started and ended to ``<log>.times``."""

    def __init__(self, job, seconds: float, log: Path) -> None:
        super().__init__(job, {}, log)
        self.seconds = seconds

    def __call__(self):
        import time

        start = time.time()
        time.sleep(self.seconds)
        with open(f"{self.log}.times", "a") as handle:
            handle.write(f"{self.job.name} {start} {time.time()}\n")
        return super().__call__()


def test_each_chapter_starts_once_its_jobs_are_done_beside_the_jobs_and_chapters_still_running(tmp_path, monkeypatch):
    """--launcher local: a chapter does not wait for every job, only its own; chapters run side by side within the
    workers' slots, those that read another chapter after it, and each records only the files it wrote."""
    import functools
    import threading
    import time

    from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

    folder = tmp_path / "nb"
    folder.mkdir()
    names = ("00_intro", "01_quick", "02_slow", "03_reads_01_02", "05_alone")
    for name in names:
        _notebook(folder / f"{name}.ipynb", "x = 1", params=BASE_PARAMS + "\noverrides = {}")
    graph = {"01": [jobs.Job("01_quick/model", "none")], "02": [jobs.Job("02_slow/model", "none")]}
    seconds = {"01_quick/model": 0.2, "02_slow/model": 4.0}
    log = tmp_path / "starts.txt"
    monkeypatch.setattr(jobs, "chapter_jobs", lambda cfg, chapter, params=None: graph.get(chapter, []))
    monkeypatch.setattr(
        schedule,
        "run_graph",
        functools.partial(schedule.run_graph, poll=0.1, make_call=lambda s, j: _Timed(j, seconds[j.name], log)),
    )
    chapter_times, lock = {}, threading.Lock()

    def chapter(name, output, parameters):  # each chapter writes into its own folder, slowly
        start = time.time()
        own = Path(parameters["run_dir"]) / name[:-6]
        own.mkdir(parents=True, exist_ok=True)
        (own / "early.txt").write_text(name)
        time.sleep(1.0)
        (own / "late.txt").write_text(name)
        with lock:
            chapter_times[name[:-6]] = (start, time.time())

    _fake_papermill(monkeypatch, effect=chapter)
    out = tmp_path / "run"
    reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder, launcher="local", launch={"workers": 2})

    job_times = {}
    for line in Path(f"{log}.times").read_text().splitlines():
        name, start, end = line.split()
        job_times[name] = (float(start), float(end))
    assert chapter_times["01_quick"][0] < job_times["02_slow/model"][1]  # it did not wait for the slow job
    assert chapter_times["01_quick"][0] >= job_times["01_quick/model"][1]  # but for its own
    assert chapter_times["02_slow"][0] >= job_times["02_slow/model"][1]
    assert chapter_times["03_reads_01_02"][0] >= max(chapter_times["01_quick"][1], chapter_times["02_slow"][1])
    spans = list(chapter_times.values()) + list(job_times.values())
    moments = sorted(t for span in spans for t in span)
    busiest = max(sum(a <= m < b for a, b in spans) for m in moments)
    assert busiest == 2  # side by side, never more than the two workers' slots (jobs and chapters together)
    for name in names:  # what each chapter left, and only that, although others wrote beside it
        outputs = json.loads((out / "notebooks" / f"{name}.ipynb").read_text())["metadata"]["rcl"]["outputs"]
        assert list(outputs) == [f"{name}/early.txt", f"{name}/late.txt"], name
    summary = (out / "summary.md").read_text()
    assert "for the jobs and the chapters, side by side; the chapters' own times add up to" in summary
    # a rerun finds every chapter complete
    calls = _fake_papermill(monkeypatch)
    reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder, launcher="local", launch={"workers": 2})
    assert calls == []


def test_a_failing_chapter_beside_the_jobs_stops_only_the_chapters_that_read_it(tmp_path, monkeypatch):
    from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

    folder = tmp_path / "nb"
    folder.mkdir()
    for name in ("01_broken", "02_fine", "03_reads_01_02", "09_reads_all"):
        _notebook(folder / f"{name}.ipynb", "x = 1", params=BASE_PARAMS + "\noverrides = {}")
    monkeypatch.setattr(jobs, "chapter_jobs", lambda cfg, chapter, params=None: [])

    def chapter(name, output, parameters):
        if name.startswith("01"):
            raise RuntimeError("the kernel died")

    calls = _fake_papermill(monkeypatch, effect=chapter)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as failure:
        reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder, launcher="local", launch={"workers": 2})
    assert "FAILED: 01_broken.ipynb: RuntimeError: the kernel died" in str(failure.value)
    assert sorted(calls) == ["01_broken.ipynb", "02_fine.ipynb"]
    summary = (out / "summary.md").read_text()
    assert "| 01_broken.ipynb | failed |" in summary and "| 02_fine.ipynb | ran |" in summary
    assert "| 03_reads_01_02.ipynb | not run: 01_broken.ipynb did not run |" in summary
    assert "| 09_reads_all.ipynb | not run: 01_broken.ipynb did not run |" in summary
    assert (out / "notebooks" / "01_broken.failed.ipynb").exists()


def test_a_chapter_kernel_runs_with_its_slots_environment_and_an_interrupt_reaches_it(tmp_path):
    """The kernel of a chapter beside the jobs sees its slot's GPU and threads; Ctrl-C, which a kernel in its own
    session does not get from the terminal, is passed on to it."""
    import time

    import nbformat

    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    )
    notebook.cells = [
        nbformat.v4.new_code_cell("out, wait = '', 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, time\n"
            "open(out, 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + os.environ['OMP_NUM_THREADS'])\n"
            "time.sleep(wait)"
        ),
    ]
    nbformat.write(notebook, tmp_path / "01_env.ipynb")
    (tmp_path / "run" / "notebooks").mkdir(parents=True)
    env = {"CUDA_VISIBLE_DEVICES": "3", "OMP_NUM_THREADS": "1"}
    for wait in (0, 60):
        chapter = chapters.ChapterThread(
            tmp_path / "01_env.ipynb",
            {"out": str(tmp_path / f"env{wait}.txt"), "wait": wait},
            tmp_path / "run",
            0,
            "worker 1",
            env,
            force=True,
            debug=False,
        )
        chapter.start()
        if wait:
            while not (tmp_path / f"env{wait}.txt").exists():
                time.sleep(0.1)
            chapter.interrupt()
        chapter.join(timeout=50)
        assert not chapter.is_alive()
        assert (tmp_path / f"env{wait}.txt").read_text() == "3 1"
        assert len(chapter.kernels) == 1
    assert chapter.row is None and "KeyboardInterrupt" in chapter.failure
    assert (tmp_path / "run" / "notebooks" / "01_env.failed.ipynb").exists()


def test_jobs_only_runs_the_jobs_and_no_chapter(tmp_path, monkeypatch):
    """--launcher local --jobs-only (the README's SLURM recipe goes through the same loop): it used to crash on the
    chapters' progress bar, created disabled when there are no chapters to run."""
    import functools

    from test_reproduce import BASE_PARAMS, _fake_papermill, _notebook

    folder = tmp_path / "nb"
    folder.mkdir()
    _notebook(folder / "01_a.ipynb", "x = 1", params=BASE_PARAMS + "\noverrides = {}")
    log = tmp_path / "starts.txt"
    monkeypatch.setattr(jobs, "chapter_jobs", lambda cfg, chapter, params=None: [jobs.Job("01_a/model", "none")])
    monkeypatch.setattr(
        schedule,
        "run_graph",
        functools.partial(schedule.run_graph, poll=0.1, make_call=lambda s, j: _Timed(j, 0.1, log)),
    )
    calls = _fake_papermill(monkeypatch)
    out = tmp_path / "run"
    reproduce.run("smoke", device="cpu", out=out, notebook_dir=folder, launcher="local", jobs_only=True)
    assert calls == []
    assert Path(f"{log}.times").read_text().split()[0] == "01_a/model"
