"""The GPU check: one prepared command that checks and measures rcl's CUDA path within a wall-time budget.

A GPU machine is lent to this project rarely and briefly, has no network and no package registry, so everything
it needs is prepared beforehand on a machine that has them::

    tools/gpu_check.sh --prepare          # here: wheels into .whl/, the CIFAR-10 archive into .carry/, prints the call
    tools/gpu_check.sh                    # there: the check itself, within the machine's budget (--budget-s)
    tools/gpu_check.sh --dry-run          # anywhere: the same script on the CPU at tiny sizes (the test suite runs it)

``tools/gpu_check.sh`` runs ``python -m rcl.bench.gpu_check`` from the project root. What describes the GPU machine
(the device tool's limits and the default budget, what its image lacks and holds, its Python and platform, where the
CIFAR-10 archive lies, the real run's phase timings and training slice) is data, read from
``benchmarks/gpu-check-machine.json`` (``--machine PATH`` for another machine).

The check runs five phases in order, each only when the budget still holds the least time the phase needs (else
it is recorded as skipped, with the reason):

1. ``install``: the packages the GPU image lacks (the machine file's ``lacks``: papermill, nbformat, nbclient,
   ipykernel, jupyter_client, ipywidgets, torchattacks, and the pure-Python packages they need) from the wheels in
   ``.whl/`` (``pip install --no-index --no-deps --target``); rcl itself is used from the working tree
   (``PYTHONPATH``).
   Then it imports each in a fresh interpreter and records the versions. The dry run installs nothing and only
   records which of them import.
2. ``cuda_tests``: ``pytest -k cuda`` (tests whose name or marker says cuda; they skip without a GPU).
3. ``bench``: ``python -m rcl.bench --device cuda --size full`` (eager and ``compile=True``), its JSON copied to
   ``benchmarks/<device>-full.json``.
4. ``quick_slice``: a short slice of the ``quick`` profile on real CIFAR-10 (the JPEG copy carried in
   ``.carry/``, read through ``imagefolder:``): supervised ResNet-18 (bf16 + channels_last, clean test accuracy
   after every epoch, PGD at the profile's evaluation setting), SimCLR pre-training, then a linear head (clean,
   PGD-CE and the contrastive PGD of threat model I). Seconds per epoch and accuracies are recorded.
5. ``precision``: the supervised run again in fp32 (``TrainConfig.precision="fp32"``), same seed and epochs;
   bf16 + channels_last and fp32 must end within ``--band`` (absolute test accuracy) of each other.

Everything measured is written as JSON under ``--out`` (default ``$OUT`` when set, else ``runs/gpu-check``):
``gpu-check.json`` after every phase and every epoch (a run stopped from outside keeps what it measured), and
copies under ``<out>/benchmarks/`` of what it wrote to ``benchmarks/`` (``<device>-gpu-check.json``, the bench
JSON, the regenerated ``benchmarks/README.md``). Each training loop checks the budget before every epoch, and
the subprocesses get a timeout from it, so the script ends before ``--budget-s`` (plus a few seconds to write).

Phase records: ``status`` is ``done`` (ran; figures recorded), ``failed`` (ran, and what it checks did not
hold: a test failed, the accuracy band was missed, a subprocess exited non-zero), ``stopped`` (started, cut short
by the budget; partial figures kept), ``skipped`` (not started; ``reason``) or ``error`` (the script itself
raised; ``error`` holds the traceback's end).

Modules: :mod:`~rcl.bench.gpu_check.cli` (the command line), :mod:`~rcl.bench.gpu_check.check` (the phases in
order), :mod:`~rcl.bench.gpu_check.context` (what the phases share, the report), one module per phase
(:mod:`~rcl.bench.gpu_check.install`, :mod:`~rcl.bench.gpu_check.cuda_tests`, :mod:`~rcl.bench.gpu_check.bench_phase`,
:mod:`~rcl.bench.gpu_check.quick_slice`, :mod:`~rcl.bench.gpu_check.precision`) with
:mod:`~rcl.bench.gpu_check.data` and :mod:`~rcl.bench.gpu_check.training` beneath the last two,
:mod:`~rcl.bench.gpu_check.budget` (the budget and the phase plan), :mod:`~rcl.bench.gpu_check.machine` (the machine
file), :mod:`~rcl.bench.gpu_check.processes` (subprocesses and the log), :mod:`~rcl.bench.gpu_check.source` (the
tree's root and commit) and :mod:`~rcl.bench.gpu_check.prepare` (``--prepare``). The record's README section and
summary are :mod:`rcl.bench.gpu_records`.
"""
