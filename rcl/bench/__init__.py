"""Measuring rcl: the speed benchmark, and the GPU check that runs it on a borrowed GPU machine.

Run them from the project root::

    python -m rcl.bench [--device cpu|cuda] [--size tiny|small|full] [--repeats N] [--out PATH] [--no-compile]
    python -m rcl.bench --render-readme        # rebuild benchmarks/README.md from the JSON files beside it
    python -m rcl.bench.gpu_check --help       # or tools/gpu_check.sh [--prepare | --dry-run]

``python -m rcl.bench`` measures rcl's fast path against the usual way of writing it, in one process on the same
architecture, batch size and inputs: the SimCLR training step (eager and ``compile=True``) against a torchvision +
DataLoader + fp32 loop, PGD-10 against ``torchattacks``, the augmentation against torchvision's per-image
transforms, and the layer-by-layer minibatch CKA (Nguyen et al. 2021) against a per-layer-pair loop. On a CPU, also
the precision rcl picks there against the plain fp32 loop, with the machine's matmul peak. Plus the PGD-10
adversarial fine-tuning epoch, the CKA time for 10,000 images (extrapolated) and an estimate of the ``quick`` and
``paper`` profiles from the measured per-image costs.

Honest numbers: each side's work is observed, not assumed (a forward hook counts the rows and calls that reach the
model), and a ratio is reported only when both sides did the same work (architecture, batch size, images, attack
steps, output shapes; the CKA matrices must agree numerically). Otherwise the ratio is withheld with its reason and
stored as ``null``. Every timing is the median of ``--repeats`` runs after a warm-up, the two sides taking turns
(ours, baseline, ours, ...) so that a drift of the machine's speed favours neither, with
``torch.cuda.synchronize`` around timed regions on CUDA. Ratios are ``ours / baseline`` in throughput (x faster),
both sides measured in the same process.

``--size small`` (ResNet-18 width 8, a few batches) runs in a minute or two on a CPU (``--size tiny``, width 2, in
seconds: the GPU check's dry run); ``--size full`` is the issue's setting (ResNet-18 width 64, batch 512,
CIFAR-10-sized images).

Modules, one concern each:

- :mod:`rcl.bench.settings`: the report's schema, the shared attack and training settings, the sizes;
- :mod:`rcl.bench.work` and :mod:`rcl.bench.timing`: work records, the ratio-or-withheld rule, timing in turns;
- :mod:`rcl.bench.baselines`: the usual way of writing each measured piece;
- :mod:`rcl.bench.pairs`, :mod:`rcl.bench.absolute`, :mod:`rcl.bench.cpu_precision`, :mod:`rcl.bench.estimate`:
  the measurements and the profile estimate;
- :mod:`rcl.bench.run`: one run, every measurement gathered into the JSON report;
- :mod:`rcl.bench.report`: the headline figures and the printed table; :mod:`rcl.bench.readme`: the one renderer of
  ``benchmarks/README.md``, with the GPU check's section from :mod:`rcl.bench.gpu_records`;
- :mod:`rcl.bench.cli`: the command line; :mod:`rcl.bench.gpu_check`: the GPU check (it uses the bench; the bench
  never imports it).
"""
